-- What a writer of membership state moved, recorded one way by every writer: the one writer
-- (sql/functions/150_writer.sql), the expiry sweeper (sql/functions/100_expiry.sql), and their steps on a
-- Citus cluster (sql/functions/095_distributed_expiry.sql). Each collects the membership row versions its
-- update wrote, with the audience's ttl (passthrough.moved_version), and passthrough._record_moves turns them
-- into the change feed and the size deltas. A version holds from its event_ts on: a
-- writer's is the deciding input's ts; a sweeper's is the instant its member expired (the deciding qualify's
-- ts + the ttl), that qualify being its previous_event_ts. An array rather than a session table: a temporary
-- table ON COMMIT DELETE ROWS is truncated at every commit of a transaction that touched any temporary table,
-- about 0.3 ms each, 2-3% of a 500-event apply_events call (docs/benchmarks.md).

-- Whether _record_moves can make anything of a version: a feed row or a size change needs the state to have
-- changed (previous_event_ts is set when the previous version was qualified), or a ttl that may have let the
-- previous qualify lapse. A writer passes only these (the others are most of a batch of late or repeated events).
CREATE FUNCTION passthrough._move_recorded(p_qualified boolean, p_previous_event_ts timestamptz, p_ttl interval)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT p_qualified <> (p_previous_event_ts IS NOT NULL) OR (p_previous_event_ts IS NOT NULL AND p_ttl IS NOT NULL);
$$;
COMMENT ON FUNCTION passthrough._move_recorded(boolean, timestamptz, interval) IS
  'Private: whether passthrough._record_moves records anything for a moved version (its state changed, or a ttl may have lapsed the previous qualify). Inlined by the planner.';

-- The coordinator's tables only: on a Citus cluster Citus runs no statement that modifies them and distributed
-- ones, and the fold's ctid self-join works on a plain table only.
CREATE FUNCTION passthrough._record_moves(p_batch_id bigint, p_moved passthrough.moved_version[]) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  v_changed integer;
BEGIN
  WITH lapsing AS (
    -- expiry (sql/functions/100_expiry.sql): the previous qualify had run out before this version's ts; a
    -- writer that renews such a pair before the sweeper reached it records the expiry itself (the sweeper
    -- flips qualified when it does), and every version the sweeper writes is one
    SELECT u.*, u.previous_event_ts IS NOT NULL AS previous_qualified,
           u.previous_event_ts IS NOT NULL AND NOT passthrough._within_ttl(u.previous_event_ts, u.ttl, u.event_ts)
             AS lapsed
    FROM unnest(p_moved) WITH ORDINALITY u
  ), moved AS (
    -- was_in: the state just before this version's ts
    SELECT l.*, l.previous_qualified AND NOT l.lapsed AS was_in FROM lapsing l
  ), feed AS (
    -- the change feed (sql/functions/070_feed_position.sql): one row per transition at its version's feed
    -- position, cursor (pos, level, batch, ord), ord in the order of p_moved;
    -- expiries come first, so a pair's expiry precedes its re-entry. ord is the version's place in p_moved
    -- (after every expiry for a transition): increasing and unique, not dense, and no window to number rows.
    INSERT INTO passthrough.membership_changes
      (pos, level, batch_id, ord, identifier_type_id, audience_key, qualified, expired, event_ts, identifier)
    SELECT feed_pos, feed_level, p_batch_id, ordinality,
           identifier_type_id, audience_key, false, true, previous_event_ts + ttl, identifier
    FROM moved WHERE lapsed
    UNION ALL
    SELECT feed_pos, feed_level, p_batch_id, cardinality(p_moved) + ordinality,
           identifier_type_id, audience_key, qualified, false, event_ts, identifier
    FROM moved WHERE qualified <> was_in
  ), net AS (
    SELECT audience_key,
           sum(qualified::integer - previous_qualified::integer) AS delta,
           count(*) FILTER (WHERE qualified <> was_in) + count(*) FILTER (WHERE lapsed) AS transitions
    FROM moved GROUP BY audience_key
  ), folded AS (
    -- fold the size rows no other writer holds into this batch's row; SKIP LOCKED never waits
    DELETE FROM passthrough.audience_size_deltas d
    WHERE d.ctid = ANY (ARRAY(
      SELECT s.ctid FROM passthrough.audience_size_deltas s
      WHERE s.audience_key IN (SELECT audience_key FROM net WHERE delta <> 0)
      FOR UPDATE SKIP LOCKED))
    RETURNING d.audience_key, d.delta
  ), stored AS (
    INSERT INTO passthrough.audience_size_deltas (audience_key, delta)
    SELECT audience_key, sum(delta)
    FROM (SELECT audience_key, delta FROM net WHERE delta <> 0
          UNION ALL
          SELECT audience_key, delta FROM folded) AS x
    GROUP BY audience_key
    HAVING sum(delta) <> 0
  )
  SELECT coalesce(sum(transitions), 0)::integer INTO v_changed FROM net;
  RETURN v_changed;
END;
$$;
COMMENT ON FUNCTION passthrough._record_moves(bigint, passthrough.moved_version[]) IS
  'Private: records the versions a writer wrote (p_moved, in feed order) as batch p_batch_id: appends the change feed (a lapsed previous qualify first, as an expiry at its real time) and folds the size deltas; returns the transitions.';
