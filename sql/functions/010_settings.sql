-- Operator settings: read and change the one row of passthrough.settings.

CREATE FUNCTION passthrough.enable() RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  UPDATE passthrough.settings SET passthrough_enabled = true, updated_at = now();
$$;
COMMENT ON FUNCTION passthrough.enable() IS
  'Turns passthrough on: events are accepted from now on.';

CREATE FUNCTION passthrough.disable() RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  UPDATE passthrough.settings SET passthrough_enabled = false, updated_at = now();
$$;
COMMENT ON FUNCTION passthrough.disable() IS
  'Turns passthrough off: events are refused (SQLSTATE PT002) until passthrough.enable().';

-- PL/pgSQL on purpose: /readyz calls it, so readiness exercises the language every write goes through (a
-- server whose PL/pgSQL library cannot be loaded, e.g. after its binaries were upgraded under it, is not ready).
CREATE FUNCTION passthrough.is_enabled() RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN (SELECT s.passthrough_enabled FROM passthrough.settings s);
END;
$$;
COMMENT ON FUNCTION passthrough.is_enabled() IS 'Whether passthrough events are accepted now.';

CREATE FUNCTION passthrough.set_max_future_skew(p_skew interval) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF p_skew IS NULL OR p_skew < interval '0' THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = 'max_future_skew must be a non-negative interval',
      DETAIL = format('got %s', coalesce(p_skew::text, 'NULL')),
      HINT = 'For example: SELECT passthrough.set_max_future_skew(interval ''1 hour'').';
  END IF;
  UPDATE passthrough.settings SET max_future_skew = p_skew, updated_at = now();
END;
$$;
COMMENT ON FUNCTION passthrough.set_max_future_skew(interval) IS
  'Sets how far ahead of the server clock an event''s ts may be (default 5 minutes).';

CREATE FUNCTION passthrough.set_event_retention(p_retention interval) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF p_retention <= interval '0' THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('event_retention must be a positive interval or NULL, got %s', p_retention),
      DETAIL = 'field: event_retention',
      HINT = 'For example: SELECT passthrough.set_event_retention(interval ''90 days''); NULL keeps everything.';
  END IF;
  UPDATE passthrough.settings SET event_retention = p_retention, updated_at = now();
END;
$$;
COMMENT ON FUNCTION passthrough.set_event_retention(interval) IS
  'Sets how long events and feed changes are kept (NULL, the default: for ever). Nothing is deleted until passthrough.prune_history() runs. PT010 for an interval that is not positive.';

CREATE FUNCTION passthrough.get_settings()
RETURNS TABLE (passthrough_enabled boolean, max_future_skew interval, updated_at timestamptz,
               event_retention interval, history_horizon timestamptz, public_passthrough_events boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT s.passthrough_enabled, s.max_future_skew, s.updated_at, s.event_retention, s.history_horizon,
         s.public_passthrough_events
  FROM passthrough.settings s;
$$;
COMMENT ON FUNCTION passthrough.get_settings() IS 'The operator settings, as one row.';

-- The settings an operator changes, by name, for `passthrough settings` (and anyone else who lists them).
CREATE FUNCTION passthrough.list_settings() RETURNS TABLE (name text, value text, description text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT x.name, x.value, x.description
  FROM passthrough.settings s,
       LATERAL (VALUES
         ('passthrough_enabled', CASE WHEN s.passthrough_enabled THEN 'on' ELSE 'off' END,
          'whether passthrough events are accepted (on, off)'),
         ('public_passthrough_events', CASE WHEN s.public_passthrough_events THEN 'on' ELSE 'off' END,
          'whether public API keys, which ship inside web pages, may send passthrough events (on, off)'),
         ('max_future_skew', s.max_future_skew::text,
          'how far ahead of the server clock an event''s ts may be (an interval)'),
         ('event_retention', coalesce(s.event_retention::text, 'none'),
          'how long events and feed changes are kept (an interval, or none: for ever)')
       ) AS x(name, value, description);
$$;
COMMENT ON FUNCTION passthrough.list_settings() IS
  'Every setting passthrough.set_setting() changes: its name, its value as text and what it means.';

CREATE FUNCTION passthrough._setting_interval(p_name text, p_value text) RETURNS interval
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  RETURN p_value::interval;
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
  RAISE EXCEPTION USING ERRCODE = 'PT010',
    MESSAGE = format('%s must be an interval such as ''5 minutes'', got %s', p_name,
                     coalesce(quote_literal(left(p_value, 64)), 'NULL')),
    DETAIL = 'field: value';
END;
$$;
COMMENT ON FUNCTION passthrough._setting_interval(text, text) IS
  'Private: a setting''s text value as an interval, or PT010 naming the setting.';

CREATE FUNCTION passthrough.set_setting(p_name text, p_value text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_on boolean;
BEGIN
  IF p_name IN ('passthrough_enabled', 'public_passthrough_events') THEN
    v_on := CASE lower(p_value) WHEN 'on' THEN true WHEN 'true' THEN true WHEN 'off' THEN false
                                WHEN 'false' THEN false END;
    IF v_on IS NULL THEN
      RAISE EXCEPTION USING ERRCODE = 'PT010',
        MESSAGE = format('%s must be on or off, got %s', p_name, coalesce(quote_literal(left(p_value, 64)), 'NULL')),
        DETAIL = 'field: value';
    END IF;
    IF p_name = 'passthrough_enabled' AND v_on THEN
      PERFORM passthrough.enable();
    ELSIF p_name = 'passthrough_enabled' THEN
      PERFORM passthrough.disable();
    ELSE
      UPDATE passthrough.settings SET public_passthrough_events = v_on, updated_at = now();
    END IF;
  ELSIF p_name = 'max_future_skew' THEN
    PERFORM passthrough.set_max_future_skew(passthrough._setting_interval(p_name, p_value));
  ELSIF p_name = 'event_retention' THEN
    PERFORM passthrough.set_event_retention(
      CASE WHEN lower(p_value) = 'none' THEN NULL ELSE passthrough._setting_interval(p_name, p_value) END);
  ELSE
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('unknown setting %s', coalesce(quote_literal(left(p_name, 64)), 'NULL')),
      DETAIL = 'field: name',
      HINT = 'passthrough.list_settings() lists them: passthrough_enabled, public_passthrough_events, max_future_skew, event_retention.';
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough.set_setting(text, text) IS
  'Changes one setting by name (passthrough.list_settings() lists them), its value as text: on or off, an interval such as ''5 minutes'', or none for no retention. PT010 for an unknown name or a value it cannot be.';
