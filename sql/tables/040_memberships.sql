-- Membership state: one row per (identifier type, identifier, external audience), decided by event time.

-- Eight columns, ordered to leave little alignment padding: a ninth would widen the null bitmap and take the
-- tuple header from 24 to 32 bytes. previous_event_ts is NULL unless the previous version was qualified
-- (a new row stores nothing for it).
CREATE TABLE passthrough.memberships (
  identifier_type_id smallint    NOT NULL,
  identifier         text        COLLATE "C" NOT NULL,
  audience_key       integer     NOT NULL,
  qualified          boolean     NOT NULL,
  feed_level         smallint    NOT NULL DEFAULT 0,
  event_ts           timestamptz NOT NULL,
  previous_event_ts  timestamptz,
  feed_pos           xid8        NOT NULL,
  PRIMARY KEY (identifier_type_id, identifier, audience_key)
) WITH (fillfactor = 90);
COMMENT ON TABLE passthrough.memberships IS
  'Current state of each (identifier, audience) pair: the outcome of the event with the greatest ts (disqualify wins a tie). No foreign keys: they would cost a check per row on the hot path.';
COMMENT ON COLUMN passthrough.memberships.event_ts IS 'ts of the event that decided the state.';
COMMENT ON COLUMN passthrough.memberships.feed_pos IS
  'With feed_level, where this row version stands in the change feed''s order (sql/functions/070_feed_position.sql): its writing transaction''s id, or the position of the version it replaced when that one is later.';
COMMENT ON COLUMN passthrough.memberships.feed_level IS
  'Orders row versions that share a feed_pos: one more than the replaced version''s when another, older transaction took over its feed_pos, else 0.';
COMMENT ON COLUMN passthrough.memberships.previous_event_ts IS
  'event_ts of the version before the last update when that version was qualified, else NULL (a new row too). Lets one upsert report transitions (RETURNING cannot see the old row before PostgreSQL 18) and tells the writer when a membership it renews had expired (sql/functions/100_expiry.sql).';
