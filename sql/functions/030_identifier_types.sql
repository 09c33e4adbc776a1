-- Identifier types: add, remove and list the names a client may give its identifiers.

-- The SDKs rewrite fs-user-id and FS_USER_ID to fs_user_id; every path normalises the same way.
CREATE FUNCTION passthrough._normalize_identifier_type(p_name text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  -- byte-wise ASCII lower case ("C"): a name is ASCII (add_identifier_type's rule), so no other letter can match
  -- one, and the database's collation would convert every character through the C library, about 2% of a bulk load
  SELECT lower(replace(p_name, '-', '_') COLLATE "C");
$$;
COMMENT ON FUNCTION passthrough._normalize_identifier_type(text) IS
  'Private: the canonical spelling of an identifier type name (lower case, - becomes _).';

-- Tells listeners (the GraphQL facade builds its arguments from these types) that the set changed.
CREATE FUNCTION passthrough._notify_identifier_types_changed() RETURNS void
LANGUAGE sql
AS $$
  SELECT pg_notify('passthrough_identifier_types', '');
$$;
COMMENT ON FUNCTION passthrough._notify_identifier_types_changed() IS
  'Private: NOTIFY passthrough_identifier_types after a change to the identifier types.';

CREATE FUNCTION passthrough.add_identifier_type(p_name text, p_high_confidence boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_name text := passthrough._normalize_identifier_type(p_name);
BEGIN
  IF v_name IS NULL OR v_name !~ '^[a-z][a-z0-9_]{0,62}$' THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('invalid identifier type name %L', p_name),
      DETAIL = 'An identifier type name is a letter followed by up to 62 letters, digits or underscores.',
      HINT = 'Names become GraphQL arguments, e.g. customer(fs_user_id: ...).';
  END IF;
  IF p_high_confidence IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = 'high_confidence must be true or false',
      HINT = 'Only high-confidence identifier types are accepted for passthrough events.';
  END IF;
  INSERT INTO passthrough.identifier_types AS t (name, high_confidence)
  VALUES (v_name, p_high_confidence)
  ON CONFLICT (name) DO UPDATE SET high_confidence = EXCLUDED.high_confidence
    WHERE t.high_confidence IS DISTINCT FROM EXCLUDED.high_confidence;
  PERFORM passthrough._notify_identifier_types_changed();
END;
$$;
COMMENT ON FUNCTION passthrough.add_identifier_type(text, boolean) IS
  'Adds an identifier type, or changes its confidence flag if it exists. Names are normalised (lower case, - becomes _).';

CREATE FUNCTION passthrough.remove_identifier_type(p_name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_id smallint;
BEGIN
  SELECT id INTO v_id FROM passthrough.identifier_types
  WHERE name = passthrough._normalize_identifier_type(p_name)
  FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'PT008',
      MESSAGE = format('identifier type %L does not exist', p_name),
      HINT = 'SELECT * FROM passthrough.list_identifier_types() lists them.';
  END IF;
  IF EXISTS (SELECT 1 FROM passthrough.memberships WHERE identifier_type_id = v_id) THEN
    RAISE EXCEPTION USING ERRCODE = 'PT009',
      MESSAGE = format('identifier type %L is in use', p_name),
      DETAIL = 'Membership state exists for identifiers of this type.',
      HINT = 'To stop accepting it without losing data, mark it low-confidence: SELECT passthrough.add_identifier_type(name, false).';
  END IF;
  DELETE FROM passthrough.identifier_types WHERE id = v_id;
  PERFORM passthrough._notify_identifier_types_changed();
END;
$$;
COMMENT ON FUNCTION passthrough.remove_identifier_type(text) IS
  'Removes an identifier type that no membership uses (SQLSTATE PT009 otherwise).';

CREATE FUNCTION passthrough.list_identifier_types()
RETURNS TABLE (name text, high_confidence boolean, created_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT t.name, t.high_confidence, t.created_at FROM passthrough.identifier_types t ORDER BY t.name;
$$;
COMMENT ON FUNCTION passthrough.list_identifier_types() IS
  'Every identifier type, with its confidence flag, by name.';
