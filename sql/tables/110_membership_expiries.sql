-- The expiry sweeper's work list (sql/functions/100_expiry.sql).

-- The sweeper's work list: one row per qualify event that decided a membership of an audience with a ttl.
-- A row is stale once a newer event decides the pair; the sweeper drops stale rows as it meets them.
CREATE TABLE passthrough.membership_expiries (
  audience_key       integer     NOT NULL,
  event_ts           timestamptz NOT NULL,
  identifier_type_id smallint    NOT NULL,
  identifier         text        COLLATE "C" NOT NULL,
  PRIMARY KEY (audience_key, event_ts, identifier_type_id, identifier)
);
COMMENT ON TABLE passthrough.membership_expiries IS
  'Work list of the expiry sweeper: the qualify events (by pair and ts) of audiences with a ttl whose expiry is not recorded yet. Written by the one writer and by set_audience_ttl.';
