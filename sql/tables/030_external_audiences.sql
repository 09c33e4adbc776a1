-- External audience ids, the keys membership uses.

-- Small integer surrogates for the audience ids that events carry, so the hot keys stay narrow.
-- A row appears the first time an event, a definition or a bulk load's registration
-- (passthrough.register_staged_audiences) names the id; it is never deleted.
CREATE TABLE passthrough.external_audiences (
  id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  external_id text    COLLATE "C" NOT NULL UNIQUE
                      CHECK (external_id <> '' AND length(external_id) <= 255),
  first_seen  timestamptz NOT NULL DEFAULT now(),
  -- kept here because the writer reads this row for every event anyway (sql/functions/150_writer.sql)
  snapshot_at timestamptz,
  snapshot_id bigint
);
COMMENT ON TABLE passthrough.external_audiences IS
  'Every external audience id seen in an event, a definition or a bulk load, with its integer key.';
COMMENT ON COLUMN passthrough.external_audiences.snapshot_at IS
  'T of the audience''s newest snapshot (sql/functions/200_snapshot_import.sql), NULL when it has none: an event at or before T is decided by it.';
COMMENT ON COLUMN passthrough.external_audiences.snapshot_id IS
  'That snapshot (passthrough.snapshots.id); among snapshots of one T, the last imported, whose list is the one that counts.';
