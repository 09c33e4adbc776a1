-- The change feed: every transition of a pair's state (entered, exited), in an order a consumer can
-- resume from without missing a change or seeing one twice.
--
-- The one writer (passthrough._apply_valid_events) appends a row per transition in the same statement
-- as the upsert that made it, tagged with the writing transaction's id (pg_current_xact_id(), xid8), the
-- batch and the row's place in the batch. The cursor is (xid, batch_id, ord). Transactions commit in
-- any order, so a naive sequence is not enough: a reader could pass a number that a slower transaction
-- holds and later commits. A read therefore returns only rows whose xid is below the xmin of its
-- snapshot (pg_snapshot_xmin(pg_current_snapshot())): every transaction below it has finished, and
-- every later transaction gets a larger xid, so nothing can ever appear behind a cursor handed out.
-- The price: a transaction that stays open (anywhere on the server) holds back the feed until it ends.
--
-- The writer NOTIFYs passthrough_changes once per batch that changed something, so followers wake
-- without polling.

-- The feed's readable horizon: changes with a smaller xid are readable; every reader of the feed asks here.
CREATE FUNCTION passthrough._feed_horizon() RETURNS xid8
LANGUAGE sql STABLE
AS $$
  SELECT pg_snapshot_xmin(pg_current_snapshot());
$$;
COMMENT ON FUNCTION passthrough._feed_horizon() IS
  'Private: the xmin of the current snapshot; a change is readable once its xid is below it. Inlined by the planner.';

CREATE TABLE passthrough.membership_changes (
  xid                xid8        NOT NULL,
  batch_id           bigint      NOT NULL,
  ord                integer     NOT NULL,
  identifier_type_id smallint    NOT NULL,
  audience_key       integer     NOT NULL,
  qualified          boolean     NOT NULL,
  expired            boolean     NOT NULL DEFAULT false,
  event_ts           timestamptz NOT NULL,
  identifier         text        COLLATE "C" NOT NULL,
  -- xids only grow, so new keys land at the right edge of the index
  PRIMARY KEY (xid, batch_id, ord)
);
COMMENT ON TABLE passthrough.membership_changes IS
  'Every state transition of a pair, appended in the statement that made it (the one writer, or the expiry sweeper): qualified true = entered, false = exited, expired true = the membership''s ttl ran out. Read it through passthrough.changes().';
COMMENT ON COLUMN passthrough.membership_changes.xid IS
  'The writing transaction (pg_current_xact_id()). With batch_id and ord, the feed''s cursor.';
COMMENT ON COLUMN passthrough.membership_changes.event_ts IS
  'ts of the event that made the change; for an expiry, when it expired (the qualify event''s ts + the ttl).';

-- A cursor is '<xid>-<batch_id>-<ord>' (decimal); NULL or '' is the start of the feed.
CREATE FUNCTION passthrough._parse_change_cursor(p_cursor text, OUT o_xid xid8, OUT o_batch_id bigint,
                                                 OUT o_ord integer)
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
  v_parts text[];
BEGIN
  IF p_cursor IS NULL OR p_cursor = '' THEN
    o_xid := '0'::xid8; o_batch_id := 0; o_ord := 0;
    RETURN;
  END IF;
  v_parts := regexp_match(p_cursor, '^([0-9]{1,20})-([0-9]{1,18})-([0-9]{1,9})$');
  IF v_parts IS NULL OR v_parts[1]::numeric > 18446744073709551615 THEN
    RAISE EXCEPTION USING ERRCODE = 'PT030',
      MESSAGE = format('invalid change feed cursor %s', to_json(left(p_cursor, 100))),
      DETAIL = 'field: after',
      HINT = 'Pass a cursor the feed returned (a change''s cursor, or next), or none to start from the beginning.';
  END IF;
  o_xid := v_parts[1]::xid8; o_batch_id := v_parts[2]::bigint; o_ord := v_parts[3]::integer;
END;
$$;
COMMENT ON FUNCTION passthrough._parse_change_cursor(text) IS
  'Private: a change feed cursor ''<xid>-<batch_id>-<ord>'' as its parts (zeros for NULL or empty); PT030 when malformed.';

