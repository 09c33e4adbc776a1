-- Operator settings: one row, typed columns.

CREATE TABLE passthrough.settings (
  singleton           boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
  passthrough_enabled boolean     NOT NULL DEFAULT false,
  max_future_skew     interval    NOT NULL DEFAULT interval '1 day'
                                  CHECK (max_future_skew >= interval '0'),
  event_retention     interval    CHECK (event_retention > interval '0'),
  history_horizon     timestamptz,
  feed_pruned_through text,
  updated_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE passthrough.settings IS
  'Operator settings (exactly one row). Change them through passthrough.enable(), passthrough.disable() and passthrough.set_max_future_skew().';
COMMENT ON COLUMN passthrough.settings.passthrough_enabled IS
  'Whether passthrough events are accepted. False after install: an operator turns it on.';
COMMENT ON COLUMN passthrough.settings.event_retention IS
  'How long the event log and the change feed are kept (NULL: for ever); passthrough.prune_history() applies it (sql/079_retention.sql).';
COMMENT ON COLUMN passthrough.settings.history_horizon IS
  'The oldest instant point-in-time answers are exact for, once the event log has been pruned (NULL: all of it).';
COMMENT ON COLUMN passthrough.settings.feed_pruned_through IS
  'Cursor of the newest change pruned from the feed (NULL: none); a consumer behind it has missed changes.';
COMMENT ON COLUMN passthrough.settings.max_future_skew IS
  'How far ahead of the server clock an event''s ts may be; later timestamps are refused.';

INSERT INTO passthrough.settings DEFAULT VALUES;

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
  'Sets how far ahead of the server clock an event''s ts may be (default 1 day).';

CREATE FUNCTION passthrough.get_settings()
RETURNS TABLE (passthrough_enabled boolean, max_future_skew interval, updated_at timestamptz,
               event_retention interval, history_horizon timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT s.passthrough_enabled, s.max_future_skew, s.updated_at, s.event_retention, s.history_horizon
  FROM passthrough.settings s;
$$;
COMMENT ON FUNCTION passthrough.get_settings() IS 'The operator settings, as one row.';
