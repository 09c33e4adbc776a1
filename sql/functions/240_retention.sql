-- Retention: a setting bounds how long the event log and the change feed are kept. Pruning deletes in
-- bounded chunks (row deletes, no table lock), so ingestion goes on while it runs. It keeps, for every
-- pair, its newest event older than the cutoff: with it, point-in-time answers at or after the cutoff
-- stay exact. Answers before the cutoff (the history horizon) are refused with PT031, not guessed.
-- Snapshots (sql/functions/200_snapshot_import.sql) are pruned alike: each audience keeps its newest
-- snapshot older than the cutoff, whose verdict answers for every pair at the cutoff; older ones, and their lists, go.

CREATE FUNCTION passthrough.prune_history(p_limit integer DEFAULT 50000)
RETURNS TABLE (events bigint, changes bigint, snapshot_members bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_cutoff     timestamptz;
  v_last_batch bigint;
  v_cursor     text;
  v_superseded bigint[];
BEGIN
  PERFORM passthrough._check_limit(p_limit, 1000000);
  SELECT now() - s.event_retention INTO v_cutoff FROM passthrough.settings s;
  IF v_cutoff IS NULL THEN  -- no retention set: keep everything (a successful run all the same)
    events := 0; changes := 0; snapshot_members := 0;
    UPDATE passthrough.settings SET last_pruned_at = now();
    RETURN NEXT;
    RETURN;
  END IF;
  -- the horizon moves first, in the same transaction: no reader sees pruned answers as exact
  UPDATE passthrough.settings SET history_horizon = greatest(history_horizon, v_cutoff);

  -- an event older than the cutoff goes when an event of the same pair, also older than the cutoff,
  -- decides over it (greater ts, or the same ts and a disqualify over a qualify)
  IF passthrough._memberships_distributed() THEN
    -- a Citus cluster: a ctid names a row of one shard only, so no batches by ctid; every due event in one
    -- statement, which the shards run in parallel (docs/scale-out.md, Citus)
    WITH gone AS (
      DELETE FROM passthrough.events d
      WHERE d.event_ts < v_cutoff
        AND EXISTS (SELECT 1 FROM passthrough.events n
                    WHERE n.identifier_type_id = d.identifier_type_id AND n.identifier = d.identifier
                      AND n.audience_key = d.audience_key AND n.event_ts < v_cutoff
                      AND (n.event_ts > d.event_ts OR (n.event_ts = d.event_ts AND d.qualified AND NOT n.qualified)))
      RETURNING 1
    )
    SELECT count(*) INTO events FROM gone;
  ELSE
    WITH gone AS (
      DELETE FROM passthrough.events d
      WHERE d.ctid = ANY (ARRAY(
        SELECT e.ctid FROM passthrough.events e
        WHERE e.event_ts < v_cutoff
          AND EXISTS (SELECT 1 FROM passthrough.events n
                      WHERE n.identifier_type_id = e.identifier_type_id AND n.identifier = e.identifier
                        AND n.audience_key = e.audience_key AND n.event_ts < v_cutoff
                        AND (n.event_ts > e.event_ts OR (n.event_ts = e.event_ts AND e.qualified AND NOT n.qualified)))
        LIMIT p_limit))
      RETURNING 1
    )
    SELECT count(*) INTO events FROM gone;
  END IF;

  -- snapshots older than the cutoff that a newer one, also older than the cutoff, supersedes: their lists
  -- first, in chunks, then each snapshot once its list is gone
  v_superseded := ARRAY(
    SELECT s.id FROM passthrough.snapshots s
    WHERE s.snapshot_at < v_cutoff
      AND EXISTS (SELECT 1 FROM passthrough.snapshots n
                  WHERE n.audience_key = s.audience_key AND n.snapshot_at < v_cutoff
                    AND (n.snapshot_at, n.id) > (s.snapshot_at, s.id)));
  IF passthrough._memberships_distributed() THEN
    WITH gone AS (
      DELETE FROM passthrough.snapshot_members d WHERE d.snapshot_id = ANY (v_superseded)
      RETURNING 1
    )
    SELECT count(*) INTO snapshot_members FROM gone;
  ELSE
    WITH gone AS (
      DELETE FROM passthrough.snapshot_members d
      WHERE d.ctid = ANY (ARRAY(
        SELECT m.ctid FROM passthrough.snapshot_members m WHERE m.snapshot_id = ANY (v_superseded) LIMIT p_limit))
      RETURNING 1
    )
    SELECT count(*) INTO snapshot_members FROM gone;
  END IF;
  -- (the lists still there read first: Citus deletes from a reference table with no subquery of another kind)
  DELETE FROM passthrough.snapshots s
  WHERE s.id = ANY (v_superseded)
    AND s.id <> ALL (ARRAY(SELECT DISTINCT m.snapshot_id FROM passthrough.snapshot_members m
                           WHERE m.snapshot_id = ANY (v_superseded)));

  -- feed changes of batches received before the cutoff
  SELECT max(b.id) INTO v_last_batch FROM passthrough.batches b WHERE b.received_at < v_cutoff;
  WITH gone AS (
    DELETE FROM passthrough.membership_changes d
    WHERE d.ctid = ANY (ARRAY(
      SELECT c.ctid FROM passthrough.membership_changes c WHERE c.batch_id <= v_last_batch LIMIT p_limit))
    RETURNING d.pos, d.level, d.batch_id, d.ord
  )
  SELECT count(*),
         (SELECT format('%s-%s-%s-%s', x.pos, x.level, x.batch_id, x.ord) FROM gone x
          ORDER BY x.pos DESC, x.level DESC, x.batch_id DESC, x.ord DESC LIMIT 1)
  INTO changes, v_cursor FROM gone;
  IF v_cursor IS NOT NULL THEN
    UPDATE passthrough.settings s SET feed_pruned_through = v_cursor
    WHERE s.feed_pruned_through IS NULL
       OR (SELECT ROW(o_pos, o_level, o_batch_id, o_ord)
           FROM passthrough._parse_change_cursor(s.feed_pruned_through))
          < (SELECT ROW(o_pos, o_level, o_batch_id, o_ord) FROM passthrough._parse_change_cursor(v_cursor));
  END IF;
  -- a run is done when a call leaves less than a chunk of each kind: what service_metrics() reports the age of
  IF events < p_limit AND changes < p_limit AND snapshot_members < p_limit THEN
    UPDATE passthrough.settings SET last_pruned_at = now();
  END IF;
  RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION passthrough.prune_history(integer) IS
  'Applies the event_retention setting: deletes up to p_limit events older than now - retention (keeping each pair''s newest one, so answers at or after that time stay exact), up to p_limit feed changes of batches received before it, and up to p_limit listed identifiers of snapshots older than it that a newer snapshot older than it supersedes (each audience keeps its newest snapshot older than the cutoff); returns how many of each. Call it until all three are below p_limit; it never blocks ingestion. Moves the history horizon: point-in-time reads before it raise PT031, and a feed cursor older than the pruned changes raises PT032. Does nothing while event_retention is NULL. A call that leaves less than p_limit of each kind (or finds no retention set) records its time, whose age passthrough.service_metrics() reports.';
