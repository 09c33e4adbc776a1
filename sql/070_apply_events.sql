-- Applying passthrough events: validation rules, and the one set-based writer every path shares.
--
-- Semantics (docs/semantics.md): the state of a (identifier, audience) pair is decided by the input
-- with the greatest ts, an input being an event or a snapshot of the pair's audience (sql/074_snapshots.sql);
-- on equal ts, disqualify wins. The state is therefore a function of the set of inputs: any order,
-- duplication or split into batches gives the same result.

CREATE TYPE passthrough.apply_result AS (
  batch_id bigint,   -- the batch row written (NULL when nothing was stored)
  accepted integer,  -- passthrough events stored
  ignored  integer,  -- events of another type, acknowledged and not stored (when asked to skip them)
  changed  integer   -- (identifier, audience) pairs whose qualified state changed
);
COMMENT ON TYPE passthrough.apply_result IS 'What applying a batch of events did.';

-- Which of an event's identifiers keys it (ODP: one and only one high-confidence identifier; the browser
-- and mobile SDKs add the visitor's low-confidence vuid to every event). key is the identifier the event
-- is keyed by, or the one its error must name: an unknown type, else the only high-confidence one, else
-- (none is high-confidence) the first low-confidence one. high_count is 1 with a key; without one, how
-- many high-confidence identifiers there are (0 for an empty object, 2 or more). Called only for events
-- naming more than one identifier: one is its own key.
CREATE FUNCTION passthrough._key_identifier(p_identifiers jsonb, OUT key text, OUT high_count integer)
LANGUAGE sql STABLE
AS $$
  SELECT CASE WHEN u.unknown IS NOT NULL THEN u.unknown
              WHEN u.high = 1 THEN u.high_key
              WHEN u.high = 0 THEN u.any_key END,
         CASE WHEN u.unknown IS NOT NULL OR u.high = 1 OR (u.high = 0 AND u.n > 0) THEN 1 ELSE u.high END
  FROM (SELECT min(k.key) FILTER (WHERE t.id IS NULL) AS unknown,
               count(*) FILTER (WHERE t.high_confidence)::integer AS high,
               min(k.key) FILTER (WHERE t.high_confidence) AS high_key,
               min(k.key) AS any_key, count(*) AS n
        FROM jsonb_object_keys(p_identifiers) AS k(key)
        LEFT JOIN passthrough.identifier_types t ON t.name = passthrough._normalize_identifier_type(k.key)) u;
$$;
COMMENT ON FUNCTION passthrough._key_identifier(jsonb) IS
  'Private: of an identifiers object, the identifier that keys the event (its one high-confidence identifier) or the one its error names, and how many high-confidence identifiers it has when none keys it.';