-- Whether changes after this cursor have been pruned (sql/079_retention.sql).
CREATE FUNCTION passthrough._cursor_pruned(p_xid xid8, p_batch_id bigint, p_ord integer) RETURNS boolean
LANGUAGE sql STABLE
AS $$
  -- the start of the feed (0-0-0) always reads from the oldest change kept
  SELECT p_xid <> '0'::xid8 AND s.feed_pruned_through IS NOT NULL
         AND (p_xid, p_batch_id, p_ord) < (SELECT o_xid, o_batch_id, o_ord
                                           FROM passthrough._parse_change_cursor(s.feed_pruned_through))
  FROM passthrough.settings s;
$$;
COMMENT ON FUNCTION passthrough._cursor_pruned(xid8, bigint, integer) IS
  'Private: true when changes after this cursor have been pruned, so a consumer resuming from it would miss some.';

CREATE FUNCTION passthrough._check_cursor_retained(p_xid xid8, p_batch_id bigint, p_ord integer) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  IF passthrough._cursor_pruned(p_xid, p_batch_id, p_ord) THEN
    RAISE EXCEPTION USING ERRCODE = 'PT032',
      MESSAGE = format('changes after cursor %s-%s-%s were pruned (the feed is kept through event_retention)',
                       p_xid, p_batch_id, p_ord),
      DETAIL = 'field: after',
      HINT = 'This consumer fell behind the retention: rebuild its state from the current membership, then follow the feed from passthrough.current_change_cursor().';
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._check_cursor_retained(xid8, bigint, integer) IS
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
  v_xid      xid8;
  v_batch_id bigint;
  v_ord      integer;
BEGIN
  SELECT o_xid, o_batch_id, o_ord INTO v_xid, v_batch_id, v_ord FROM passthrough._parse_change_cursor(p_after);
  PERFORM passthrough._check_cursor_retained(v_xid, v_batch_id, v_ord);
  PERFORM passthrough._check_limit(p_limit, 10000);
  -- One statement, so the rows and the xmin come from the same snapshot.
  RETURN QUERY
    SELECT format('%s-%s-%s', c.xid, c.batch_id, c.ord),
           CASE WHEN c.qualified THEN 'entered' WHEN c.expired THEN 'expired' ELSE 'exited' END,
           t.name::text, c.identifier::text, e.external_id::text, a.name::text,
           c.event_ts, b.received_at, b.source, c.batch_id
    FROM passthrough.membership_changes c
    JOIN passthrough.identifier_types t ON t.id = c.identifier_type_id
    JOIN passthrough.external_audiences e ON e.id = c.audience_key
    LEFT JOIN passthrough.audiences a ON a.audience_key = c.audience_key
    LEFT JOIN passthrough.batches b ON b.id = c.batch_id
    WHERE (c.xid, c.batch_id, c.ord) > (v_xid, v_batch_id, v_ord)
      AND c.xid < passthrough._feed_horizon()
    ORDER BY c.xid, c.batch_id, c.ord
    LIMIT p_limit;
END;
$$;
COMMENT ON FUNCTION passthrough.changes(text, integer) IS
  'The next changes of the feed after cursor p_after (from the start when NULL), at most p_limit (1 to 10000), in feed order: change is entered, exited or expired (a ttl ran out; event_ts is when). Resuming from the last row''s cursor never misses a change nor repeats one, whatever order transactions commit in; a change shows once every older transaction has finished. PT030 for a malformed cursor, PT032 for one older than the pruned part of the feed, PT010 for a limit out of range.';

CREATE FUNCTION passthrough.current_change_cursor() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT format('%s-0-0', passthrough._feed_horizon());
$$;
COMMENT ON FUNCTION passthrough.current_change_cursor() IS
  'A cursor at the end of the feed as readable now: passthrough.changes() after it returns only changes not yet readable at this moment (to follow the feed from now on).';

CREATE FUNCTION passthrough.changes_pending() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT EXISTS (SELECT 1 FROM passthrough.membership_changes c
                 WHERE c.xid >= passthrough._feed_horizon());
$$;
COMMENT ON FUNCTION passthrough.changes_pending() IS
  'Whether committed changes wait to be readable in the feed because an older transaction is still open (followers then check again later instead of waiting for a notification).';
