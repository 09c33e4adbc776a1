-- The arguments reads share: an identifier to ask about, a defined audience name, a subset of audiences.

CREATE FUNCTION passthrough._identifier_type_id_for_read(p_identifier_type text, p_identifier text)
RETURNS smallint
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_id   smallint;
BEGIN
  SELECT id INTO v_id FROM passthrough.identifier_types
  WHERE name = passthrough._normalize_identifier_type(p_identifier_type);
  IF v_id IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'PT003',
      MESSAGE = format('invalid identifier: %s is not an identifier type',
                       coalesce(quote_literal(left(p_identifier_type, 64)), 'NULL')),
      DETAIL = 'field: identifier_type',
      HINT = 'SELECT * FROM passthrough.list_identifier_types() lists them.';
  END IF;
  IF p_identifier IS NULL OR p_identifier = '' OR length(p_identifier) > 512 THEN
    RAISE EXCEPTION USING ERRCODE = 'PT003',
      MESSAGE = 'invalid identifier: the identifier must be a non-empty string of at most 512 characters',
      DETAIL = format('field: %s', passthrough._normalize_identifier_type(p_identifier_type));
  END IF;
  RETURN v_id;
END;
$$;
COMMENT ON FUNCTION passthrough._identifier_type_id_for_read(text, text) IS
  'Private: the id of an identifier type, or PT003 naming what is wrong. A low-confidence type (vuid) is valid to ask by and keys no membership, so its answers are empty.';

-- The audience key behind a defined audience name, or PT006.
CREATE FUNCTION passthrough._audience_key_for_read(p_name text) RETURNS integer
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_key integer;
BEGIN
  SELECT a.audience_key INTO v_key FROM passthrough.audiences a WHERE a.name = p_name;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'PT006',
      MESSAGE = format('audience %s does not exist', coalesce(quote_literal(left(p_name, 300)), 'NULL')),
      DETAIL = 'field: audience';
  END IF;
  RETURN v_key;
END;
$$;
COMMENT ON FUNCTION passthrough._audience_key_for_read(text) IS
  'Private: the audience key of a defined audience, or PT006 naming it.';

CREATE FUNCTION passthrough._check_subset(p_subset text[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  IF cardinality(p_subset) > 1000 THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('subset may name at most 1000 audiences, got %s', cardinality(p_subset)),
      DETAIL = 'field: subset';
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._check_subset(text[]) IS
  'Private: PT010 when a membership read names more than 1000 audiences.';
