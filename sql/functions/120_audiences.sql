-- Audience definitions (ODP "segments"): a name applications ask about, linked to the external
-- audience id that events carry. Membership is keyed by the external id, so events may arrive
-- before the definition and show up the moment it is created.

-- One place for every rule a definition must meet; create, put and validate all call it.
CREATE FUNCTION passthrough._check_audience(
  p_name text, p_external_audience_id text, p_description text, p_metadata jsonb, p_ttl interval
) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_owner text;
BEGIN
  IF p_name IS NULL OR p_name !~ '^[a-z0-9_]{1,255}$' THEN
    RAISE EXCEPTION USING ERRCODE = 'PT007',
      MESSAGE = format('invalid audience name %s', coalesce(quote_literal(left(p_name, 300)), 'NULL')),
      DETAIL = 'field: name',
      HINT = 'An audience name is 1 to 255 characters from a-z, 0-9 and _.';
  END IF;
  IF p_external_audience_id IS NULL OR p_external_audience_id = ''
     OR length(p_external_audience_id) > 255 THEN
    RAISE EXCEPTION USING ERRCODE = 'PT007',
      MESSAGE = 'external_audience_id must be a non-empty string of at most 255 characters',
      DETAIL = 'field: external_audience_id',
      HINT = 'It is the audience_id that passthrough events for this audience carry.';
  END IF;
  IF length(p_description) > 4096 THEN
    RAISE EXCEPTION USING ERRCODE = 'PT007',
      MESSAGE = 'description must be at most 4096 characters',
      DETAIL = format('field: description (%s characters)', length(p_description));
  END IF;
  IF p_metadata IS NULL OR jsonb_typeof(p_metadata) <> 'object' THEN
    RAISE EXCEPTION USING ERRCODE = 'PT007',
      MESSAGE = 'metadata must be a JSON object',
      DETAIL = format('field: metadata (got %s)', coalesce(jsonb_typeof(p_metadata), 'NULL')),
      HINT = 'Use {} for no metadata.';
  END IF;
  IF p_ttl <= interval '0' THEN
    RAISE EXCEPTION USING ERRCODE = 'PT007',
      MESSAGE = format('ttl must be a positive interval or NULL, got %s', p_ttl),
      DETAIL = 'field: ttl',
      HINT = 'For example interval ''30 days'' (HTTP: "ttl_seconds": 2592000); NULL: memberships do not expire.';
  END IF;
  -- a member's expiry (event_ts + ttl) must stay a timestamp the expiry work list can hold and sort
  IF extract(epoch FROM p_ttl) > 9999999999 THEN
    RAISE EXCEPTION USING ERRCODE = 'PT007',
      MESSAGE = format('ttl must be at most 9999999999 seconds (about 317 years), got %s', p_ttl),
      DETAIL = 'field: ttl',
      HINT = 'NULL: memberships do not expire.';
  END IF;
  IF octet_length(p_metadata::text) > 65536 THEN
    RAISE EXCEPTION USING ERRCODE = 'PT007',
      MESSAGE = 'metadata must be at most 64 KiB of JSON',
      DETAIL = 'field: metadata';
  END IF;
  SELECT a.name INTO v_owner
  FROM passthrough.audiences a JOIN passthrough.external_audiences e ON e.id = a.audience_key
  WHERE e.external_id = p_external_audience_id AND a.name <> p_name;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'PT004',
      MESSAGE = format('external audience id %L is already linked to audience %L',
                       p_external_audience_id, v_owner),
      DETAIL = 'field: external_audience_id',
      HINT = 'An external audience id belongs to one audience at a time; delete or relink the other first.';
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._check_audience(text, text, text, jsonb, interval) IS
  'Private: raises PT007 (invalid) or PT004 (external id taken) for a definition that may not be saved.';

CREATE FUNCTION passthrough._audience_key(p_external_audience_id text) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  v_key integer;
BEGIN
  SELECT id INTO v_key FROM passthrough.external_audiences WHERE external_id = p_external_audience_id;
  IF NOT FOUND THEN
    INSERT INTO passthrough.external_audiences (external_id) VALUES (p_external_audience_id)
    ON CONFLICT (external_id) DO NOTHING;
    SELECT id INTO v_key FROM passthrough.external_audiences WHERE external_id = p_external_audience_id;
  END IF;
  RETURN v_key;
