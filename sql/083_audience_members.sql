-- Who is in an audience, now or at a time T: the export a DBA, an ETL job or an application pages
-- through (GET /v3/segments/{id}/members and passthrough export call it). Keyset-paged by (identifier
-- type, identifier), the order of the memberships' primary key; each row carries its cursor, "<identifier type>:<identifier>" (a type name holds no
-- colon). Each member comes with the ts of the input that made it one, which passthrough import reads
-- back as the row's ts.

CREATE FUNCTION passthrough.audience_members(
  p_segment text, p_at timestamptz DEFAULT NULL, p_after text DEFAULT NULL, p_limit integer DEFAULT NULL
) RETURNS TABLE (identifier_type text, identifier text, event_ts timestamptz, cursor text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_key           integer := passthrough._audience_key_for_read(p_segment);
  v_ttl           interval := (SELECT a.ttl FROM passthrough.audiences a WHERE a.name = p_segment);
  v_limit         integer := coalesce(p_limit, 1000);
  v_after_type_id smallint;
  v_after_id      text;
  v_type_names    text[];  -- by id: a lookup per row, where a join chose a nested loop over a million rows
  v_type          record;
BEGIN
  PERFORM passthrough._check_limit(v_limit, 1000000);
  FOR v_type IN SELECT t.id, t.name FROM passthrough.identifier_types t LOOP
    v_type_names[v_type.id] := v_type.name;
  END LOOP;
  IF p_after IS NOT NULL THEN
    SELECT t.id INTO v_after_type_id FROM passthrough.identifier_types t WHERE t.name = split_part(p_after, ':', 1);
    IF position(':' IN p_after) < 2 OR v_after_type_id IS NULL THEN
      RAISE EXCEPTION USING ERRCODE = 'PT010',
        MESSAGE = 'after must be a cursor this function returned ("<identifier type>:<identifier>")',
        DETAIL = 'field: after';
    END IF;
    v_after_id := substr(p_after, position(':' IN p_after) + 1);
  END IF;
  IF p_at IS NOT NULL THEN
    PERFORM passthrough._check_instant(p_at, 'at');
    PERFORM passthrough._check_horizon(p_at, 'at');
    RETURN QUERY
      SELECT v_type_names[s.identifier_type_id], s.identifier::text, s.event_ts,
             v_type_names[s.identifier_type_id] || ':' || s.identifier
      FROM passthrough._audience_members_at(v_key, p_at) s
      WHERE p_after IS NULL OR (s.identifier_type_id, s.identifier COLLATE "C") > (v_after_type_id, v_after_id)
      ORDER BY s.identifier_type_id, s.identifier COLLATE "C"
      LIMIT v_limit;
    RETURN;
  END IF;
  -- now: the live members, as customer_audiences and the sizes count them, in the primary key's order, so a
  -- page is a range of the key read from the cursor on, not a sort of the whole audience
  RETURN QUERY
    SELECT v_type_names[m.identifier_type_id], m.identifier::text, m.event_ts,
           v_type_names[m.identifier_type_id] || ':' || m.identifier
    FROM passthrough.memberships m
    WHERE m.audience_key = v_key AND m.qualified AND passthrough._within_ttl(m.event_ts, v_ttl, now())
      AND (p_after IS NULL OR (m.identifier_type_id, m.identifier) > (v_after_type_id, v_after_id))
    ORDER BY m.identifier_type_id, m.identifier
    LIMIT v_limit;
END;
$$;
COMMENT ON FUNCTION passthrough.audience_members(text, timestamptz, text, integer) IS
  'The members of a defined audience (p_segment: the segment id, as in GET /v3/segments/{id}/members), now (p_at NULL: the live members) or at p_at, ordered by identifier type (in the order the types were added) then identifier (byte order), with the ts of the input that made each a member, p_limit at a time (default 1000, at most 1000000) after the cursor p_after (a row''s cursor). A page of the live members reads its range of the memberships'' primary key; a page at p_at computes the audience''s members at p_at first. PT006 for an unknown audience, PT010 for an invalid argument, PT031 for a time before the history horizon.';

CREATE FUNCTION passthrough.audience_member_counts(p_segment text, p_at timestamptz DEFAULT NULL)
RETURNS TABLE (identifier_type text, members bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_key integer := passthrough._audience_key_for_read(p_segment);
  v_ttl interval := (SELECT a.ttl FROM passthrough.audiences a WHERE a.name = p_segment);
BEGIN
  IF p_at IS NOT NULL THEN
    PERFORM passthrough._check_instant(p_at, 'at');
    PERFORM passthrough._check_horizon(p_at, 'at');
    RETURN QUERY
      SELECT t.name::text, count(*)
      FROM passthrough._audience_members_at(v_key, p_at) s
      JOIN passthrough.identifier_types t ON t.id = s.identifier_type_id
      GROUP BY t.id, t.name ORDER BY t.id;
    RETURN;
  END IF;
  RETURN QUERY
    SELECT t.name::text, count(*)
    FROM passthrough.memberships m
    JOIN passthrough.identifier_types t ON t.id = m.identifier_type_id
    WHERE m.audience_key = v_key AND m.qualified AND passthrough._within_ttl(m.event_ts, v_ttl, now())
    GROUP BY t.id, t.name ORDER BY t.id;
END;
$$;
COMMENT ON FUNCTION passthrough.audience_member_counts(text, timestamptz) IS
  'How many members a defined audience has of each identifier type (in the order the types were added), now (p_at NULL) or at p_at, as passthrough.audience_members would list them: what an export writes, one snapshot file per identifier type. PT006 for an unknown audience, PT010 for an invalid time, PT031 for one before the history horizon.';
