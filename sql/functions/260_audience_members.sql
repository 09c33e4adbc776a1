-- Who is in an audience, now or at a time T: the export a DBA, an ETL job or an application pages
-- through (GET /v3/segments/{id}/members and passthrough export call it). Keyset-paged by (identifier
-- type, identifier), the order of the memberships' primary key; each row carries its cursor, "<identifier type>:<identifier>" (a type name holds no
-- colon). Each member comes with the ts of the input that made it one, which passthrough import reads
-- back as the row's ts.

-- The live members of an audience are its qualified memberships younger than its ttl (_within_ttl), written
-- out in each query below rather than through a SQL function: Citus plans a SQL function with parameters over
-- its tables wrongly inside PL/pgSQL (no rows, and no error: docs/scale-out.md, Citus).

-- A cursor names the last member of a page as "<identifier type>:<identifier>".
CREATE FUNCTION passthrough._member_cursor(p_after text, OUT identifier_type_id smallint, OUT identifier text)
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  IF p_after IS NULL THEN
    RETURN;
  END IF;
  SELECT t.id INTO identifier_type_id FROM passthrough.identifier_types t WHERE t.name = split_part(p_after, ':', 1);
  IF position(':' IN p_after) < 2 OR identifier_type_id IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = 'after must be a cursor this function returned ("<identifier type>:<identifier>")',
      DETAIL = 'field: after';
  END IF;
  identifier := substr(p_after, position(':' IN p_after) + 1);
END;
$$;
COMMENT ON FUNCTION passthrough._member_cursor(text) IS
  'Private: the identifier type id and identifier a member cursor ("<identifier type>:<identifier>") names (NULLs for NULL), or PT010.';

-- Identifier type names by id: a lookup per row, where a join chose a nested loop over a million rows.
CREATE FUNCTION passthrough._identifier_type_names() RETURNS text[]
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_names text[];
  v_type  record;
BEGIN
  FOR v_type IN SELECT t.id, t.name FROM passthrough.identifier_types t LOOP
    v_names[v_type.id] := v_type.name;
  END LOOP;
  RETURN v_names;
END;
$$;
COMMENT ON FUNCTION passthrough._identifier_type_names() IS
  'Private: the identifier type names, indexed by id.';

