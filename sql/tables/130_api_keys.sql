-- API keys, stored as hashes (sql/functions/270_api_keys.sql says how they are made and checked).

CREATE TABLE passthrough.api_keys (
  id         integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name       text        COLLATE "C" NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
  scope      text        NOT NULL CHECK (scope IN ('public', 'private')),
  key_hash   bytea       NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
  created_at timestamptz NOT NULL DEFAULT now(),
  revoked_at timestamptz,
  CHECK (revoked_at >= created_at)
);
-- A name identifies one active key; a revoked key's name may be used again.
CREATE UNIQUE INDEX api_keys_active_name ON passthrough.api_keys (name) WHERE revoked_at IS NULL;
COMMENT ON TABLE passthrough.api_keys IS
  'HTTP API keys, stored as SHA-256 hashes. public keys may send events and read membership; private keys may also manage segments. Manage them with passthrough.create_api_key(), list_api_keys() and revoke_api_key(), or the command: passthrough keys.';
COMMENT ON COLUMN passthrough.api_keys.key_hash IS 'sha256 of the key''s UTF-8 text; the key itself is never stored.';
COMMENT ON COLUMN passthrough.api_keys.revoked_at IS 'When the key was revoked; it is refused from then on.';
