-- Membership state: one row per (identifier type, identifier, external audience), decided by event time.

-- Small integer surrogates for the audience ids that events carry, so the hot keys stay narrow.
-- A row appears the first time an event, a definition or a bulk load's registration
-- (passthrough.register_staged_audiences) names the id; it is never deleted.
CREATE TABLE passthrough.external_audiences (
  id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  external_id text    COLLATE "C" NOT NULL UNIQUE
                      CHECK (external_id <> '' AND length(external_id) <= 255),
  first_seen  timestamptz NOT NULL DEFAULT now(),
  -- kept here because the writer reads this row for every event anyway (sql/070_apply_events.sql)
  snapshot_at timestamptz,
  snapshot_id bigint
);
COMMENT ON TABLE passthrough.external_audiences IS
  'Every external audience id seen in an event, a definition or a bulk load, with its integer key.';
COMMENT ON COLUMN passthrough.external_audiences.snapshot_at IS
  'T of the audience''s newest snapshot (sql/074_snapshots.sql), NULL when it has none: an event at or before T is decided by it.';
COMMENT ON COLUMN passthrough.external_audiences.snapshot_id IS
  'That snapshot (passthrough.snapshots.id); among snapshots of one T, the last imported, whose list is the one that counts.';

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
  'With feed_level, where this row version stands in the change feed''s order (sql/076_change_feed.sql): its writing transaction''s id, or the position of the version it replaced when that one is later.';
COMMENT ON COLUMN passthrough.memberships.feed_level IS
  'Orders row versions that share a feed_pos: one more than the replaced version''s when another, older transaction took over its feed_pos, else 0.';
COMMENT ON COLUMN passthrough.memberships.previous_event_ts IS
  'event_ts of the version before the last update when that version was qualified, else NULL (a new row too). Lets one upsert report transitions (RETURNING cannot see the old row before PostgreSQL 18) and tells the writer when a membership it renews had expired (sql/077_expiry.sql).';

-- Exact audience sizes without counting members: each batch appends the net change per audience and
-- folds the rows it can lock into one, so the table stays a few rows per audience.
CREATE TABLE passthrough.audience_size_deltas (
  audience_key integer NOT NULL,
  delta        bigint  NOT NULL
);
CREATE INDEX audience_size_deltas_audience_key ON passthrough.audience_size_deltas (audience_key);
COMMENT ON TABLE passthrough.audience_size_deltas IS
  'Net changes in qualified members per audience; the size is their sum. Written in the same transaction as the membership change, so sizes are exact under concurrent writers.';

-- plpgsql, so that it may name the expiry queue (sql/077_expiry.sql), created later.
CREATE FUNCTION passthrough._audience_size(p_audience_key integer) RETURNS bigint
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  RETURN (SELECT coalesce(sum(delta), 0)::bigint
          FROM passthrough.audience_size_deltas WHERE audience_key = p_audience_key)
         - passthrough._expired_unswept(p_audience_key);
END;
$$;
COMMENT ON FUNCTION passthrough._audience_size(integer) IS
  'Private: the exact number of currently qualified members of an audience: the sum of its deltas, less the memberships that expired (TTL) and that the sweeper has not recorded yet.';

-- Exact conversion of decimal seconds to a timestamp, to the microsecond (float8 would round).
CREATE FUNCTION passthrough._ts_from_seconds(p_seconds numeric) RETURNS timestamptz
-- STABLE because timestamptz + interval is: a function is only inlined into the calling query when its
-- body is no more volatile than its declaration (inlined: ~0.5 us a row; called: ~3 us).
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT timestamptz '1970-01-01 00:00:00+00'
         + round(p_seconds * 1000000)::bigint * interval '1 microsecond';
$$;
COMMENT ON FUNCTION passthrough._ts_from_seconds(numeric) IS
  'Private: seconds since the Unix epoch (decimal) to timestamptz, rounded to the microsecond.';
