-- Reading the change feed (its order: sql/functions/070_feed_position.sql), and starting it over.

CREATE FUNCTION passthrough.changes(p_after text DEFAULT NULL, p_limit integer DEFAULT NULL)
RETURNS TABLE (cursor text, change text, identifier_type text, identifier text, audience_id text,
               audience text, event_ts timestamptz, received_at timestamptz, source text, batch_id bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_after record;
  v_limit integer := coalesce(p_limit, 1000);  -- NULL: the default, here only (GET /v3/changes passes NULL)
BEGIN
  SELECT * INTO v_after FROM passthrough._parse_change_cursor(p_after);
  PERFORM passthrough._check_cursor_retained(v_after.o_pos, v_after.o_level, v_after.o_batch_id, v_after.o_ord);
  PERFORM passthrough._check_limit(v_limit, 10000);
  -- One statement, so the rows and the xmin come from the same snapshot.
  RETURN QUERY
    SELECT format('%s-%s-%s-%s', c.pos, c.level, c.batch_id, c.ord),
           CASE WHEN c.qualified THEN 'entered' WHEN c.expired THEN 'expired' ELSE 'exited' END,
           t.name::text, c.identifier::text, e.external_id::text, a.name::text,
           c.event_ts, b.received_at, b.source, c.batch_id
    FROM passthrough.membership_changes c
    JOIN passthrough.identifier_types t ON t.id = c.identifier_type_id
    JOIN passthrough.external_audiences e ON e.id = c.audience_key
    LEFT JOIN passthrough.audiences a ON a.audience_key = c.audience_key
    LEFT JOIN passthrough.batches b ON b.id = c.batch_id
    WHERE (c.pos, c.level, c.batch_id, c.ord) > (v_after.o_pos, v_after.o_level, v_after.o_batch_id, v_after.o_ord)
      AND c.pos < passthrough._feed_horizon()
    ORDER BY c.pos, c.level, c.batch_id, c.ord
    LIMIT v_limit;
END;
$$;
COMMENT ON FUNCTION passthrough.changes(text, integer) IS
  'The next changes of the feed after cursor p_after (from the start when NULL), at most p_limit (1 to 10000; NULL for 1000), in feed order: change is entered, exited or expired (a ttl ran out; event_ts is when). Resuming from the last row''s cursor never misses a change nor repeats one, whatever order transactions commit in, and each pair''s changes come in the order its state changed, so replaying them ends in its state; a change shows once every older transaction has finished. PT030 for a malformed cursor, PT032 for one older than the pruned part of the feed, PT010 for a limit out of range.';

CREATE FUNCTION passthrough.current_change_cursor() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT format('%s-0-0-0', passthrough._feed_horizon());
$$;
COMMENT ON FUNCTION passthrough.current_change_cursor() IS
  'A cursor at the end of the feed as readable now: passthrough.changes() after it returns only changes not yet readable at this moment (to follow the feed from now on).';

CREATE FUNCTION passthrough.changes_pending() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT EXISTS (SELECT 1 FROM passthrough.membership_changes c
                 WHERE c.pos >= passthrough._feed_horizon());
$$;
COMMENT ON FUNCTION passthrough.changes_pending() IS
  'Whether committed changes wait to be readable in the feed because an older transaction is still open (followers then check again later instead of waiting for a notification).';

-- After a restore into another cluster the transaction counter starts again below the positions the feed
-- and the membership rows hold: new changes would sort before old ones and stay unreadable until the
-- counter passed them. This starts the feed over from the state (docs/dba.md, Backup).
CREATE FUNCTION passthrough.restart_change_feed() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_dropped bigint;
BEGIN
  DELETE FROM passthrough.membership_changes;
  GET DIAGNOSTICS v_dropped = ROW_COUNT;
  UPDATE passthrough.memberships SET feed_pos = '0'::xid8, feed_level = 0
  WHERE feed_pos <> '0'::xid8 OR feed_level <> 0;
  UPDATE passthrough.settings SET feed_pruned_through = NULL;
  UPDATE passthrough.webhooks SET feed_cursor = NULL WHERE feed_cursor IS NOT NULL;
  RETURN v_dropped;
END;
$$;
COMMENT ON FUNCTION passthrough.restart_change_feed() IS
  'Empties the change feed and resets every feed position and webhook cursor, so that the feed starts over from the current state; returns how many changes were dropped. Run it after restoring a dump into another cluster (its transaction ids start again lower); consumers then resynchronise from the membership state. Rewrites every membership row.';
