-- An audience's latest entries and exits, newest first: what the console (GET /console) shows for one audience.
-- A look, not a feed to follow: it answers what is committed now, with no cursor to resume from
-- (passthrough.changes is the feed, sql/functions/210_change_feed.sql).

CREATE FUNCTION passthrough.audience_recent_changes(p_audience text, p_limit integer DEFAULT NULL)
RETURNS TABLE (change text, identifier_type text, identifier text, event_ts timestamptz, received_at timestamptz,
               source text, batch_id bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_key   integer := passthrough._audience_key_for_read(p_audience);
  v_limit integer := coalesce(p_limit, 50);  -- NULL: the default, here only
BEGIN
  PERFORM passthrough._check_limit(v_limit, 1000);
  -- Backwards along the feed's primary key until p_limit rows of the audience are found: quick for an audience
  -- that changes often; one that rarely changes reads back through the retained feed (there is no index by
  -- audience, which every write would pay for).
  RETURN QUERY
    SELECT CASE WHEN c.qualified THEN 'entered' WHEN c.expired THEN 'expired' ELSE 'exited' END,
           t.name::text, c.identifier::text, c.event_ts, b.received_at, b.source, c.batch_id
    FROM passthrough.membership_changes c
    JOIN passthrough.identifier_types t ON t.id = c.identifier_type_id
    LEFT JOIN passthrough.batches b ON b.id = c.batch_id
    WHERE c.audience_key = v_key
    ORDER BY c.pos DESC, c.level DESC, c.batch_id DESC, c.ord DESC
    LIMIT v_limit;
END;
$$;
COMMENT ON FUNCTION passthrough.audience_recent_changes(text, integer) IS
  'The latest p_limit (1 to 1000; NULL for 50) entries and exits of a defined audience, newest first in the change feed''s order (the order its memberships changed): change is entered, exited or expired (a ttl ran out; event_ts is when), with the identifier, the deciding event''s ts, and its batch''s received_at, source and id. What is committed now, whatever older transactions are still open; changes pruned with the history are gone. PT006 for an unknown audience, PT010 for a limit out of range.';
