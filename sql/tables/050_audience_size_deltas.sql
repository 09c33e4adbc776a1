-- Audience sizes, kept as deltas (passthrough._audience_size adds them up).

-- Exact audience sizes without counting members: each batch appends the net change per audience and
-- folds the rows it can lock into one, so the table stays a few rows per audience.
CREATE TABLE passthrough.audience_size_deltas (
  audience_key integer NOT NULL,
  delta        bigint  NOT NULL
);
CREATE INDEX audience_size_deltas_audience_key ON passthrough.audience_size_deltas (audience_key);
COMMENT ON TABLE passthrough.audience_size_deltas IS
  'Net changes in qualified members per audience; the size is their sum. Written in the same transaction as the membership change, so sizes are exact under concurrent writers.';
