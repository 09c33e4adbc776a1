-- The page and chunk size check.

-- Shared by the feed, the expiry sweeper, retention pruning and the snapshot diff: every call that works in
-- pages or chunks.
CREATE FUNCTION passthrough._check_limit(p_limit integer, p_max integer, p_min integer DEFAULT 1,
                                         p_field text DEFAULT 'limit') RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  IF p_limit IS NULL OR p_limit < p_min OR p_limit > p_max THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('%s must be between %s and %s, got %s', p_field, p_min, p_max, coalesce(p_limit::text, 'NULL')),
      DETAIL = 'field: ' || p_field;
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._check_limit(integer, integer, integer, text) IS
  'Private: PT010 naming the field p_field (default limit) unless p_min <= p_limit <= p_max.';