CREATE FUNCTION passthrough.audience_members(
  p_segment text, p_at timestamptz DEFAULT NULL, p_after text DEFAULT NULL, p_limit integer DEFAULT NULL
) RETURNS TABLE (identifier_type text, identifier text, event_ts timestamptz, cursor text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_key        integer := passthrough._audience_key_for_read(p_segment);
  v_ttl        interval := (SELECT a.ttl FROM passthrough.audiences a WHERE a.name = p_segment);
  v_limit      integer := coalesce(p_limit, 1000);
  v_after      record;
  v_type_names text[] := passthrough._identifier_type_names();
BEGIN
  PERFORM passthrough._check_limit(v_limit, 1000000);
  v_after := passthrough._member_cursor(p_after);
  IF p_at IS NOT NULL THEN
    PERFORM passthrough._check_instant(p_at, 'at');
    PERFORM passthrough._check_horizon(p_at, 'at');
    RETURN QUERY
      SELECT v_type_names[s.identifier_type_id], s.identifier::text, s.event_ts,
             v_type_names[s.identifier_type_id] || ':' || s.identifier
      FROM passthrough._audience_members_at(v_key, p_at) s
      WHERE p_after IS NULL
         OR (s.identifier_type_id, s.identifier COLLATE "C") > (v_after.identifier_type_id, v_after.identifier)
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
      AND (p_after IS NULL OR (m.identifier_type_id, m.identifier) > (v_after.identifier_type_id, v_after.identifier))
    ORDER BY m.identifier_type_id, m.identifier
    LIMIT v_limit;
END;
$$;
COMMENT ON FUNCTION passthrough.audience_members(text, timestamptz, text, integer) IS
  'The members of a defined audience (p_segment: the segment id, as in GET /v3/segments/{id}/members), now (p_at NULL: the live members) or at p_at, ordered by identifier type (in the order the types were added) then identifier (byte order), with the ts of the input that made each a member, p_limit at a time (default 1000, at most 1000000) after the cursor p_after (a row''s cursor). A page of the live members reads its range of the memberships'' primary key; a page at p_at computes the audience''s members at p_at first. PT006 for an unknown audience, PT010 for an invalid argument, PT031 for a time before the history horizon.';

-- A CSV field as RFC 4180 (and COPY's CSV format, and Python's csv module) write it.
CREATE FUNCTION passthrough._csv_field(p_value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE WHEN strpos(p_value, '"') + strpos(p_value, ',') + strpos(p_value, E'\r') + strpos(p_value, E'\n') > 0
              THEN '"' || replace(p_value, '"', '""') || '"' ELSE p_value END;
$$;
COMMENT ON FUNCTION passthrough._csv_field(text) IS
  'Private: p_value as one CSV field: quoted, quotes doubled, when it holds a quote, a comma, a carriage return or a newline. Inlined by the planner.';

-- One member as a line of an export format (newline included). The formats' only definition.
CREATE FUNCTION passthrough._member_line(
  p_format text, p_identifier_type text, p_identifier text, p_event_ts timestamptz, p_snapshot_prefix text
) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT CASE p_format
    WHEN 'snapshot' THEN p_snapshot_prefix || trim_scale(extract(epoch FROM p_event_ts)) || ','
                         || passthrough._csv_field(p_identifier)
    WHEN 'ndjson' THEN '{"identifier_type":"' || p_identifier_type || '","identifier":' || to_json(p_identifier)::text
                       || ',"ts":' || trim_scale(extract(epoch FROM p_event_ts)) || '}'
    WHEN 'csv' THEN p_identifier_type || ',' || passthrough._csv_field(p_identifier) || ','
                    || trim_scale(extract(epoch FROM p_event_ts))
  END || E'\n';
$$;
COMMENT ON FUNCTION passthrough._member_line(text, text, text, timestamptz, text) IS
  'Private: a member as one line (newline included) of the export format p_format: snapshot (the row passthrough import reads: passthrough,qualify,<audience id>,<ts>,<identifier>, p_snapshot_prefix being its start up to the ts), ndjson ({"identifier_type", "identifier", "ts"}) or csv (identifier_type,identifier,ts); ts in seconds since the Unix epoch. Inlined by the planner. A type name needs no quoting (a letter, then letters, digits and underscores).';

CREATE FUNCTION passthrough.audience_member_lines(
  p_segment text, p_format text, p_at timestamptz DEFAULT NULL, p_after text DEFAULT NULL,
  p_limit integer DEFAULT NULL, p_identifier_type text DEFAULT NULL
) RETURNS TABLE (members integer, lines text, next_after text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  c_block      CONSTANT integer := 10000;  -- lines per row: few rows for the client, small sorts for PostgreSQL
  v_key        integer := passthrough._audience_key_for_read(p_segment);
  v_ttl        interval := (SELECT a.ttl FROM passthrough.audiences a WHERE a.name = p_segment);
  v_limit      integer := coalesce(p_limit, 1000);
  v_type_names text[] := passthrough._identifier_type_names();
  v_only_type  smallint;  -- p_identifier_type's id
  v_last_type  smallint;  -- the greatest identifier type id read
  v_after      record;
  v_t          smallint;
  v_i          text;
  v_n          integer;
  v_want       integer;
  v_lines      text;
  v_first_t    smallint;
  v_end_t      smallint;
  v_end_i      text;
  v_prefix     text;     -- a snapshot row's start: passthrough,qualify,<audience id>,
BEGIN
  IF p_format IS NULL OR p_format NOT IN ('snapshot', 'ndjson', 'csv') THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('format must be snapshot, ndjson or csv, got %s', coalesce(quote_literal(left(p_format, 64)), 'NULL')),
      DETAIL = 'field: format';
  END IF;
  PERFORM passthrough._check_limit(v_limit, 1000000);
  IF p_identifier_type IS NOT NULL THEN
    v_only_type := (SELECT t.id FROM passthrough.identifier_types t WHERE t.name = p_identifier_type);
    IF v_only_type IS NULL THEN
      RAISE EXCEPTION USING ERRCODE = 'PT003',
        MESSAGE = format('invalid identifier: %s is not an identifier type', quote_literal(left(p_identifier_type, 64))),
        DETAIL = 'field: identifier_type',
        HINT = 'SELECT * FROM passthrough.list_identifier_types() lists them.';
    END IF;
  END IF;
  v_after := passthrough._member_cursor(p_after);
  v_t := coalesce(v_after.identifier_type_id, 0);
  v_i := coalesce(v_after.identifier, '');
  IF v_only_type IS NOT NULL AND v_t < v_only_type THEN
    v_t := v_only_type;  -- from the type's first member (no identifier is empty)
    v_i := '';
  END IF;
  v_last_type := coalesce(v_only_type, 32767);
  v_prefix := 'passthrough,qualify,' || passthrough._csv_field(
    (SELECT e.external_id FROM passthrough.external_audiences e WHERE e.id = v_key)) || ',';

  IF p_at IS NOT NULL THEN
    PERFORM passthrough._check_instant(p_at, 'at');
    PERFORM passthrough._check_horizon(p_at, 'at');
    -- the members at p_at come unordered: number them in order, then cut the numbers into blocks; the member
    -- after the page (if any) joins the last block, to say that another page follows
    RETURN QUERY
      SELECT (count(*) FILTER (WHERE x.n <= v_limit))::integer,
             coalesce(string_agg(x.line, '' ORDER BY x.n) FILTER (WHERE x.n <= v_limit), ''),
             CASE WHEN count(*) FILTER (WHERE x.n > v_limit) > 0
                  THEN max(v_type_names[x.t] || ':' || x.i) FILTER (WHERE x.n = v_limit) END
      FROM (SELECT s.identifier_type_id AS t, s.identifier AS i,
                   passthrough._member_line(p_format, v_type_names[s.identifier_type_id], s.identifier, s.event_ts,
                                            v_prefix) AS line,
                   row_number() OVER (ORDER BY s.identifier_type_id, s.identifier COLLATE "C") AS n
            FROM passthrough._audience_members_at(v_key, p_at) s
            WHERE (s.identifier_type_id, s.identifier COLLATE "C") > (v_t, v_i) AND s.identifier_type_id <= v_last_type
            ORDER BY s.identifier_type_id, s.identifier COLLATE "C"
            LIMIT v_limit + 1) x
      GROUP BY (least(x.n, v_limit) - 1) / c_block
      ORDER BY (least(x.n, v_limit) - 1) / c_block;
    RETURN;
  END IF;

  -- now: a block at a time, each a range of the memberships' primary key read in order (no sort)
  WHILE v_limit > 0 LOOP
    v_want := least(v_limit, c_block);
    SELECT count(*)::integer, string_agg(b.line, '' ORDER BY b.t, b.i), min(b.t), max(b.t), max(b.i)
    INTO v_n, v_lines, v_first_t, v_end_t, v_end_i
    FROM (SELECT m.identifier_type_id AS t, m.identifier AS i,
                 passthrough._member_line(p_format, v_type_names[m.identifier_type_id], m.identifier, m.event_ts,
                                          v_prefix) AS line
          FROM passthrough.memberships m
          WHERE m.audience_key = v_key AND m.qualified AND passthrough._within_ttl(m.event_ts, v_ttl, now())
            AND (m.identifier_type_id, m.identifier) > (v_t, v_i) AND m.identifier_type_id <= v_last_type
          ORDER BY m.identifier_type_id, m.identifier
          LIMIT v_want) b;
    IF v_first_t <> v_end_t THEN  -- a block across identifier types (rare): its last member, once more
      SELECT b.t, b.i INTO v_end_t, v_end_i
      FROM (SELECT m.identifier_type_id AS t, m.identifier AS i
            FROM passthrough.memberships m
            WHERE m.audience_key = v_key AND m.qualified AND passthrough._within_ttl(m.event_ts, v_ttl, now())
              AND (m.identifier_type_id, m.identifier) > (v_t, v_i) AND m.identifier_type_id <= v_last_type
            ORDER BY m.identifier_type_id, m.identifier
            LIMIT v_want) b
      ORDER BY b.t DESC, b.i DESC
      LIMIT 1;
    END IF;
    EXIT WHEN v_n = 0;
    v_limit := v_limit - v_n;
    members := v_n;
    lines := v_lines;
    next_after := NULL;
    IF v_n = v_want THEN
      v_t := v_end_t;
      v_i := v_end_i;
      IF v_limit = 0 AND EXISTS (
           SELECT 1 FROM passthrough.memberships m
           WHERE m.audience_key = v_key AND m.qualified AND passthrough._within_ttl(m.event_ts, v_ttl, now())
             AND (m.identifier_type_id, m.identifier) > (v_t, v_i) AND m.identifier_type_id <= v_last_type) THEN
        next_after := v_type_names[v_t] || ':' || v_i;
      END IF;
    END IF;
    RETURN NEXT;
    EXIT WHEN v_n < v_want;
  END LOOP;
END;
$$;
COMMENT ON FUNCTION passthrough.audience_member_lines(text, text, timestamptz, text, integer, text) IS
  'The export as text: the members passthrough.audience_members lists (the same arguments, order, page sizes and cursors; p_identifier_type keeps one identifier type), each as one line of p_format (snapshot: the file passthrough import reads, passthrough,qualify,<audience id>,<ts>,<identifier> under the header type,action,audience_id,ts,<identifier type>; ndjson: {"identifier_type","identifier","ts"}; csv: identifier_type,identifier,ts; ts in seconds since the Unix epoch), in blocks of up to 10000 lines. The last block has next_after, the cursor to pass as p_after, when more members follow. GET /v3/segments/{id}/members and passthrough export call it. PT003 for an unknown identifier type, PT006 for an unknown audience, PT010 for an invalid argument, PT031 for a time before the history horizon.';

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
