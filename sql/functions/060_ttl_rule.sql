-- The expiry rule, in one place: a qualify event at p_event_ts still counts at p_at. The sweeper's "due"
-- tests (sql/functions/100_expiry.sql) are its negation for a non-NULL ttl, written as
-- event_ts <= now() - ttl so that they range-scan the work list's primary key.
CREATE FUNCTION passthrough._within_ttl(p_event_ts timestamptz, p_ttl interval, p_at timestamptz)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT p_ttl IS NULL OR p_event_ts > p_at - p_ttl;
$$;
COMMENT ON FUNCTION passthrough._within_ttl(timestamptz, interval, timestamptz) IS
  'Private: whether a qualify event at p_event_ts still keeps its member at p_at under ttl p_ttl (NULL: no ttl, always). Inlined by the planner.';
