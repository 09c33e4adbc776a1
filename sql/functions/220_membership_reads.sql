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
  IF NOT passthrough._memberships_distributed() THEN
    RETURN QUERY
      SELECT a.name::text, 'qualified'::text, a.description, true, a.revision,
             passthrough._audience_size(a.audience_key), e.external_id::text, m.event_ts
      FROM passthrough.memberships m
      JOIN passthrough.audiences a ON a.audience_key = m.audience_key
      JOIN passthrough.external_audiences e ON e.id = m.audience_key
      WHERE m.identifier_type_id = v_type_id
        AND m.identifier = p_identifier
        AND m.qualified
        AND passthrough._within_ttl(m.event_ts, a.ttl, now())  -- expiry, evaluated at read time (sql/functions/100_expiry.sql)
        AND (p_subset IS NULL OR a.name = ANY (p_subset))
      ORDER BY a.name;
    RETURN;
  END IF;
  -- On a Citus cluster (passthrough.distribute()) the same answer in two statements: Citus would run the one
  -- above on the customer's worker, sizes included, and the size deltas are the coordinator's. So the
  -- customer's rows first (one shard's query), then the rest on the coordinator. On one server the two
  -- statements took 2.5 to 3 times as long as the one (docs/scale-out.md), hence the two forms.
  SELECT array_agg(m.audience_key), array_agg(m.event_ts) INTO v_keys, v_times
  FROM passthrough.memberships m
  WHERE m.identifier_type_id = v_type_id AND m.identifier = p_identifier AND m.qualified;
  RETURN QUERY
    SELECT a.name::text, 'qualified'::text, a.description, true, a.revision,
           passthrough._audience_size(a.audience_key), e.external_id::text, m.event_ts
    FROM unnest(v_keys, v_times) AS m(audience_key, event_ts)
    JOIN passthrough.audiences a ON a.audience_key = m.audience_key
    JOIN passthrough.external_audiences e ON e.id = m.audience_key
    WHERE passthrough._within_ttl(m.event_ts, a.ttl, now())
      AND (p_subset IS NULL OR a.name = ANY (p_subset))
    ORDER BY a.name;
END;
$$;
COMMENT ON FUNCTION passthrough.customer_audiences(text, text, text[]) IS
  'The defined audiences (of p_subset, or all when NULL) that the customer is qualified for (the newest event is a qualify, younger than the audience''s ttl if it has one), with state ''qualified'' and exact sizes. PT003 for an unknown identifier type or an empty identifier; an identifier with no memberships, or of a low-confidence type (vuid: it keys no membership), gives no rows.';
