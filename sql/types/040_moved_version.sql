-- A membership row version a writer of membership state wrote, as passthrough._record_moves reads it
-- (sql/functions/093_recorded_moves.sql): the writer's upsert and the sweeper's flip return these.

CREATE TYPE passthrough.moved_version AS (
  identifier_type_id smallint,
  identifier         text COLLATE "C",
  audience_key       integer,
  qualified          boolean,
  previous_event_ts  timestamptz,  -- the ts of the qualify this version replaced, NULL when it replaced none
  event_ts           timestamptz,  -- from when this version holds
  feed_pos           xid8,
  feed_level         smallint,
  ttl                interval      -- the audience's ttl, NULL without one
);
COMMENT ON TYPE passthrough.moved_version IS
  'Private: a membership row version a writer wrote, with its audience''s ttl (passthrough._record_moves).';
