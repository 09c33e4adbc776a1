-- The expiry sweeper on a Citus cluster (docs/scale-out.md, Citus; the rules: sql/functions/100_expiry.sql).
--
-- Citus runs no FOR UPDATE SKIP LOCKED over shards and no ctid self-join, so the due rows are read without
-- locks, by key, and the flip waits for a writer that holds a pair instead of skipping it: once it has the
-- row, a pair the writer renewed no longer matches (its event_ts moved on, and that writer recorded the lapse), so every due row read
-- is done with, flipped or stale, and is deleted. Two sweepers may read the same rows: only the one whose
-- update finds the pair still qualified records its expiry.
CREATE FUNCTION passthrough._expire_due_distributed(p_audience_key integer, p_limit integer) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  v_batch_id bigint;
  v_count    integer;
  v_xid      xid8;
  v_moved    passthrough.moved_version[];
BEGIN
  IF passthrough._session_table('passthrough_due') IS NULL THEN
    CREATE TEMPORARY TABLE passthrough_due (
      audience_key integer, event_ts timestamptz, identifier_type_id smallint, identifier text COLLATE "C",
      ttl interval
    ) ON COMMIT DELETE ROWS;
  ELSE
    DELETE FROM pg_temp.passthrough_due;
  END IF;

  INSERT INTO pg_temp.passthrough_due
  SELECT q.audience_key, q.event_ts, q.identifier_type_id, q.identifier, a.ttl
  FROM passthrough.membership_expiries q
  JOIN passthrough.audiences a ON a.audience_key = q.audience_key
  WHERE a.ttl IS NOT NULL AND q.event_ts <= now() - a.ttl
    AND (p_audience_key IS NULL OR a.audience_key = p_audience_key)
  LIMIT p_limit;
  IF NOT FOUND THEN
    RETURN 0;
  END IF;

  INSERT INTO passthrough.batches (source, event_count) VALUES ('expiry', 0) RETURNING id INTO v_batch_id;
  v_xid := pg_current_xact_id();
  WITH flipped AS (
    UPDATE passthrough.memberships m
    SET qualified = false, previous_event_ts = m.event_ts,
        feed_pos = passthrough._feed_pos_after(m.feed_pos, v_xid),
        feed_level = passthrough._feed_level_after(m.feed_pos, m.feed_level, NULL, v_xid)
    FROM pg_temp.passthrough_due d
    WHERE m.identifier_type_id = d.identifier_type_id AND m.identifier = d.identifier
      AND m.audience_key = d.audience_key AND m.event_ts = d.event_ts AND m.qualified
    RETURNING m.identifier_type_id, m.identifier, m.audience_key, m.qualified, m.previous_event_ts, m.event_ts,
              m.feed_pos, m.feed_level, d.ttl
  )
  -- as on one server (sql/functions/100_expiry.sql)
  SELECT array_agg(ROW(f.identifier_type_id, f.identifier, f.audience_key, f.qualified, f.previous_event_ts,
                       f.event_ts + f.ttl, f.feed_pos, f.feed_level, f.ttl)::passthrough.moved_version
                   ORDER BY f.event_ts + f.ttl)
  INTO v_moved
  FROM flipped f;

  DELETE FROM passthrough.membership_expiries q
  USING pg_temp.passthrough_due d
  WHERE q.audience_key = d.audience_key AND q.event_ts = d.event_ts
    AND q.identifier_type_id = d.identifier_type_id AND q.identifier = d.identifier;

  v_count := passthrough._record_moves(v_batch_id, v_moved);

  IF v_count = 0 THEN
    DELETE FROM passthrough.batches WHERE id = v_batch_id;
  ELSE
    PERFORM pg_notify('passthrough_changes', '');
  END IF;
  RETURN v_count;
END;
$$;
COMMENT ON FUNCTION passthrough._expire_due_distributed(integer, integer) IS
  'Private: passthrough._expire_due on a Citus cluster: records up to p_limit due expiries (of one audience, or all when NULL) as one batch, waiting for a writer that holds a pair rather than skipping it. Returns how many.';