-- The rules an event's values must meet, whatever transport brought them. Each problem is
-- 'field: reason'. Presence is checked here (NULL means missing); a transport adds what only it can
-- see (a JSON value of the wrong type). p_identifier_count is 1 for an event keyed by one identifier
-- (p_identifier_key), else how many high-confidence identifiers it named (passthrough._key_identifier).
CREATE FUNCTION passthrough._event_problems(
  p_type text, p_action text,
  p_identifier_count integer, p_identifier_key text, p_identifier_high_confidence boolean,
  p_identifier text, p_audience_id text, p_ts numeric, p_max_ts numeric, p_idempotence_id text
) RETURNS text[]
-- STABLE, not IMMUTABLE: format() is stable, and only a function whose body is no more volatile than
-- its declaration is inlined into the calling query. Inlined, checking a 100k-row bulk load costs
-- about 0.1 s; called per row as a SQL function, about 9 s.
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT array_remove(ARRAY[
    CASE WHEN p_type IS NULL THEN 'type: is required'
         WHEN p_type <> 'passthrough' THEN format('type: must be "passthrough", got %s', to_json(left(p_type, 64)))
    END,
    CASE WHEN p_action IS NULL THEN 'action: is required'
         WHEN p_action NOT IN ('qualify', 'disqualify')
           THEN format('action: must be "qualify" or "disqualify", got %s', to_json(left(p_action, 64)))
    END,
    CASE WHEN p_identifier_count IS NULL
           THEN 'identifiers: is required, as an object with one high-confidence identifier, e.g. {"fs_user_id": "user-1"}'
         WHEN p_identifier_count <> 1
           THEN format('identifiers: must hold exactly one high-confidence identifier, got %s '
                       '(low-confidence ones, such as vuid, may come with it)', p_identifier_count)
         WHEN p_identifier_high_confidence IS NULL
           THEN format('identifiers: unknown identifier type %s (passthrough.list_identifier_types() lists them)',
                       to_json(left(p_identifier_key, 64)))
         WHEN NOT p_identifier_high_confidence
           THEN format('identifiers: %s is a low-confidence identifier type, and a passthrough event needs exactly one '
                       'high-confidence identifier (such as fs_user_id) to key it', to_json(left(p_identifier_key, 64)))
         WHEN p_identifier IS NULL OR p_identifier = ''
           THEN format('identifiers.%s: must be a non-empty string', left(p_identifier_key, 64))
         WHEN length(p_identifier) > 512
           THEN format('identifiers.%s: must be at most 512 characters, got %s', left(p_identifier_key, 64),
                       length(p_identifier))
    END,
    CASE WHEN p_audience_id IS NULL THEN 'data.audience_id: is required'
         WHEN p_audience_id = '' THEN 'data.audience_id: must be a non-empty string'
         WHEN length(p_audience_id) > 255
           THEN format('data.audience_id: must be at most 255 characters, got %s', length(p_audience_id))
    END,
    CASE WHEN p_ts IS NULL THEN NULL
         WHEN p_ts >= 100000000000
           THEN format('data.ts: %s looks like milliseconds, send seconds since the Unix epoch (%s)',
                       p_ts, round(p_ts / 1000, 3))
         WHEN p_ts < 946684800
           THEN format('data.ts: must be seconds since the Unix epoch, on or after 2000-01-01 (946684800), got %s', p_ts)
         WHEN p_ts > p_max_ts
           THEN format('data.ts: %s is later than the server clock allows (now + max_future_skew)', p_ts)
    END,
    CASE WHEN length(p_idempotence_id) > 255
      THEN format('data.idempotence_id: must be at most 255 characters, got %s', length(p_idempotence_id))
    END
  ], NULL);
$$;
COMMENT ON FUNCTION passthrough._event_problems(text, text, integer, text, boolean, text, text, numeric, numeric, text) IS
  'Private: every rule an event''s values break, as ''field: reason'' strings (empty when valid).';

