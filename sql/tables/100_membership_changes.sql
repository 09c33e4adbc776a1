-- The change feed's rows (sql/functions/070_feed_position.sql says how they are ordered).

CREATE TABLE passthrough.membership_changes (
  pos                xid8        NOT NULL,
  batch_id           bigint      NOT NULL,
  event_ts           timestamptz NOT NULL,
  ord                integer     NOT NULL,
  audience_key       integer     NOT NULL,
  identifier_type_id smallint    NOT NULL,
  level              smallint    NOT NULL,
  qualified          boolean     NOT NULL,
  expired            boolean     NOT NULL DEFAULT false,
  identifier         text        COLLATE "C" NOT NULL,
  -- positions mostly grow, so new keys land near the right edge of the index
  PRIMARY KEY (pos, level, batch_id, ord)
);
COMMENT ON TABLE passthrough.membership_changes IS
  'Every state transition of a pair, appended in the statement that made it (the one writer, or the expiry sweeper): qualified true = entered, false = exited, expired true = the membership''s ttl ran out. Read it through passthrough.changes().';
COMMENT ON COLUMN passthrough.membership_changes.pos IS
  'The feed position of the membership row version that made the change (passthrough.memberships.feed_pos): its writing transaction''s id, or a later one whose version it replaced. With level, batch_id and ord, the feed''s cursor.';
COMMENT ON COLUMN passthrough.membership_changes.level IS
  'passthrough.memberships.feed_level of that row version: orders changes that share a pos.';
COMMENT ON COLUMN passthrough.membership_changes.event_ts IS
  'ts of the event that made the change; for an expiry, when it expired (the qualify event''s ts + the ttl).';
