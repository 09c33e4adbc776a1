-- The rows a bulk load refused, kept when asked for (sql/functions/170_bulk_load.sql).

CREATE SEQUENCE passthrough.load_ids;
COMMENT ON SEQUENCE passthrough.load_ids IS 'Ids of passthrough.load_staged calls.';

CREATE TABLE passthrough.load_rejects (
  load_id         bigint      NOT NULL,
  row_no          bigint,
  problems        text[]      NOT NULL,
  type            text,
  action          text,
  identifier_type text,
  identifier      text,
  audience_id     text,
  ts              numeric,
  idempotence_id  text,
  source          text        NOT NULL,
  rejected_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX load_rejects_load_id ON passthrough.load_rejects (load_id);
COMMENT ON TABLE passthrough.load_rejects IS
  'Rows a bulk load refused when called with p_rejects => true, with the rules each broke. Read them with passthrough.get_load_rejects(load_id); delete them with passthrough.purge_load_rejects().';
