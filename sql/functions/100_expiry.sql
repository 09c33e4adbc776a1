-- Expiry: an audience may carry a ttl; a membership whose deciding qualify event is older than the ttl
-- counts as not qualified. Reads evaluate it at read time (no sweeper is needed for a correct answer);
-- the sweeper, passthrough.expire_memberships(), records each expiry in the change feed at its real time
-- (the qualify event's ts + the ttl) and flips the stored state. A writer that renews a membership whose
-- expiry is not recorded yet records it itself, so the feed misses none: both record what they moved through
-- passthrough._record_moves (sql/functions/093_recorded_moves.sql).

-- PL/pgSQL rather than SQL: Citus cannot plan a SQL function's parameterized statement on its tables.
CREATE FUNCTION passthrough._expired_unswept(p_audience_key integer) RETURNS bigint
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  -- most audiences have no ttl: answered without the join, which on a Citus cluster would ask every shard
  IF NOT EXISTS (SELECT 1 FROM passthrough.audiences a WHERE a.audience_key = p_audience_key AND a.ttl IS NOT NULL) THEN
    RETURN 0;
  END IF;
  RETURN (
    SELECT count(*)
    FROM passthrough.audiences a
    JOIN passthrough.membership_expiries q ON q.audience_key = a.audience_key
    JOIN passthrough.memberships m
      ON m.identifier_type_id = q.identifier_type_id AND m.identifier = q.identifier
     AND m.audience_key = q.audience_key AND m.event_ts = q.event_ts
    WHERE a.audience_key = p_audience_key AND a.ttl IS NOT NULL
      AND q.event_ts <= now() - a.ttl AND m.qualified);
END;
$$;
COMMENT ON FUNCTION passthrough._expired_unswept(integer) IS
  'Private: how many stored-as-qualified memberships of an audience have expired and are not recorded yet (the sweeper has not reached them); sizes subtract it.';

CREATE FUNCTION passthrough._expire_due(p_audience_key integer, p_limit integer) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  v_work     tid[];
  v_batch_id bigint;
  v_count    integer;
  v_xid      xid8;
  v_moved    passthrough.moved_version[];
BEGIN
  IF passthrough._memberships_distributed() THEN  -- a Citus cluster: the same rules, in steps Citus can plan
    RETURN passthrough._expire_due_distributed(p_audience_key, p_limit);
  END IF;
  -- due work-list rows made stale by a newer event: dropped, they decide nothing
  DELETE FROM passthrough.membership_expiries d
  WHERE d.ctid = ANY (ARRAY(
    SELECT q.ctid
    FROM passthrough.audiences a
    JOIN passthrough.membership_expiries q ON q.audience_key = a.audience_key
    WHERE a.ttl IS NOT NULL AND q.event_ts <= now() - a.ttl
      AND (p_audience_key IS NULL OR a.audience_key = p_audience_key)
      AND NOT EXISTS (SELECT 1 FROM passthrough.memberships m
                      WHERE m.identifier_type_id = q.identifier_type_id AND m.identifier = q.identifier
                        AND m.audience_key = q.audience_key AND m.event_ts = q.event_ts AND m.qualified)
    LIMIT p_limit
    FOR UPDATE OF q SKIP LOCKED));

  -- due rows that still decide their membership, which no other sweeper holds; SKIP LOCKED never waits
  SELECT array_agg(s.ctid) INTO v_work FROM (
    SELECT q.ctid
    FROM passthrough.audiences a
    JOIN passthrough.membership_expiries q ON q.audience_key = a.audience_key
    JOIN passthrough.memberships m
      ON m.identifier_type_id = q.identifier_type_id AND m.identifier = q.identifier
     AND m.audience_key = q.audience_key AND m.event_ts = q.event_ts
    WHERE a.ttl IS NOT NULL AND q.event_ts <= now() - a.ttl AND m.qualified
      AND (p_audience_key IS NULL OR a.audience_key = p_audience_key)
    LIMIT p_limit
    FOR UPDATE OF q SKIP LOCKED) s;
  IF v_work IS NULL THEN
    RETURN 0;
  END IF;

  INSERT INTO passthrough.batches (source, event_count) VALUES ('expiry', 0) RETURNING id INTO v_batch_id;
  v_xid := pg_current_xact_id();
  WITH due AS (
    SELECT q.ctid AS q_ctid, q.identifier_type_id, q.identifier, q.audience_key, q.event_ts, a.ttl
    FROM passthrough.membership_expiries q
    JOIN passthrough.audiences a ON a.audience_key = q.audience_key
    WHERE q.ctid = ANY (v_work) AND a.ttl IS NOT NULL AND q.event_ts <= now() - a.ttl
  ), candidates AS (
    SELECT d.q_ctid
    FROM due d JOIN passthrough.memberships m
      ON m.identifier_type_id = d.identifier_type_id AND m.identifier = d.identifier
     AND m.audience_key = d.audience_key AND m.event_ts = d.event_ts
    WHERE m.qualified
  ), locked AS (
    -- a membership a writer holds is skipped: that writer records the expiry if it renews the pair,
    -- and its work-list row stays for the next sweep if it does not
    SELECT m.ctid AS m_ctid, d.q_ctid, d.ttl
    FROM passthrough.memberships m JOIN due d
      ON m.identifier_type_id = d.identifier_type_id AND m.identifier = d.identifier
     AND m.audience_key = d.audience_key AND m.event_ts = d.event_ts
    WHERE m.qualified
    ORDER BY m.identifier_type_id, m.identifier, m.audience_key
    FOR UPDATE OF m SKIP LOCKED
  ), flipped AS (
    UPDATE passthrough.memberships m
    SET qualified = false, previous_event_ts = m.event_ts,
        feed_pos = passthrough._feed_pos_after(m.feed_pos, v_xid),
        feed_level = passthrough._feed_level_after(m.feed_pos, m.feed_level, m.xmin, v_xid)
    FROM locked l
    WHERE m.ctid = l.m_ctid AND m.qualified
    RETURNING m.identifier_type_id, m.identifier, m.audience_key, m.qualified, m.previous_event_ts, m.event_ts,
              m.feed_pos, m.feed_level, l.ttl
  ), dropped AS (
    DELETE FROM passthrough.membership_expiries q
    WHERE q.ctid = ANY (v_work)
      AND (q.ctid IN (SELECT l.q_ctid FROM locked l) OR q.ctid NOT IN (SELECT c.q_ctid FROM candidates c))
  )
  -- each flip as the version that holds from its member's expiry on (sql/functions/093_recorded_moves.sql),
  -- in the order the feed lists them
  SELECT array_agg(ROW(f.identifier_type_id, f.identifier, f.audience_key, f.qualified, f.previous_event_ts,
                       f.event_ts + f.ttl, f.feed_pos, f.feed_level, f.ttl)::passthrough.moved_version
                   ORDER BY f.event_ts + f.ttl)
  INTO v_moved
  FROM flipped f;
  -- the feed's 'expired' changes at their real time, and the sizes
  v_count := passthrough._record_moves(v_batch_id, v_moved);

  IF v_count = 0 THEN
    DELETE FROM passthrough.batches WHERE id = v_batch_id;
  ELSE
    PERFORM pg_notify('passthrough_changes', '');
  END IF;
  RETURN v_count;
END;
$$;
COMMENT ON FUNCTION passthrough._expire_due(integer, integer) IS
  'Private: records up to p_limit due expiries (of one audience, or all when NULL) as one batch with source ''expiry'': flips the state, appends ''expired'' changes at their real time, adjusts the sizes. Returns how many.';

CREATE FUNCTION passthrough.expire_memberships(p_limit integer DEFAULT 10000) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM passthrough._check_limit(p_limit, 1000000);
  RETURN passthrough._expire_due(NULL, p_limit);
END;
$$;
COMMENT ON FUNCTION passthrough.expire_memberships(integer) IS
  'The expiry sweeper: records up to p_limit memberships whose ttl ran out (state, sizes and an ''expired'' change in the feed at the real expiry time) and returns how many; call it until it returns less than p_limit. Reads are right without it; the feed shows an expiry once it ran. passthrough serve runs it every few seconds; elsewhere schedule it (e.g. pg_cron). Never waits for a writer. PT010 for a limit out of range.';

CREATE FUNCTION passthrough._requeue_expiries(p_audience_key integer, p_old_audience_key integer)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  DELETE FROM passthrough.membership_expiries
  WHERE audience_key IN (p_audience_key, p_old_audience_key);
  INSERT INTO passthrough.membership_expiries (audience_key, event_ts, identifier_type_id, identifier)
  SELECT m.audience_key, m.event_ts, m.identifier_type_id, m.identifier
  FROM passthrough.memberships m
  WHERE m.audience_key = p_audience_key AND m.qualified
    AND EXISTS (SELECT 1 FROM passthrough.audiences a WHERE a.audience_key = p_audience_key AND a.ttl IS NOT NULL);
END;
$$;
COMMENT ON FUNCTION passthrough._requeue_expiries(integer, integer) IS
  'Private: rebuilds the expiry work list of an audience key (empty unless a definition with a ttl links it) after its ttl or link changed; drops the rows of the key it was linked to before (p_old_audience_key).';
