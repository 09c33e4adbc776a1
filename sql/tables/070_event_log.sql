-- The event log: every accepted passthrough event, append-only, grouped in batches.
-- Point-in-time answers, history and the change feed are built on it, so it keeps event time,
-- receive time (the batch's), source and batch. One btree serves per-customer reads.

CREATE TABLE passthrough.batches (
  id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  received_at timestamptz NOT NULL DEFAULT now(),
  source      text        NOT NULL,
  event_count integer     NOT NULL
);
COMMENT ON TABLE passthrough.batches IS
  'One row per applied batch: when it was received (transaction time) and from where.';
COMMENT ON COLUMN passthrough.batches.source IS
  'Who sent it: sql (a direct call), http, load, ... as the caller names it.';

CREATE TABLE passthrough.events (
  batch_id           bigint      NOT NULL,
  event_ts           timestamptz NOT NULL,
  identifier_type_id smallint    NOT NULL,
  audience_key       integer     NOT NULL,
  qualified          boolean     NOT NULL,
  identifier         text        COLLATE "C" NOT NULL,
  idempotence_id     text
);
COMMENT ON TABLE passthrough.events IS
  'Every accepted passthrough event, append-only. Duplicates are kept: the state does not depend on them.';
COMMENT ON COLUMN passthrough.events.event_ts IS 'The event''s ts (server time when it had none).';
COMMENT ON COLUMN passthrough.events.idempotence_id IS 'data.idempotence_id, as the Optimizely SDKs send it.';

-- Per-customer questions read the customer's events, not the whole log. This btree is the log's one index,
-- and it is paid for on every insert (docs/benchmarks.md measures it). No reader looks events up by batch, so
-- no index on batch_id: the BRIN once there cost about 1% of the bulk path.
CREATE INDEX events_identifier ON passthrough.events (identifier_type_id, identifier);
