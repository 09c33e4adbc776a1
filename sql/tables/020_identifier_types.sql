-- Identifier types: the names a client may give its identifiers (fs_user_id, vuid, ...). A passthrough
-- event is keyed by exactly one high-confidence identifier; low-confidence ones (vuid: a browser's id,
-- not a person's) may come along, as the browser and mobile SDKs send them, and key nothing.

CREATE TABLE passthrough.identifier_types (
  id              smallint    GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name            text        COLLATE "C" NOT NULL UNIQUE
                              CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
  high_confidence boolean     NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE passthrough.identifier_types IS
  'Identifier types. A passthrough event is keyed by its one high-confidence identifier; low-confidence ones may come with it and key nothing, and reads by them find no memberships.';

INSERT INTO passthrough.identifier_types (name, high_confidence) VALUES
  ('fs_user_id', true), ('vuid', false), ('customer_id', true), ('email', true);
