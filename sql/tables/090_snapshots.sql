-- Imported snapshots and the identifiers each lists (sql/functions/200_snapshot_import.sql says what a
-- snapshot means).

CREATE TABLE passthrough.snapshots (
  id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  audience_key integer     NOT NULL,
  snapshot_at  timestamptz NOT NULL,
  listed       bigint      NOT NULL,
  received_at  timestamptz NOT NULL DEFAULT now(),
  source       text        NOT NULL,
  batch_id     bigint
);
CREATE INDEX snapshots_audience_key ON passthrough.snapshots (audience_key, snapshot_at, id);
COMMENT ON TABLE passthrough.snapshots IS
  'Every imported snapshot: an input at snapshot_at for every pair of its audience (listed: qualified, else disqualified). Pruned with the event log (sql/functions/240_retention.sql).';
COMMENT ON COLUMN passthrough.snapshots.listed IS 'Distinct identifiers the snapshot listed.';
COMMENT ON COLUMN passthrough.snapshots.batch_id IS 'The batch that logged its listed rows as events (NULL when it wrote none).';

CREATE TABLE passthrough.snapshot_members (
  snapshot_id        bigint   NOT NULL,
  identifier_type_id smallint NOT NULL,
  identifier         text     COLLATE "C" NOT NULL,
  PRIMARY KEY (identifier_type_id, identifier, snapshot_id)
);
-- rows are appended snapshot by snapshot: a BRIN finds one snapshot's rows for whole-audience reads
CREATE INDEX snapshot_members_snapshot_id_brin ON passthrough.snapshot_members USING brin (snapshot_id);
COMMENT ON TABLE passthrough.snapshot_members IS
  'The identifiers each snapshot lists. When an earlier snapshot of the same audience has the same T, only the identifiers both list (disqualify wins the tie), so the last snapshot of a T holds the verdict of all.';
