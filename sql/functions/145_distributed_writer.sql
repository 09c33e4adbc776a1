-- The writer on a Citus cluster (docs/scale-out.md, Citus): the same rules as the one writer
-- (sql/functions/150_writer.sql), in steps Citus can plan. Its single statement mixes modifications of
-- distributed tables (events, memberships, expiries) with ones of the coordinator's (the feed, size deltas)
-- and a ctid self-join, which Citus refuses. Here: log the events; upsert the deciding inputs into the
-- distributed memberships and keep what the upsert returns in a session table on the coordinator; from it,
-- queue expiries and append the feed and the size deltas, which are the coordinator's plain tables.
--
-- Feed positions stay the coordinator's transaction ids (p_xid): every write goes through the coordinator,
-- whose transaction commits the feed rows; a worker's own ids (its xmin) mean nothing there, so a version
-- written over one the same transaction wrote takes level + 1 rather than keeping it (still after it).

CREATE FUNCTION passthrough._apply_distributed(p_batch_id bigint, p_xid xid8) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  v_changed integer;
BEGIN
  PERFORM passthrough._moved_table();

  INSERT INTO passthrough.events
    (batch_id, event_ts, identifier_type_id, audience_key, qualified, identifier, idempotence_id)
  SELECT p_batch_id, u.ts, u.t, e.id, u.q, u.i, u.idem
  FROM pg_temp.passthrough_incoming u JOIN passthrough.external_audiences e ON e.external_id = u.a
  WHERE NOT u.verdict_only;

  WITH latest AS (
    SELECT DISTINCT ON (t, i, k) t, i, k, q, ts
    FROM (SELECT u.t, u.i COLLATE "C" AS i, e.id AS k, u.q, u.ts
          FROM pg_temp.passthrough_incoming u
          JOIN passthrough.external_audiences e ON e.external_id = u.a
          WHERE u.verdict_only OR e.snapshot_at IS NULL OR u.ts > e.snapshot_at
             OR (u.ts = e.snapshot_at AND NOT u.q)) AS deciding
    ORDER BY t, i, k, ts DESC, q
  ), upserted AS (
    INSERT INTO passthrough.memberships AS m
      (identifier_type_id, identifier, audience_key, qualified, event_ts, feed_pos)
    SELECT t, i, k, q, ts, p_xid FROM latest ORDER BY t, i, k
    ON CONFLICT (identifier_type_id, identifier, audience_key) DO UPDATE
      SET qualified = EXCLUDED.qualified, event_ts = EXCLUDED.event_ts,
          previous_event_ts = CASE WHEN m.qualified THEN m.event_ts END,
          feed_pos = passthrough._feed_pos_after(m.feed_pos, p_xid),
          feed_level = passthrough._feed_level_after(m.feed_pos, m.feed_level, NULL, p_xid)
      WHERE EXCLUDED.event_ts > m.event_ts
         OR (EXCLUDED.event_ts = m.event_ts AND m.qualified AND NOT EXCLUDED.qualified)
    RETURNING identifier_type_id, identifier, audience_key, qualified, previous_event_ts, event_ts, feed_pos,
              feed_level
  )
  INSERT INTO pg_temp.passthrough_moved
  SELECT u.*, x.ttl FROM upserted u
  LEFT JOIN passthrough.audiences x ON x.audience_key = u.audience_key AND x.ttl IS NOT NULL;

  INSERT INTO passthrough.membership_expiries (audience_key, event_ts, identifier_type_id, identifier)
  SELECT audience_key, event_ts, identifier_type_id, identifier
  FROM pg_temp.passthrough_moved WHERE qualified AND ttl IS NOT NULL;

  -- from here on, the coordinator's tables only: the rest of the one writer's statement, as it is there
  WITH moved AS (
    SELECT l.*, l.previous_qualified AND NOT l.lapsed AS was_in
    FROM (SELECT u.*, u.previous_event_ts IS NOT NULL AS previous_qualified,
                 u.previous_event_ts IS NOT NULL AND NOT passthrough._within_ttl(u.previous_event_ts, u.ttl, u.event_ts)
                   AS lapsed
          FROM pg_temp.passthrough_moved u) AS l
  ), feed AS (
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
COMMENT ON FUNCTION passthrough._apply_distributed(bigint, xid8) IS
  'Private: the writer''s work on a Citus cluster, in steps Citus plans (pg_temp.passthrough_incoming as batch p_batch_id of transaction p_xid); returns the transitions. Called by passthrough._apply_valid_events.';

