-- The rules a passthrough event must meet, whatever transport brought it (apply_events, bulk loads and
-- snapshot imports all check them here).

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
         WHEN p_ts >= 100000000000 AND p_ts < 100000000000000  -- milliseconds up to the year 5138
           THEN format('data.ts: %s looks like milliseconds, send seconds since the Unix epoch (%s)',
                       passthrough._number_in_message(p_ts), round(p_ts / 1000, 3))
         WHEN p_ts < 946684800
           THEN format('data.ts: must be seconds since the Unix epoch, on or after 2000-01-01 (946684800), got %s',
                       passthrough._number_in_message(p_ts))
         WHEN p_ts > p_max_ts OR p_ts >= 100000000000  -- the second: whatever the skew (an infinite one on 17+)
           THEN format('data.ts: %s is later than the server clock allows (now + max_future_skew)',
                       passthrough._number_in_message(p_ts))
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
