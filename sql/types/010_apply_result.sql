-- What the one writer returns for a batch (sql/functions/150_writer.sql).

CREATE TYPE passthrough.apply_result AS (
  batch_id bigint,   -- the batch row written (NULL when nothing was stored)
  accepted integer,  -- passthrough events stored
  ignored  integer,  -- events of another type, acknowledged and not stored (when asked to skip them)
  changed  integer   -- (identifier, audience) pairs whose qualified state changed
);
COMMENT ON TYPE passthrough.apply_result IS 'What applying a batch of events did.';