-- The one test of an external audience id's form (the table's CHECK says the same).
CREATE FUNCTION passthrough._valid_audience_id(p_audience_id text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT p_audience_id <> '' AND length(p_audience_id) <= 255;
$$;
COMMENT ON FUNCTION passthrough._valid_audience_id(text) IS
  'Private: whether an external audience id is non-empty and at most 255 characters (NULL for NULL). Inlined by the planner.';

-- A cheap sufficient condition for an event to break none of the rules above (and for the transport to
-- have seen no problem): plain comparisons, no strings built. True implies _event_problems is empty;
-- false or NULL means "ask _event_problems", which has the final word. Keep the two in step.
CREATE FUNCTION passthrough._event_plainly_valid(
  p_transport_problems text[], p_type text, p_action text,
  p_identifier_count integer, p_identifier_high_confidence boolean,
  p_identifier text, p_audience_id text, p_ts numeric, p_max_ts numeric, p_idempotence_id text
) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT coalesce(cardinality(p_transport_problems), 0) = 0
     AND p_type = 'passthrough'
     AND p_action IN ('qualify', 'disqualify')
     AND p_identifier_count = 1
     AND p_identifier_high_confidence
     AND p_identifier <> '' AND length(p_identifier) <= 512
     AND passthrough._valid_audience_id(p_audience_id)
     AND (p_ts IS NULL OR (p_ts < 100000000000 AND p_ts >= 946684800 AND p_ts <= p_max_ts))
     AND (p_idempotence_id IS NULL OR length(p_idempotence_id) <= 255);
$$;
COMMENT ON FUNCTION passthrough._event_plainly_valid(text[], text, text, integer, boolean, text, text, numeric, numeric, text) IS
  'Private: true when an event plainly breaks no rule (a cheap test; when not true, passthrough._event_problems decides).';

-- The writer's input: this session's table of validated events, which a caller fills right before it
-- calls the writer (the bulk path straight from its staging table, without building arrays). The writer
-- empties it; ON COMMIT DELETE ROWS empties it in place (no TRUNCATE, no catalog change) at commit.
CREATE FUNCTION passthrough._incoming_table() RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  IF passthrough._session_table('passthrough_incoming') IS NULL THEN
    CREATE TEMPORARY TABLE passthrough_incoming (
      t smallint, i text COLLATE "C", a text COLLATE "C", q boolean, ts timestamptz, idem text,
      -- not an event: a pair a snapshot import hands the writer for its verdict only, never logged
      verdict_only boolean NOT NULL DEFAULT false
    ) ON COMMIT DELETE ROWS;
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._incoming_table() IS
  'Private: creates this session''s pg_temp.passthrough_incoming (the writer''s input) unless it exists; 42501 for one planted by anyone else.';

-- Snapshot imports and the writers of an audience exclude each other through an advisory lock on the
-- audience key in this lock space (sql/074_snapshots.sql says why).
CREATE FUNCTION passthrough._audience_lock_space() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT 1886650368;  -- 'pt' followed by two zero bytes, as an int4
$$;
COMMENT ON FUNCTION passthrough._audience_lock_space() IS
  'Private: the first key of the advisory locks that keep snapshot imports and writers of one audience apart; the second is the audience key (0: the lock of batches naming more than 256 audiences).';

-- The one writer of membership state. Callers put p_count validated events (and, for a snapshot import,
-- p_verdicts verdict-only rows) into pg_temp.passthrough_incoming (passthrough._incoming_table); one
-- statement logs the events, keeps the deciding input per pair, upserts it, and records size changes.
CREATE FUNCTION passthrough._apply_valid_events(p_source text, p_count bigint, p_verdicts bigint DEFAULT 0)
RETURNS passthrough.apply_result
LANGUAGE plpgsql
AS $$
DECLARE
  v_result       passthrough.apply_result;
  v_xid          xid8;
  v_audience_ids text[];
  v_keys         integer[];
BEGIN
  v_result := ROW(NULL, coalesce(p_count, 0), 0, 0);
  IF v_result.accepted = 0 AND coalesce(p_verdicts, 0) = 0 THEN
    RETURN v_result;
  END IF;
  v_xid := pg_current_xact_id();

  INSERT INTO passthrough.batches (source, event_count) VALUES (p_source, v_result.accepted)
  RETURNING id INTO v_result.batch_id;

  SELECT array_agg(x.a) INTO v_audience_ids FROM (SELECT DISTINCT u.a FROM pg_temp.passthrough_incoming u) x;
  -- Only ids not seen before: ON CONFLICT alone would burn an identity value per event.
  INSERT INTO passthrough.external_audiences (external_id)
  SELECT x.a FROM unnest(v_audience_ids) AS x(a)
  WHERE NOT EXISTS (SELECT 1 FROM passthrough.external_audiences e WHERE e.external_id = x.a)
  ORDER BY 1
  ON CONFLICT (external_id) DO NOTHING;
  -- A snapshot import decides every pair of its audience, so it must see every pair a batch writes: the
  -- batch holds its audiences' locks shared until it commits, an import takes its audience's exclusively.
  -- Taken before the writing statement, whose snapshot then shows any import that committed first. A batch
  -- naming more than 256 audiences takes one shared lock (key 0, which every import also takes) instead,
  -- so that it never fills the server's lock table.
  SELECT array_agg(e.id ORDER BY e.id) INTO v_keys
  FROM passthrough.external_audiences e WHERE e.external_id = ANY (v_audience_ids);
  IF cardinality(v_keys) > 256 THEN
    PERFORM pg_advisory_xact_lock_shared(passthrough._audience_lock_space(), 0);
  ELSE
    PERFORM pg_advisory_xact_lock_shared(passthrough._audience_lock_space(), k) FROM unnest(v_keys) AS x(k);
  END IF;

  WITH incoming AS MATERIALIZED (
    SELECT u.t, u.i COLLATE "C" AS i, e.id AS k, u.q, u.ts, u.idem, u.verdict_only,
           -- Whether the input can move its pair. The import of the audience's newest snapshot (at T) gave
           -- every pair the snapshot's verdict at T (sql/074_snapshots.sql), so an event before T, or a
           -- qualify at T, changes nothing: it is only logged. A disqualify at T wins the tie as usual.
           u.verdict_only OR e.snapshot_at IS NULL OR u.ts > e.snapshot_at OR (u.ts = e.snapshot_at AND NOT u.q)
             AS decides
    FROM pg_temp.passthrough_incoming u
    JOIN passthrough.external_audiences e ON e.external_id = u.a
    -- in key order: the log's identifier index and the upsert then touch neighbouring pages, and the
    -- dedupe sort below finds its input already sorted
    ORDER BY u.t, u.i COLLATE "C", e.id, u.ts DESC, u.q
  ), logged AS (
    INSERT INTO passthrough.events
      (batch_id, event_ts, identifier_type_id, audience_key, qualified, identifier, idempotence_id)
    SELECT v_result.batch_id, ts, t, k, q, i, idem FROM incoming WHERE NOT verdict_only
  ), latest AS (
    -- newest input per pair; on equal ts false (disqualify) sorts first and wins
    SELECT DISTINCT ON (t, i, k) t, i, k, q, ts FROM incoming WHERE decides ORDER BY t, i, k, ts DESC, q
  ), upserted AS (
    -- rows go in key order so that concurrent batches lock shared pairs in the same order
    INSERT INTO passthrough.memberships AS m
      (identifier_type_id, identifier, audience_key, qualified, event_ts, feed_pos)
    SELECT t, i, k, q, ts, v_xid FROM latest ORDER BY t, i, k
    ON CONFLICT (identifier_type_id, identifier, audience_key) DO UPDATE
      SET qualified = EXCLUDED.qualified, event_ts = EXCLUDED.event_ts,
          previous_event_ts = CASE WHEN m.qualified THEN m.event_ts END,
          -- the feed orders this version after the one it replaces, even one a later transaction wrote
          feed_pos = passthrough._feed_pos_after(m.feed_pos, v_xid),
          feed_level = passthrough._feed_level_after(m.feed_pos, m.feed_level, m.xmin, v_xid)
      WHERE EXCLUDED.event_ts > m.event_ts
         OR (EXCLUDED.event_ts = m.event_ts AND m.qualified AND NOT EXCLUDED.qualified)
    RETURNING identifier_type_id, identifier, audience_key, qualified, previous_event_ts IS NOT NULL AS previous_qualified,
              previous_event_ts, event_ts, feed_pos, feed_level
  ), lapsing AS (
    -- expiry (sql/077_expiry.sql): the previous qualify had run out before this event's ts, and the
    -- sweeper had not recorded it yet (it flips qualified when it does); this batch records it
    SELECT u.*, x.ttl,
           u.previous_qualified AND NOT passthrough._within_ttl(u.previous_event_ts, x.ttl, u.event_ts)
             AS lapsed
    FROM upserted u LEFT JOIN passthrough.audiences x ON x.audience_key = u.audience_key AND x.ttl IS NOT NULL
  ), moved AS (
    -- was_in: the state just before this event's ts
    SELECT l.*, l.previous_qualified AND NOT l.lapsed AS was_in FROM lapsing l
  ), feed AS (
    -- the change feed (sql/076_change_feed.sql): one row per transition at its version's feed position,
    -- cursor (pos, level, batch, ord); expiries come first, so a pair's expiry precedes its re-entry
    INSERT INTO passthrough.membership_changes
      (pos, level, batch_id, ord, identifier_type_id, audience_key, qualified, expired, event_ts, identifier)
    SELECT c.feed_pos, c.feed_level, v_result.batch_id, row_number() OVER (),
           c.identifier_type_id, c.audience_key, c.qualified, c.expired, c.event_ts, c.identifier
    FROM (SELECT identifier_type_id, audience_key, false AS qualified, true AS expired,
                 previous_event_ts + ttl AS event_ts, identifier, feed_pos, feed_level
          FROM moved WHERE lapsed
          UNION ALL
          SELECT identifier_type_id, audience_key, qualified, false, event_ts, identifier, feed_pos, feed_level
          FROM moved WHERE qualified <> was_in) AS c
  ), queued AS (
    -- qualify events of audiences with a ttl: the sweeper's work list
    INSERT INTO passthrough.membership_expiries (audience_key, event_ts, identifier_type_id, identifier)
    SELECT audience_key, event_ts, identifier_type_id, identifier
    FROM moved WHERE qualified AND ttl IS NOT NULL
  ), net AS (
    SELECT audience_key,
           sum(qualified::integer - previous_qualified::integer) AS delta,
           count(*) FILTER (WHERE qualified <> was_in)
             + count(*) FILTER (WHERE lapsed) AS transitions
    FROM moved GROUP BY audience_key
  ), folded AS (
    -- fold the size rows no other writer holds into this batch's row; SKIP LOCKED never waits
    DELETE FROM passthrough.audience_size_deltas d
    WHERE d.ctid = ANY (ARRAY(
      SELECT s.ctid FROM passthrough.audience_size_deltas s
      WHERE s.audience_key IN (SELECT audience_key FROM net WHERE delta <> 0)
      FOR UPDATE SKIP LOCKED))
    RETURNING d.audience_key, d.delta
  ), stored AS (
    INSERT INTO passthrough.audience_size_deltas (audience_key, delta)
    SELECT audience_key, sum(delta)
    FROM (SELECT audience_key, delta FROM net WHERE delta <> 0
          UNION ALL
          SELECT audience_key, delta FROM folded) AS x
    GROUP BY audience_key
    HAVING sum(delta) <> 0
  )
  SELECT coalesce(sum(transitions), 0)::integer INTO v_result.changed FROM net;
  IF v_result.changed > 0 THEN
    PERFORM pg_notify('passthrough_changes', '');  -- wakes change feed followers, once per batch
  END IF;

  -- emptied for a further call in this transaction: a big batch by TRUNCATE (a new file, and a catalog
  -- update that makes the next call plan again), a small one by DELETE (the table is emptied in place at commit)
  IF v_result.accepted >= 10000 THEN
    TRUNCATE pg_temp.passthrough_incoming;
  ELSE
    DELETE FROM pg_temp.passthrough_incoming;
  END IF;
  RETURN v_result;
END;
$$;
COMMENT ON FUNCTION passthrough._apply_valid_events(text, bigint, bigint) IS
  'Private: stores the validated events in pg_temp.passthrough_incoming as one batch: the input with the greatest ts decides each pair, an audience''s newest snapshot included.';

CREATE FUNCTION passthrough._raise_if_disabled() RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  IF NOT (SELECT passthrough_enabled FROM passthrough.settings) THEN
    RAISE EXCEPTION USING ERRCODE = 'PT002',
      MESSAGE = 'passthrough is disabled',
      DETAIL = 'Nothing was stored.',
      HINT = 'An operator enables it with SELECT passthrough.enable(); or the command: passthrough enable';
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._raise_if_disabled() IS 'Private: raises PT002 while passthrough is off.';

-- Batches Passthrough writes itself carry these sources; only the owner may write a batch that looks like one.
CREATE FUNCTION passthrough._check_source(p_source text, p_allowed text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  IF p_source IN ('expiry', 'snapshot') AND p_source IS DISTINCT FROM p_allowed
     AND NOT pg_catalog.pg_has_role(session_user,
                                    (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname = 'passthrough'),
                                    'USAGE') THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('source %s is reserved for the batches Passthrough writes itself', quote_literal(p_source)),
      DETAIL = 'field: source',
      HINT = 'Name your batches after where they come from, e.g. ''crm-nightly''.';
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._check_source(text, text) IS
  'Private: PT010 when a caller other than the owner names a reserved batch source (expiry, snapshot; p_allowed excepted).';

-- Public API keys ship inside web pages: unless an operator allows it, they may not change membership.
CREATE FUNCTION passthrough._check_key_scope(p_key_scope text) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  IF p_key_scope = 'public' AND NOT (SELECT s.public_passthrough_events FROM passthrough.settings s) THEN
    RAISE EXCEPTION USING ERRCODE = 'PT036',
      MESSAGE = 'a public API key may not send passthrough events',
      DETAIL = 'Nothing was stored. Public keys ship inside web pages, so anyone could qualify or disqualify anyone with one.',
      HINT = 'Send passthrough events with a private key; or, knowing the risk, allow public keys: passthrough settings set public_passthrough_events on (SQL: SELECT passthrough.set_setting(''public_passthrough_events'', ''on'')).';
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._check_key_scope(text) IS
  'Private: PT036 when the caller authenticated with a public API key and the settings do not let public keys send passthrough events.';

-- Raises PT001 for a batch with invalid events. p_invalid: [{"event", "message", "problems"}].
CREATE FUNCTION passthrough._raise_invalid_events(p_invalid jsonb, p_total integer) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = 'PT001',
    MESSAGE = format('batch refused: %s of %s events invalid; event %s: %s',
                     jsonb_array_length(p_invalid), p_total,
                     p_invalid->0->>'event', p_invalid->0->>'message'),
    DETAIL = p_invalid::text,
    HINT = 'Nothing from this batch was stored. DETAIL lists every invalid event as JSON [{"event": index, "message": ..., "problems": [...]}]; fix them and resend the batch.';
END;
$$;
COMMENT ON FUNCTION passthrough._raise_invalid_events(jsonb, integer) IS
  'Private: raises PT001 with every invalid event listed as JSON in DETAIL.';

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

  WITH raw AS (
    SELECT (x.o - 1)::integer AS pos, x.e,
           jsonb_typeof(x.e) AS kind,
           x.e->'identifiers' AS ids, x.e->'data' AS data
    FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(e, o)
  ), fields AS MATERIALIZED (
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
  ), keyed AS MATERIALIZED (
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
