-- apply_events and apply_event: a JSON batch of events, checked (sql/functions/130_event_rules.sql) and
-- written by the one writer (sql/functions/150_writer.sql).

CREATE FUNCTION passthrough.apply_events(
  p_events jsonb, p_source text DEFAULT 'sql', p_skip_other_types boolean DEFAULT false, p_key_scope text DEFAULT NULL
) RETURNS passthrough.apply_result
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_now      timestamptz := now();
  v_max_ts   numeric;
  v_total    integer;
  v_ignored  integer;
  v_invalid  jsonb;
  v_result   passthrough.apply_result;
BEGIN
  IF p_events IS NULL OR jsonb_typeof(p_events) <> 'array' THEN
    RAISE EXCEPTION USING ERRCODE = 'PT001',
      MESSAGE = format('events must be a JSON array of event objects, got %s',
                       coalesce(jsonb_typeof(p_events), 'NULL')),
      DETAIL = '[]',
      HINT = 'Send [{"type": "passthrough", "action": "qualify", "identifiers": {...}, "data": {...}}].';
  END IF;
  v_total := jsonb_array_length(p_events);
  PERFORM passthrough._incoming_table();
  SELECT extract(epoch FROM v_now + s.max_future_skew) INTO v_max_ts FROM passthrough.settings s;

  -- Each step below is a subquery the planner may not flatten (OFFSET 0), so that every expression is
  -- computed once per event and rows pass up without being copied into a CTE's store: 20% less CPU than
  -- materializing fields and keyed (500-event batches, measured), and flattened they would recompute them.
  WITH raw AS (
    SELECT (x.o - 1)::integer AS pos, x.e,
           jsonb_typeof(x.e) AS kind,
           x.e->'identifiers' AS ids, x.e->'data' AS data
    FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(e, o)
    OFFSET 0
  ), fields AS (
    SELECT r.pos, r.kind,
           -- never NULL: an event without a type is invalid, not ignored (nor silently dropped)
           coalesce(r.kind = 'object' AND p_skip_other_types AND jsonb_typeof(r.e->'type') = 'string'
                    AND r.e->>'type' <> 'passthrough', false) AS ignored,
           r.e->'type' #>> '{}' AS type,
           r.e->'action' #>> '{}' AS action,
           CASE WHEN jsonb_typeof(r.ids) = 'object' THEN c.n END AS id_count, c.only_key,
           r.ids, jsonb_typeof(r.data) AS data_kind,
           CASE WHEN jsonb_typeof(r.data) = 'object' THEN r.data->'audience_id' END AS audience_j,
           CASE WHEN jsonb_typeof(r.data) = 'object' THEN r.data->'ts' END AS ts_j,
           CASE WHEN jsonb_typeof(r.data) = 'object' THEN r.data->'idempotence_id' END AS idem_j
    FROM raw r
    CROSS JOIN LATERAL (SELECT count(*)::integer AS n, min(o.key) AS only_key
                        FROM jsonb_object_keys(CASE WHEN jsonb_typeof(r.ids) = 'object' THEN r.ids END) AS o(key)) c
    OFFSET 0
  ), keyed AS (
    -- the identifier that keys the event: its only one, or the one high-confidence identifier of several
    SELECT f.*, k.key, f.ids->k.key AS id_j, CASE WHEN f.id_count > 1 THEN k.n ELSE f.id_count END AS key_count,
           CASE WHEN jsonb_typeof(f.ts_j) = 'number' THEN (f.ts_j #>> '{}')::numeric END AS ts,
           CASE WHEN jsonb_typeof(f.idem_j) = 'string' THEN f.idem_j #>> '{}' END AS idempotence_id
    FROM fields f
    LEFT JOIN LATERAL (
      SELECT f.only_key AS key, 1 AS n WHERE f.id_count = 1
      UNION ALL
      SELECT r.key, r.high_count FROM passthrough._key_identifier(f.ids) r WHERE f.id_count > 1
    ) k ON true
    OFFSET 0
  ), checked AS MATERIALIZED (
    SELECT k.pos, k.ignored, t.id AS type_id,
           k.id_j #>> '{}' AS identifier,
           k.audience_j #>> '{}' AS audience_id,
           k.action = 'qualify' AS qualified,
           k.ts, k.idempotence_id,
           -- most events break no rule: a cheap test first, the messages only when it fails
           CASE WHEN k.kind = 'object' AND jsonb_typeof(k.id_j) = 'string' AND jsonb_typeof(k.audience_j) = 'string'
                     AND (k.ts IS NOT NULL OR jsonb_typeof(k.ts_j) IS NULL OR jsonb_typeof(k.ts_j) = 'null')
                     AND (k.idempotence_id IS NOT NULL OR jsonb_typeof(k.idem_j) IS NULL OR jsonb_typeof(k.idem_j) = 'null')
                     AND passthrough._event_plainly_valid(NULL, k.type, k.action, k.key_count, t.high_confidence,
                           k.id_j #>> '{}', k.audience_j #>> '{}', k.ts, v_max_ts, k.idempotence_id)
                THEN '{}'::text[]
                WHEN k.kind <> 'object' THEN ARRAY[format('event: must be a JSON object, got %s', k.kind)]
                ELSE array_remove(ARRAY[
                  CASE WHEN k.data_kind NOT IN ('object', 'null')
                    THEN format('data: must be an object, got %s', k.data_kind) END,
                  CASE WHEN jsonb_typeof(k.id_j) NOT IN ('string', 'null')
                    THEN format('identifiers.%s: must be a string, got %s', left(k.key, 64), jsonb_typeof(k.id_j)) END,
                  CASE WHEN jsonb_typeof(k.audience_j) NOT IN ('string', 'null')
                    THEN format('data.audience_id: must be a string, got %s', jsonb_typeof(k.audience_j)) END,
                  CASE WHEN jsonb_typeof(k.ts_j) NOT IN ('number', 'null')
                    THEN format('data.ts: must be a number of seconds since the Unix epoch, got %s',
                                jsonb_typeof(k.ts_j)) END,
                  CASE WHEN jsonb_typeof(k.idem_j) NOT IN ('string', 'null')
                    THEN format('data.idempotence_id: must be a string, got %s', jsonb_typeof(k.idem_j)) END
                ], NULL)
                || passthrough._event_problems(
                     k.type, k.action, k.key_count, k.key, t.high_confidence,
                     k.id_j #>> '{}', k.audience_j #>> '{}', k.ts, v_max_ts, k.idempotence_id)
           END AS problems
    FROM keyed k
    LEFT JOIN passthrough.identifier_types t ON t.name = passthrough._normalize_identifier_type(k.key)
  ), stored AS (
    -- the writer's input, straight from the checked events; an invalid batch raises below, which undoes this
    INSERT INTO pg_temp.passthrough_incoming (t, i, a, q, ts, idem)
    SELECT c.type_id, c.identifier, c.audience_id, c.qualified,
           coalesce(passthrough._ts_from_seconds(c.ts), v_now), c.idempotence_id
    FROM checked c
    WHERE NOT c.ignored AND cardinality(c.problems) = 0
    ORDER BY c.pos
  )
  SELECT count(*) FILTER (WHERE c.ignored),
         jsonb_agg(jsonb_build_object('event', c.pos, 'message', array_to_string(c.problems, '; '),
                                      'problems', to_jsonb(c.problems)) ORDER BY c.pos)
           FILTER (WHERE NOT c.ignored AND cardinality(c.problems) > 0)
  INTO v_ignored, v_invalid
  FROM checked c;

  IF v_total > v_ignored THEN
    PERFORM passthrough._check_key_scope(p_key_scope);
    PERFORM passthrough._raise_if_disabled();
    PERFORM passthrough._check_source(p_source);
  END IF;
  IF v_invalid IS NOT NULL THEN
    PERFORM passthrough._raise_invalid_events(v_invalid, v_total);
  END IF;

  v_result := passthrough._apply_valid_events(p_source, v_total - v_ignored);
  v_result.ignored := v_ignored;
  RETURN v_result;
END;
$$;
COMMENT ON FUNCTION passthrough.apply_events(jsonb, text, boolean, text) IS
  'Applies a JSON array of ODP passthrough events as one all-or-nothing batch. PT001 lists every invalid event (nothing stored); PT002 when passthrough is disabled. With p_skip_other_types, events whose type is not "passthrough" are acknowledged and not stored. An event without data.ts takes the transaction time. p_key_scope: the scope of the API key the caller authenticated with (the HTTP API passes it); ''public'' may send passthrough events only while the setting public_passthrough_events is on (PT036). The sources expiry and snapshot are the owner''s (PT010).';

CREATE FUNCTION passthrough.apply_event(
  p_identifier_type text, p_identifier text, p_audience_id text, p_action text,
  p_ts numeric DEFAULT NULL, p_idempotence_id text DEFAULT NULL, p_source text DEFAULT 'sql'
) RETURNS passthrough.apply_result
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT passthrough.apply_events(
    jsonb_build_array(jsonb_build_object(
      'type', 'passthrough',
      'action', p_action,
      'identifiers', CASE WHEN p_identifier_type IS NULL THEN NULL
                          ELSE jsonb_build_object(p_identifier_type, p_identifier) END,
      'data', jsonb_strip_nulls(jsonb_build_object(
                'audience_id', p_audience_id, 'ts', p_ts, 'idempotence_id', p_idempotence_id)))),
    p_source);
$$;
COMMENT ON FUNCTION passthrough.apply_event(text, text, text, text, numeric, text, text) IS
  'Applies one passthrough event; the same rules and errors as passthrough.apply_events.';
