-- The history horizon: the oldest instant a point-in-time read may ask about once retention pruned the
-- log (sql/functions/240_retention.sql moves it).

CREATE FUNCTION passthrough._check_horizon(p_at timestamptz, p_field text) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_horizon timestamptz := (SELECT s.history_horizon FROM passthrough.settings s);
BEGIN
  IF p_at < v_horizon THEN
    RAISE EXCEPTION USING ERRCODE = 'PT031',
      MESSAGE = format('%s is before the history horizon %s: older events were pruned', p_field, v_horizon),
      DETAIL = format('field: %s', p_field),
      HINT = 'The event log is kept for passthrough.get_settings().event_retention; ask about a later time.';
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._check_horizon(timestamptz, text) IS
  'Private: PT031 when p_at is older than the pruned event log can answer for.';
