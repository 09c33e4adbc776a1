-- What a writer of membership state moved, recorded one way by every writer: the one writer
-- (sql/functions/150_writer.sql), the expiry sweeper (sql/functions/100_expiry.sql), and their steps on a
-- Citus cluster (sql/functions/145_distributed_writer.sql, sql/functions/095_distributed_expiry.sql). Each
-- returns the membership row versions its update wrote, with the audience's ttl, into the session table
-- pg_temp.passthrough_moved; passthrough._record_moves turns them into the expiry work list, the change feed
-- and the size deltas.

-- A row is a version that holds from event_ts on: a writer's is the deciding input's ts; a sweeper's is the
-- instant its member expired (the deciding qualify's ts + the ttl), the qualify being previous_event_ts.
CREATE FUNCTION passthrough._moved_table() RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  IF passthrough._session_table('passthrough_moved') IS NULL THEN
    CREATE TEMPORARY TABLE passthrough_moved (
      identifier_type_id smallint, identifier text COLLATE "C", audience_key integer, qualified boolean,
      previous_event_ts timestamptz, event_ts timestamptz, feed_pos xid8, feed_level smallint, ttl interval
    ) ON COMMIT DELETE ROWS;
  ELSE
    DELETE FROM pg_temp.passthrough_moved;
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._moved_table() IS
  'Private: creates this session''s pg_temp.passthrough_moved (the membership row versions a writer wrote, for passthrough._record_moves) unless it exists, else empties it; 42501 for one planted by anyone else.';

-- Two statements, because on a Citus cluster the expiry work list is a distributed table and the feed and
-- the size deltas are the coordinator's, and Citus runs no statement that modifies both kinds.
CREATE FUNCTION passthrough._record_moves(p_batch_id bigint) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  v_changed integer;
BEGIN
  -- qualify events of audiences with a ttl: the sweeper's work list
  INSERT INTO passthrough.membership_expiries (audience_key, event_ts, identifier_type_id, identifier)
  SELECT m.audience_key, m.event_ts, m.identifier_type_id, m.identifier
  FROM pg_temp.passthrough_moved m WHERE m.qualified AND m.ttl IS NOT NULL;

  WITH lapsing AS (
    -- expiry (sql/functions/100_expiry.sql): the previous qualify had run out before this version's ts; a
    -- writer that renews such a pair before the sweeper reached it records the expiry itself (the sweeper
    -- flips qualified when it does), and every version the sweeper writes is one
    SELECT u.*, u.previous_event_ts IS NOT NULL AS previous_qualified,
           u.previous_event_ts IS NOT NULL AND NOT passthrough._within_ttl(u.previous_event_ts, u.ttl, u.event_ts)
             AS lapsed
    FROM pg_temp.passthrough_moved u
  ), moved AS (
    -- was_in: the state just before this version's ts
    SELECT l.*, l.previous_qualified AND NOT l.lapsed AS was_in FROM lapsing l
  ), feed AS (
    -- the change feed (sql/functions/070_feed_position.sql): one row per transition at its version's feed
    -- position, cursor (pos, level, batch, ord), ord in the order the writer returned its versions;
    -- expiries come first, so a pair's expiry precedes its re-entry
    INSERT INTO passthrough.membership_changes
      (pos, level, batch_id, ord, identifier_type_id, audience_key, qualified, expired, event_ts, identifier)
    SELECT c.feed_pos, c.feed_level, p_batch_id, row_number() OVER (),
           c.identifier_type_id, c.audience_key, c.qualified, c.expired, c.event_ts, c.identifier
    FROM (SELECT identifier_type_id, audience_key, false AS qualified, true AS expired,
                 previous_event_ts + ttl AS event_ts, identifier, feed_pos, feed_level
          FROM moved WHERE lapsed
          UNION ALL
          SELECT identifier_type_id, audience_key, qualified, false, event_ts, identifier, feed_pos, feed_level
          FROM moved WHERE qualified <> was_in) AS c
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
COMMENT ON FUNCTION passthrough._record_moves(bigint) IS
  'Private: records what a writer moved (pg_temp.passthrough_moved) as batch p_batch_id: queues the qualifies of audiences with a ttl for the sweeper, appends the change feed (a lapsed previous qualify first, as an expiry at its real time) and folds the size deltas; returns the transitions.';
