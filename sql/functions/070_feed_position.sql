-- The change feed: every transition of a pair's state (entered, exited), in an order a consumer can
-- resume from without missing a change or seeing one twice, and whose replay, pair by pair, ends in the
-- pair's state.
--
-- The writers (passthrough._apply_valid_events, the expiry sweeper) append a row per transition in the same
-- transaction as the update that made it (passthrough._record_moves, sql/functions/093_recorded_moves.sql). Its place in the feed is the feed position of the membership row
-- version it wrote, (pos, level), then the batch and the row's place in the batch: the cursor is
-- (pos, level, batch_id, ord).
--
-- * Readable without a miss: a transaction's rows all have pos >= its own id (pg_current_xact_id()).
--   A read returns only rows with pos below the xmin of its snapshot (pg_snapshot_xmin): every transaction
--   with a smaller id has finished, and every transaction not yet visible has an id >= that xmin, so
--   nothing can ever appear behind a cursor handed out. The price: a transaction that stays open
--   (anywhere on the server) holds back the feed until it ends.
-- * In the order the state changed: a pair's row versions are written one after the other (each writer
--   holds the row lock, and the previous writer has committed). Transaction ids need not follow that
--   order: an older transaction can replace a version that a younger one wrote and committed meanwhile.
--   So a version takes pos = the greater of its writer's id and the replaced version's pos, and when it
--   took the replaced version's pos, level = that version's level + 1 (else 0): every version sorts after
--   the one it replaces. PostgreSQL exposes no commit order; this orders exactly what the feed needs.
--
-- The writer NOTIFYs passthrough_changes once per batch that changed something, so followers wake
-- without polling.

-- The feed's readable horizon: changes with a smaller pos are readable; every reader of the feed asks here.
CREATE FUNCTION passthrough._feed_horizon() RETURNS xid8
LANGUAGE sql STABLE
AS $$
  SELECT pg_snapshot_xmin(pg_current_snapshot());
$$;
COMMENT ON FUNCTION passthrough._feed_horizon() IS
  'Private: the xmin of the current snapshot; a change is readable once its pos is below it. Inlined by the planner.';

-- The ordering rule, in one place: the feed position of a membership row version that transaction p_xid
-- writes over a version at (p_prev_pos, p_prev_level) written by p_prev_xmin. Every writer of
-- passthrough.memberships sets both.
CREATE FUNCTION passthrough._feed_pos_after(p_prev_pos xid8, p_xid xid8) RETURNS xid8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE WHEN p_prev_pos > p_xid THEN p_prev_pos ELSE p_xid END;
$$;
COMMENT ON FUNCTION passthrough._feed_pos_after(xid8, xid8) IS
  'Private: the feed pos of a row version that transaction p_xid writes over one at p_prev_pos: the greater of the two. Inlined by the planner.';

-- A version the same transaction wrote (an earlier batch) keeps its level: batch ids order the two, and
-- the level grows only once per older transaction in a chain, which keeps it small.
CREATE FUNCTION passthrough._feed_level_after(p_prev_pos xid8, p_prev_level smallint, p_prev_xmin xid, p_xid xid8)
RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE WHEN p_prev_pos <= p_xid THEN 0
              WHEN p_prev_xmin = p_xid::xid THEN p_prev_level
              ELSE p_prev_level + 1 END::smallint;
$$;
COMMENT ON FUNCTION passthrough._feed_level_after(xid8, smallint, xid, xid8) IS
  'Private: the feed level of a row version that transaction p_xid writes over one at (p_prev_pos, p_prev_level) written by p_prev_xmin: one more when it takes over a later transaction''s p_prev_pos, the same when it wrote that version itself, else 0. Inlined by the planner.';
