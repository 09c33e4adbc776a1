-- The change feed: every transition of a pair's state (entered, exited), in an order a consumer can
-- resume from without missing a change or seeing one twice, and whose replay, pair by pair, ends in the
-- pair's state.
--
-- The writers (passthrough._apply_valid_events, the expiry sweeper) append a row per transition in the same
-- statement as the update that made it. Its place in the feed is the feed position of the membership row
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

CREATE TABLE passthrough.membership_changes (
  pos                xid8        NOT NULL,
  batch_id           bigint      NOT NULL,
  event_ts           timestamptz NOT NULL,
  ord                integer     NOT NULL,
  audience_key       integer     NOT NULL,
  identifier_type_id smallint    NOT NULL,
  level              smallint    NOT NULL,
  qualified          boolean     NOT NULL,
  expired            boolean     NOT NULL DEFAULT false,
  identifier         text        COLLATE "C" NOT NULL,
  -- positions mostly grow, so new keys land near the right edge of the index
  PRIMARY KEY (pos, level, batch_id, ord)
);
COMMENT ON TABLE passthrough.membership_changes IS
  'Every state transition of a pair, appended in the statement that made it (the one writer, or the expiry sweeper): qualified true = entered, false = exited, expired true = the membership''s ttl ran out. Read it through passthrough.changes().';
COMMENT ON COLUMN passthrough.membership_changes.pos IS
  'The feed position of the membership row version that made the change (passthrough.memberships.feed_pos): its writing transaction''s id, or a later one whose version it replaced. With level, batch_id and ord, the feed''s cursor.';
COMMENT ON COLUMN passthrough.membership_changes.level IS
  'passthrough.memberships.feed_level of that row version: orders changes that share a pos.';
COMMENT ON COLUMN passthrough.membership_changes.event_ts IS
  'ts of the event that made the change; for an expiry, when it expired (the qualify event''s ts + the ttl).';

-- A cursor is '<pos>-<level>-<batch_id>-<ord>' (decimal); NULL or '' is the start of the feed.
CREATE FUNCTION passthrough._parse_change_cursor(p_cursor text, OUT o_pos xid8, OUT o_level integer,
                                                 OUT o_batch_id bigint, OUT o_ord integer)
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
  v_parts text[];
BEGIN
  IF p_cursor IS NULL OR p_cursor = '' THEN
    o_pos := '0'::xid8; o_level := 0; o_batch_id := 0; o_ord := 0;
    RETURN;
  END IF;
  v_parts := regexp_match(p_cursor, '^([0-9]{1,20})-([0-9]{1,10})-([0-9]{1,18})-([0-9]{1,10})$');
  IF v_parts IS NULL OR v_parts[1]::numeric > 18446744073709551615
     OR v_parts[2]::bigint > 2147483647 OR v_parts[4]::bigint > 2147483647 THEN
    RAISE EXCEPTION USING ERRCODE = 'PT030',
      MESSAGE = format('invalid change feed cursor %s', to_json(left(p_cursor, 100))),
      DETAIL = 'field: after',
      HINT = 'Pass a cursor the feed returned (a change''s cursor, or next), or none to start from the beginning.';
  END IF;
  o_pos := v_parts[1]::xid8; o_level := v_parts[2]::integer;
  o_batch_id := v_parts[3]::bigint; o_ord := v_parts[4]::integer;
END;
$$;
COMMENT ON FUNCTION passthrough._parse_change_cursor(text) IS
  'Private: a change feed cursor ''<pos>-<level>-<batch_id>-<ord>'' as its parts (zeros for NULL or empty); PT030 when malformed.';

-- Whether changes after this cursor have been pruned (sql/079_retention.sql).
CREATE FUNCTION passthrough._cursor_pruned(p_pos xid8, p_level integer, p_batch_id bigint, p_ord integer)
RETURNS boolean
LANGUAGE sql STABLE
AS $$
  -- the start of the feed (0-0-0-0) always reads from the oldest change kept
  SELECT p_pos <> '0'::xid8 AND s.feed_pruned_through IS NOT NULL
         AND (p_pos, p_level, p_batch_id, p_ord)
             < (SELECT o_pos, o_level, o_batch_id, o_ord
                FROM passthrough._parse_change_cursor(s.feed_pruned_through))
  FROM passthrough.settings s;
$$;
COMMENT ON FUNCTION passthrough._cursor_pruned(xid8, integer, bigint, integer) IS
  'Private: true when changes after this cursor have been pruned, so a consumer resuming from it would miss some.';

CREATE FUNCTION passthrough._check_cursor_retained(p_pos xid8, p_level integer, p_batch_id bigint, p_ord integer)
RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  IF passthrough._cursor_pruned(p_pos, p_level, p_batch_id, p_ord) THEN
    RAISE EXCEPTION USING ERRCODE = 'PT032',
      MESSAGE = format('changes after cursor %s-%s-%s-%s were pruned (the feed is kept through event_retention)',
                       p_pos, p_level, p_batch_id, p_ord),
      DETAIL = 'field: after',
      HINT = 'This consumer fell behind the retention: rebuild its state from the current membership, then follow the feed from passthrough.current_change_cursor().';
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._check_cursor_retained(xid8, integer, bigint, integer) IS
  'Private: PT032 when changes after this cursor have been pruned (sql/079_retention.sql), so a consumer resuming from it would miss some.';

-- Shared by the feed, the expiry sweeper, retention pruning and the snapshot diff: every call that works in
-- pages or chunks.
CREATE FUNCTION passthrough._check_limit(p_limit integer, p_max integer, p_min integer DEFAULT 1) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  IF p_limit IS NULL OR p_limit < p_min OR p_limit > p_max THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('limit must be between %s and %s, got %s', p_min, p_max, coalesce(p_limit::text, 'NULL')),
      DETAIL = 'field: limit';
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._check_limit(integer, integer, integer) IS
  'Private: PT010 naming the field limit unless p_min <= p_limit <= p_max.';

CREATE FUNCTION passthrough.changes(p_after text DEFAULT NULL, p_limit integer DEFAULT 1000)
RETURNS TABLE (cursor text, change text, identifier_type text, identifier text, audience_id text,
               audience text, event_ts timestamptz, received_at timestamptz, source text, batch_id bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_after record;
BEGIN
  SELECT * INTO v_after FROM passthrough._parse_change_cursor(p_after);
  PERFORM passthrough._check_cursor_retained(v_after.o_pos, v_after.o_level, v_after.o_batch_id, v_after.o_ord);
  PERFORM passthrough._check_limit(p_limit, 10000);
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
    LIMIT p_limit;
END;
$$;
COMMENT ON FUNCTION passthrough.changes(text, integer) IS
  'The next changes of the feed after cursor p_after (from the start when NULL), at most p_limit (1 to 10000), in feed order: change is entered, exited or expired (a ttl ran out; event_ts is when). Resuming from the last row''s cursor never misses a change nor repeats one, whatever order transactions commit in, and each pair''s changes come in the order its state changed, so replaying them ends in its state; a change shows once every older transaction has finished. PT030 for a malformed cursor, PT032 for one older than the pruned part of the feed, PT010 for a limit out of range.';

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