END;
$$;
COMMENT ON FUNCTION passthrough._audience_key(text) IS
  'Private: the integer key of an external audience id, created on first use.';

-- p_mode: 'create' refuses an existing name, 'put' creates or updates.
CREATE FUNCTION passthrough._save_audience(
  p_mode text, p_name text, p_external_audience_id text, p_description text, p_metadata jsonb, p_ttl interval
) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  -- seconds only: a ttl of days or months would move with the session's time zone and calendar
  v_ttl      interval := make_interval(secs => extract(epoch FROM p_ttl));
  v_key      integer;
  v_old      passthrough.audiences;
  v_revision integer;
  v_now      timestamptz := now();  -- a variable: Citus refuses now() in an upsert's SET on its tables
BEGIN
  PERFORM passthrough._check_audience(p_name, p_external_audience_id, p_description, p_metadata, p_ttl);
  v_key := passthrough._audience_key(p_external_audience_id);
  SELECT * INTO v_old FROM passthrough.audiences WHERE name = p_name FOR UPDATE;
  IF p_mode = 'create' THEN
    INSERT INTO passthrough.audiences (name, audience_key, description, metadata, ttl)
    VALUES (p_name, v_key, p_description, p_metadata, v_ttl)
    ON CONFLICT (name) DO NOTHING
    RETURNING revision INTO v_revision;
    IF v_revision IS NULL THEN
      RAISE EXCEPTION USING ERRCODE = 'PT005',
        MESSAGE = format('audience %L already exists', p_name),
        HINT = 'Use passthrough.put_audience (HTTP PUT) to update it.';
    END IF;
    PERFORM passthrough._requeue_expiries(v_key, NULL);  -- events may have come before the definition
    RETURN v_revision;
  END IF;
  IF v_old.ttl IS NOT NULL AND (v_old.ttl IS DISTINCT FROM v_ttl OR v_old.audience_key <> v_key) THEN
    -- expiries due under the old definition are final: record them before it changes (sql/functions/100_expiry.sql)
    WHILE passthrough._expire_due(v_old.audience_key, 100000) > 0 LOOP
    END LOOP;
  END IF;
  INSERT INTO passthrough.audiences AS a (name, audience_key, description, metadata, ttl)
  VALUES (p_name, v_key, p_description, p_metadata, v_ttl)
  ON CONFLICT (name) DO UPDATE
    SET audience_key = EXCLUDED.audience_key, description = EXCLUDED.description,
        metadata = EXCLUDED.metadata, ttl = EXCLUDED.ttl, revision = a.revision + 1, updated_at = v_now
    WHERE (a.audience_key, a.description, a.metadata, a.ttl)
          IS DISTINCT FROM (EXCLUDED.audience_key, EXCLUDED.description, EXCLUDED.metadata, EXCLUDED.ttl)
  RETURNING revision INTO v_revision;
  IF v_revision IS NULL THEN  -- nothing changed: the revision stays
    RETURN v_old.revision;
  END IF;
  IF v_old.audience_key IS NULL OR v_old.audience_key <> v_key OR v_old.ttl IS DISTINCT FROM v_ttl THEN
    PERFORM passthrough._requeue_expiries(v_key, v_old.audience_key);
  END IF;
  RETURN v_revision;
EXCEPTION WHEN unique_violation THEN
  -- a concurrent save linked the same external id to another audience after our check
  RAISE EXCEPTION USING ERRCODE = 'PT004',
    MESSAGE = format('external audience id %L is already linked to another audience', p_external_audience_id),
    DETAIL = 'field: external_audience_id',
    HINT = 'An external audience id belongs to one audience at a time; delete or relink the other first.';
END;
$$;
COMMENT ON FUNCTION passthrough._save_audience(text, text, text, text, jsonb, interval) IS
  'Private: the one writer of audience definitions, behind create_audience, put_audience and set_audience_ttl. A changed ttl or link first records the expiries due under the old definition, then rebuilds the expiry work list (sql/functions/100_expiry.sql).';

