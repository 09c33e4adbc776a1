-- Reading membership: which of these audiences is this customer in?

CREATE FUNCTION passthrough.customer_audiences(
  p_identifier_type text, p_identifier text, p_subset text[] DEFAULT NULL
) RETURNS TABLE (name text, state text, description text, is_ready boolean, revision integer, size bigint,
                 external_audience_id text, event_ts timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_type_id smallint := passthrough._identifier_type_id_for_read(p_identifier_type, p_identifier);
  v_keys    integer[];
  v_times   timestamptz[];
BEGIN
  PERFORM passthrough._check_subset(p_subset);
  -- the customer's rows first, in a statement of their own: on a Citus cluster that is one shard's query, and
  -- the sizes are then added up on the coordinator, which holds the size deltas (docs/scale-out.md, Citus)
  SELECT array_agg(m.audience_key), array_agg(m.event_ts) INTO v_keys, v_times
  FROM passthrough.memberships m
  WHERE m.identifier_type_id = v_type_id AND m.identifier = p_identifier AND m.qualified;
  RETURN QUERY
    SELECT a.name::text, 'qualified'::text, a.description, true, a.revision,
           passthrough._audience_size(a.audience_key), e.external_id::text, m.event_ts
    FROM unnest(v_keys, v_times) AS m(audience_key, event_ts)
    JOIN passthrough.audiences a ON a.audience_key = m.audience_key
    JOIN passthrough.external_audiences e ON e.id = m.audience_key
    WHERE passthrough._within_ttl(m.event_ts, a.ttl, now())  -- expiry, evaluated at read time (sql/functions/100_expiry.sql)
      AND (p_subset IS NULL OR a.name = ANY (p_subset))
    ORDER BY a.name;
END;
$$;
COMMENT ON FUNCTION passthrough.customer_audiences(text, text, text[]) IS
  'The defined audiences (of p_subset, or all when NULL) that the customer is qualified for (the newest event is a qualify, younger than the audience''s ttl if it has one), with state ''qualified'' and exact sizes. PT003 for an unknown identifier type or an empty identifier; an identifier with no memberships, or of a low-confidence type (vuid: it keys no membership), gives no rows.';
