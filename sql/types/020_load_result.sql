-- What a bulk load returns (sql/functions/170_bulk_load.sql).

CREATE TYPE passthrough.load_result AS (
  load_id  bigint,   -- identifies this call; invalid rows kept in passthrough.load_rejects carry it
  batch_id bigint,   -- the batch row written (NULL when nothing was stored)
  accepted bigint,   -- rows stored as events
  ignored  bigint,   -- rows of another type, acknowledged and not stored (when asked to skip them)
  rejected bigint,   -- invalid rows kept in passthrough.load_rejects (only when asked for)
  changed  bigint    -- (identifier, audience) pairs whose qualified state changed
);
COMMENT ON TYPE passthrough.load_result IS 'What loading the staged rows did.';
