-- Time arguments: seconds since the Unix epoch, and instants a read is asked about.

-- A number as a message shows it: as written when short, else in scientific notation. numeric holds up to
-- 131,072 digits before the point and 16,383 after it; a hostile ts (or snapshot time, or share) must not put them
-- all into a message.
CREATE FUNCTION passthrough._number_in_message(p_value numeric) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE  -- to_char is stable; inlined into the event rules' messages
AS $$
  SELECT CASE WHEN length(p_value::text) <= 40 THEN p_value::text
              ELSE ltrim(to_char(p_value, '9.999999EEEE')) END;
$$;
COMMENT ON FUNCTION passthrough._number_in_message(numeric) IS
  'Private: a number as an error message shows it: its text when at most 40 characters, else scientific notation (1.000000e+131071).';

-- Exact conversion of decimal seconds to a timestamp, to the microsecond (float8 would round).
CREATE FUNCTION passthrough._ts_from_seconds(p_seconds numeric) RETURNS timestamptz
-- STABLE because timestamptz + interval is: a function is only inlined into the calling query when its
-- body is no more volatile than its declaration (inlined: ~0.5 us a row; called: ~3 us).
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT timestamptz '1970-01-01 00:00:00+00'
         + round(p_seconds * 1000000)::bigint * interval '1 microsecond';
$$;
COMMENT ON FUNCTION passthrough._ts_from_seconds(numeric) IS
  'Private: seconds since the Unix epoch (decimal) to timestamptz, rounded to the microsecond.';

-- The same conversion for a time a caller asks about (GraphQL's at, from and to; the members route's and
-- passthrough export's at): one rule, so an instant asked about reads the same as the same ts in an event. Public
-- (the reader role may call it: passthrough export runs as any role), and a value no timestamp holds is PT010
-- naming the caller's field, not a bare overflow.
CREATE FUNCTION passthrough.instant_from_seconds(p_seconds numeric, p_field text DEFAULT 'at') RETURNS timestamptz
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF p_seconds IS NULL THEN
    RETURN NULL;
  END IF;
  IF p_seconds IN ('NaN', 'Infinity', '-Infinity') THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('%s must be seconds since the Unix epoch, got %s', p_field, p_seconds),
      DETAIL = format('field: %s', p_field);
  END IF;
  BEGIN
    RETURN passthrough._ts_from_seconds(p_seconds);
  EXCEPTION WHEN numeric_value_out_of_range OR datetime_field_overflow THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('%s must be seconds since the Unix epoch, got %s', p_field,
                       passthrough._number_in_message(p_seconds)),
      DETAIL = format('field: %s', p_field),
      HINT = 'No timestamp holds it: PostgreSQL''s timestamps run from 4713 BC to 294276 AD.';
  END;
END;
$$;
COMMENT ON FUNCTION passthrough.instant_from_seconds(numeric, text) IS
  'Seconds since the Unix epoch (decimal) to timestamptz, rounded to the microsecond half away from zero, as an event''s ts is read; NULL for NULL; PT010 naming p_field for a value no timestamp holds.';

CREATE FUNCTION passthrough._check_instant(p_at timestamptz, p_field text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  IF p_at IS NULL OR NOT isfinite(p_at) THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('%s must be a finite point in time, got %s', p_field, coalesce(p_at::text, 'NULL')),
      DETAIL = format('field: %s', p_field);
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._check_instant(timestamptz, text) IS 'Private: PT010 unless p_at is a finite timestamp.';
