-- API keys for the HTTP API. A key is a high-entropy random secret shown once when it is created;
-- only its SHA-256 is stored, so the table (or a dump of it) cannot be used to call the API.
--
-- Key format: 'pt_public_' or 'pt_private_' followed by 64 hex digits, the text of two random
-- UUIDs. gen_random_uuid() (core since PostgreSQL 13) draws on pg_strong_random(), the server's
-- cryptographic random source, so a key holds 244 random bits; no extension (pgcrypto) is needed.
--
-- Authentication is a lookup by hash (passthrough.authenticate_api_key): the HTTP layer hashes the
-- presented key and sends only the hash. Looking up the SHA-256 of a 244-bit secret is not
-- timing-sensitive: what an index probe could leak is how close a guessed hash is to a stored one,
-- and that says nothing about a key that hashes to it.

CREATE FUNCTION passthrough.create_api_key(p_name text, p_scope text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_key text;
BEGIN
  IF p_name IS NULL OR p_name !~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$' THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('invalid API key name %s', coalesce(quote_literal(left(p_name, 100)), 'NULL')),
      DETAIL = 'field: name',
      HINT = 'A key name is 1 to 63 characters from A-Z, a-z, 0-9, _, . and -, starting with a letter or digit.';
  END IF;
  IF p_scope IS NULL OR p_scope NOT IN ('public', 'private') THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('invalid API key scope %s', coalesce(quote_literal(left(p_scope, 100)), 'NULL')),
      DETAIL = 'field: scope',
      HINT = 'public keys send events and read membership; private keys may also manage segments.';
  END IF;

  v_key := format('pt_%s_%s%s', p_scope,
                  replace(gen_random_uuid()::text, '-', ''), replace(gen_random_uuid()::text, '-', ''));
  INSERT INTO passthrough.api_keys (name, scope, key_hash)
  VALUES (p_name, p_scope, sha256(convert_to(v_key, 'UTF8')))
  ON CONFLICT (name) WHERE revoked_at IS NULL DO NOTHING;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'PT011',
      MESSAGE = format('an API key named %L already exists', p_name),
      DETAIL = 'field: name',
      HINT = 'Choose another name, or revoke the existing key first: passthrough keys revoke NAME.';
  END IF;
  RETURN v_key;
END;
$$;
COMMENT ON FUNCTION passthrough.create_api_key(text, text) IS
  'Creates an API key with scope public or private and returns it; this is the only time the key is shown (only its hash is kept). PT011 if an active key has that name, PT010 for an invalid name or scope.';

CREATE FUNCTION passthrough.list_api_keys()
RETURNS TABLE (name text, scope text, created_at timestamptz, revoked_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT k.name::text, k.scope, k.created_at, k.revoked_at
  FROM passthrough.api_keys k
  ORDER BY k.revoked_at IS NOT NULL, k.name, k.created_at;
$$;
COMMENT ON FUNCTION passthrough.list_api_keys() IS
  'Every API key (active first, then revoked), without the keys or their hashes.';

CREATE FUNCTION passthrough.revoke_api_key(p_name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  UPDATE passthrough.api_keys SET revoked_at = now()
  WHERE name = p_name AND revoked_at IS NULL;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'PT012',
      MESSAGE = format('no active API key named %s', coalesce(quote_literal(left(p_name, 100)), 'NULL')),
      HINT = 'passthrough keys list (or SELECT * FROM passthrough.list_api_keys()) lists them.';
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough.revoke_api_key(text) IS
  'Revokes the active API key with that name; requests with it are refused from the next one on. PT012 if no active key has that name.';

CREATE FUNCTION passthrough.authenticate_api_key(p_key_hash bytea) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT k.scope FROM passthrough.api_keys k WHERE k.key_hash = p_key_hash AND k.revoked_at IS NULL;
$$;
COMMENT ON FUNCTION passthrough.authenticate_api_key(bytea) IS
  'The scope (public or private) of the active API key whose sha256 is p_key_hash, or NULL for an unknown or revoked key. Callers send the hash, never the key.';

-- The check of every API request, raised as the API answers it. passthrough serve folds it into a hot
-- request's one statement, so a key revoked a moment ago is refused by that very statement.
CREATE FUNCTION passthrough._require_api_key(p_key_hash bytea, p_required text) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_scope text := (SELECT k.scope FROM passthrough.api_keys k WHERE k.key_hash = p_key_hash AND k.revoked_at IS NULL);
BEGIN
  IF v_scope IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'PT037', MESSAGE = 'the API key is unknown or revoked';
  END IF;
  IF p_required = 'private' AND v_scope <> 'private' THEN
    RAISE EXCEPTION USING ERRCODE = 'PT038',
      MESSAGE = format('this endpoint needs a %s API key; the key sent is %s', p_required, v_scope);
  END IF;
  RETURN v_scope;
END;
$$;
COMMENT ON FUNCTION passthrough._require_api_key(bytea, text) IS
  'Private: the scope of the active API key whose sha256 is p_key_hash when it allows p_required (public or private): PT037 for an unknown or revoked key, PT038 for a public key where a private one is required.';