CREATE FUNCTION passthrough.create_audience(
  p_name text, p_external_audience_id text, p_description text DEFAULT NULL, p_metadata jsonb DEFAULT '{}',
  p_ttl interval DEFAULT NULL
) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT passthrough._save_audience('create', p_name, p_external_audience_id, p_description, p_metadata, p_ttl);
$$;
COMMENT ON FUNCTION passthrough.create_audience(text, text, text, jsonb, interval) IS
  'Creates an audience definition and returns its revision (1). p_ttl: how long a qualify event keeps a member (NULL: for ever; see set_audience_ttl). PT005 if the name exists, PT004 if the external id is linked to another audience, PT007 if a field is invalid.';

CREATE FUNCTION passthrough.put_audience(
  p_name text, p_external_audience_id text, p_description text DEFAULT NULL, p_metadata jsonb DEFAULT '{}',
  p_ttl interval DEFAULT NULL, p_keep_ttl boolean DEFAULT false
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_ttl interval := p_ttl;
BEGIN
  IF p_keep_ttl THEN
    IF p_ttl IS NOT NULL THEN
      RAISE EXCEPTION USING ERRCODE = 'PT007',
        MESSAGE = 'pass a ttl or keep the stored one, not both',
        DETAIL = 'field: ttl',
        HINT = 'p_keep_ttl => true keeps the ttl the audience has (none for a new one); leave p_ttl NULL then.';
    END IF;
    SELECT a.ttl INTO v_ttl FROM passthrough.audiences a WHERE a.name = p_name FOR UPDATE;
  END IF;
  RETURN passthrough._save_audience('put', p_name, p_external_audience_id, p_description, p_metadata, v_ttl);
END;
$$;
COMMENT ON FUNCTION passthrough.put_audience(text, text, text, jsonb, interval, boolean) IS
  'Creates or updates an audience definition (every field; p_ttl NULL removes a ttl, unless p_keep_ttl keeps the stored one, which is what HTTP PUT does when ttl_seconds is left out) and returns its revision: 1 when created, +1 when a field changed, unchanged for a no-op. PT007 for an invalid field, or a ttl given together with p_keep_ttl.';

CREATE FUNCTION passthrough.set_audience_ttl(p_name text, p_ttl interval) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_external_id text;
  v_description text;
  v_metadata    jsonb;
BEGIN
  SELECT e.external_id, a.description, a.metadata INTO v_external_id, v_description, v_metadata
  FROM passthrough.audiences a JOIN passthrough.external_audiences e ON e.id = a.audience_key
  WHERE a.name = p_name
  FOR UPDATE OF a;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'PT006',
      MESSAGE = format('audience %s does not exist', coalesce(quote_literal(left(p_name, 300)), 'NULL')),
      DETAIL = 'field: name';
  END IF;
  RETURN passthrough._save_audience('put', p_name, v_external_id, v_description, v_metadata, p_ttl);
END;
$$;
COMMENT ON FUNCTION passthrough.set_audience_ttl(text, interval) IS
  'Sets (or with NULL removes) how long a qualify event keeps a member in a defined audience, and returns the new revision (unchanged when the ttl is). A ttl is kept in seconds (a month counts 30 days). Expiries already due under the old ttl are recorded first and stay; the new ttl applies to every other membership at once, counted from its qualify event''s ts. Scans the memberships once. The same as put_audience with the other fields unchanged. PT006 for an unknown audience, PT007 for a ttl that is not positive.';

CREATE FUNCTION passthrough.validate_audience(
  p_name text, p_external_audience_id text, p_description text DEFAULT NULL, p_metadata jsonb DEFAULT '{}',
  p_ttl interval DEFAULT NULL
) RETURNS void
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT passthrough._check_audience(p_name, p_external_audience_id, p_description, p_metadata, p_ttl);
$$;
COMMENT ON FUNCTION passthrough.validate_audience(text, text, text, jsonb, interval) IS
  'Checks a definition as create/put would, without saving; raises the same errors.';

CREATE FUNCTION passthrough.delete_audience(p_name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_key integer;
BEGIN
  DELETE FROM passthrough.audiences WHERE name = p_name RETURNING audience_key INTO v_key;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'PT006',
      MESSAGE = format('audience %s does not exist', coalesce(quote_literal(left(p_name, 300)), 'NULL'));
  END IF;
  DELETE FROM passthrough.membership_expiries WHERE audience_key = v_key;  -- no definition, no ttl
END;
$$;
COMMENT ON FUNCTION passthrough.delete_audience(text) IS
  'Deletes an audience definition (PT006 if missing). Membership state is kept, keyed by the external id: a definition linked to that id later shows it again.';

-- What get_audience and list_audiences return for each audience.
CREATE VIEW passthrough._audience_details AS
  SELECT a.name::text AS name, e.external_id::text AS external_audience_id, a.description, a.metadata,
         a.revision, true AS is_ready, passthrough._audience_size(a.audience_key) AS size,
         a.created_at, a.updated_at, a.ttl
  FROM passthrough.audiences a JOIN passthrough.external_audiences e ON e.id = a.audience_key;
COMMENT ON VIEW passthrough._audience_details IS
  'Private: one row per audience definition with its external id and exact size (is_ready is always true).';

CREATE FUNCTION passthrough.get_audience(p_name text)
RETURNS TABLE (name text, external_audience_id text, description text, metadata jsonb, revision integer,
               is_ready boolean, size bigint, created_at timestamptz, updated_at timestamptz, ttl interval)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN QUERY SELECT * FROM passthrough._audience_details d WHERE d.name = p_name;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'PT006',
      MESSAGE = format('audience %s does not exist', coalesce(quote_literal(left(p_name, 300)), 'NULL'));
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough.get_audience(text) IS
  'One audience definition with its exact size and its membership ttl (NULL: none); PT006 if missing. is_ready is always true for passthrough audiences.';

-- The page size of list_audiences and audience_page_info: NULL for 100, at most 1000 (GraphQL's audiences(first:)
-- and the REST listing pass what they are given, or NULL).
CREATE FUNCTION passthrough._audience_page_size(p_first integer) RETURNS integer
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  IF p_first < 0 OR p_first > 1000 THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('first must be between 0 and 1000, got %s', p_first),
      DETAIL = 'field: first',
      HINT = 'Page through with p_after set to the last name of the previous page.';
  END IF;
  RETURN coalesce(p_first, 100);
END;
$$;
COMMENT ON FUNCTION passthrough._audience_page_size(integer) IS
  'Private: the page size of a list of audiences: p_first, 100 when NULL; PT010 naming first unless 0 to 1000.';

CREATE FUNCTION passthrough.list_audiences(p_first integer DEFAULT NULL, p_after text DEFAULT NULL)
RETURNS TABLE (name text, external_audience_id text, description text, metadata jsonb, revision integer,
               is_ready boolean, size bigint, created_at timestamptz, updated_at timestamptz, ttl interval)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_first integer := passthrough._audience_page_size(p_first);
BEGIN
  RETURN QUERY
    SELECT * FROM passthrough._audience_details d
    WHERE p_after IS NULL OR d.name > p_after COLLATE "C"
    ORDER BY d.name COLLATE "C"
    LIMIT v_first;
END;
$$;
COMMENT ON FUNCTION passthrough.list_audiences(integer, text) IS
  'Audiences in name order, keyset-paginated: up to p_first rows (0 to 1000, NULL for 100) with names after p_after; exact sizes. passthrough.audience_page_info tells whether another page follows.';

CREATE FUNCTION passthrough.audience_page_info(p_first integer DEFAULT NULL, p_after text DEFAULT NULL)
RETURNS TABLE (has_next_page boolean, next_after text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_first integer := passthrough._audience_page_size(p_first);
BEGIN
  RETURN QUERY
    WITH page AS (
      SELECT a.name::text AS name FROM passthrough.audiences a
      WHERE p_after IS NULL OR a.name > p_after COLLATE "C"
      ORDER BY a.name COLLATE "C"
      LIMIT v_first + 1
    ), numbered AS (
      SELECT p.name, row_number() OVER (ORDER BY p.name COLLATE "C") AS n FROM page p
    )
    SELECT count(*) > v_first, max(x.name COLLATE "C") FILTER (WHERE x.n <= v_first)
    FROM numbered x;
END;
$$;
COMMENT ON FUNCTION passthrough.audience_page_info(integer, text) IS
  'One row about the page list_audiences(p_first, p_after) returns: whether another page follows, and next_after, the last name of the page (NULL when it is empty), the p_after of the next page. Call both in one statement (or one snapshot) for a consistent answer.';
