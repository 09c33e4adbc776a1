-- What a snapshot import returns (sql/functions/200_snapshot_import.sql).

CREATE TYPE passthrough.snapshot_result AS (
  snapshot_at   timestamptz, -- T
  listed        bigint,      -- distinct identifiers in the snapshot
  to_qualify    bigint,      -- listed, not members at T: they become members
  to_disqualify bigint,      -- members at T, not listed: they stop being members
  unchanged     bigint,      -- listed and members at T
  kept_newer    bigint,      -- the snapshot disagrees with an input it does not override (newer, or a snapshot of the same T), which stands
  members_before bigint,     -- members at T before the import
  applied       boolean,     -- false for a dry run
  batch_id      bigint,      -- the batch that holds the import's events (NULL when nothing was applied)
  changed       bigint,      -- pairs whose qualified state changed
  refused_by    text[],      -- the guards that refuse this import (empty_snapshot, snapshot_disqualifies_too_many): reported by a dry run, raised by an import; empty when forced
  refusal_reasons text[]     -- why, one per guard in refused_by (the message the import raises, without its 'snapshot of ... refused: ')
);
COMMENT ON TYPE passthrough.snapshot_result IS
  'What importing (or dry-running) a snapshot did or would do, counted as of T: the members at T by the inputs known before the import, against the list; and, for a dry run, the guards that would refuse it.';
