-- Change feed cursors: their text form, and whether retention has pruned the changes after one.

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

-- Whether changes after this cursor have been pruned (sql/functions/240_retention.sql).
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
  'Private: PT032 when changes after this cursor have been pruned (sql/functions/240_retention.sql), so a consumer resuming from it would miss some.';
