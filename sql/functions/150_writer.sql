-- The one set-based writer of membership state, which every path shares (apply_events, bulk loads,
-- snapshot imports); the events it gets are valid (sql/functions/130_event_rules.sql).
--
-- Semantics (docs/semantics.md): the state of a (identifier, audience) pair is decided by the input
-- with the greatest ts, an input being an event or a snapshot of the pair's audience
-- (sql/functions/200_snapshot_import.sql); on equal ts, disqualify wins. The state is therefore a function of the set of inputs: any order,
-- duplication or split into batches gives the same result.

-- The writer's input: this session's table of validated events, which a caller fills right before it
-- calls the writer (the bulk path straight from its staging table, without building arrays). The writer
-- empties it; ON COMMIT DELETE ROWS empties it in place (no TRUNCATE, no catalog change) at commit.
CREATE FUNCTION passthrough._incoming_table() RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  IF passthrough._session_table('passthrough_incoming') IS NULL THEN
    CREATE TEMPORARY TABLE passthrough_incoming (
      t smallint, i text COLLATE "C", a text COLLATE "C", q boolean, ts timestamptz, idem text,
      -- not an event: a pair a snapshot import hands the writer for its verdict only, never logged
      verdict_only boolean NOT NULL DEFAULT false
    ) ON COMMIT DELETE ROWS;
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._incoming_table() IS
  'Private: creates this session''s pg_temp.passthrough_incoming (the writer''s input) unless it exists; 42501 for one planted by anyone else.';

-- Snapshot imports and the writers of an audience exclude each other through an advisory lock on the
-- audience key in this lock space (sql/functions/200_snapshot_import.sql says why).
CREATE FUNCTION passthrough._audience_lock_space() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT 1886650368;  -- 'pt' followed by two zero bytes, as an int4
$$;
COMMENT ON FUNCTION passthrough._audience_lock_space() IS
  'Private: the first key of the advisory locks that keep snapshot imports and writers of one audience apart; the second is the audience key (0: the lock of batches naming more than 256 audiences).';

-- The one writer of membership state. Callers put p_count validated events (and, for a snapshot import,
-- p_verdicts verdict-only rows) into pg_temp.passthrough_incoming (passthrough._incoming_table); one
-- statement logs the events, upserts the deciding input per pair and queues expiries, and
-- passthrough._record_moves appends the feed and the size changes.
CREATE FUNCTION passthrough._apply_valid_events(p_source text, p_count bigint, p_verdicts bigint DEFAULT 0)
RETURNS passthrough.apply_result
LANGUAGE plpgsql
AS $$
DECLARE
  v_result       passthrough.apply_result;
  v_xid          xid8;
  v_audience_ids text[];
  v_new_ids      text[];
  v_keys         integer[];
  v_distributed  boolean := passthrough._memberships_distributed();
  v_moved        passthrough.moved_version[];
BEGIN
  v_result := ROW(NULL, coalesce(p_count, 0), 0, 0);
  IF v_result.accepted = 0 AND coalesce(p_verdicts, 0) = 0 THEN
    RETURN v_result;
  END IF;
  v_xid := pg_current_xact_id();

  INSERT INTO passthrough.batches (source, event_count) VALUES (p_source, v_result.accepted)
  RETURNING id INTO v_result.batch_id;

  SELECT array_agg(x.a) INTO v_audience_ids FROM (SELECT DISTINCT u.a FROM pg_temp.passthrough_incoming u) x;
  -- Only ids not seen before: ON CONFLICT alone would burn an identity value per event. And no insert at all
  -- when every id is known: on Citus, an insert into the reference table waits for an open snapshot import,
  -- which updates it, whatever the batch's audiences.
  -- (an anti-join, not NOT EXISTS: Citus plans no correlated subquery beside a set-returning function)
  SELECT array_agg(x.a ORDER BY x.a) INTO v_new_ids
  FROM unnest(v_audience_ids) AS x(a)
  LEFT JOIN passthrough.external_audiences e ON e.external_id = x.a
  WHERE e.id IS NULL;
  IF v_new_ids IS NOT NULL THEN
    INSERT INTO passthrough.external_audiences (external_id)
    SELECT x.a FROM unnest(v_new_ids) WITH ORDINALITY AS x(a, n) ORDER BY x.n
    ON CONFLICT (external_id) DO NOTHING;
  END IF;
  -- A snapshot import decides every pair of its audience, so it must see every pair a batch writes: the
  -- batch holds its audiences' locks shared until it commits, an import takes its audience's exclusively.
  -- Taken before the writing statement, whose snapshot then shows any import that committed first. A batch
  -- naming more than 256 audiences takes one shared lock (key 0, which every import also takes) instead,
  -- so that it never fills the server's lock table.
  SELECT array_agg(e.id ORDER BY e.id) INTO v_keys
  FROM passthrough.external_audiences e WHERE e.external_id = ANY (v_audience_ids);
  IF cardinality(v_keys) > 256 THEN
    PERFORM pg_advisory_xact_lock_shared(passthrough._audience_lock_space(), 0);
  ELSE
    PERFORM pg_advisory_xact_lock_shared(passthrough._audience_lock_space(), k) FROM unnest(v_keys) AS x(k);
  END IF;

  -- One statement logs the events, upserts the deciding inputs, queues expiries and returns the row versions it
  -- wrote, from which passthrough._record_moves (sql/functions/093_recorded_moves.sql) appends the feed and
  -- folds the size deltas. The same statements on a Citus cluster (passthrough.distribute();
  -- docs/scale-out.md, Citus), where Citus runs each data-modifying step on its own.
  WITH incoming AS MATERIALIZED (
    -- the identifier first: the sorts below compare it on nearly every pair of rows, and as a row's first
    -- column it is found at a fixed offset (after it, columns are found by walking the row)
    SELECT u.i COLLATE "C" AS i, u.t, e.id AS k, u.q, u.ts, u.idem, u.verdict_only,
           -- Whether the input can move its pair. The import of the audience's newest snapshot (at T) gave
           -- every pair the snapshot's verdict at T (sql/functions/200_snapshot_import.sql), so an event before
           -- T, or a qualify at T, changes nothing: it is only logged. A disqualify at T wins the tie as usual.
           u.verdict_only OR e.snapshot_at IS NULL OR u.ts > e.snapshot_at OR (u.ts = e.snapshot_at AND NOT u.q)
             AS decides
    FROM pg_temp.passthrough_incoming u
    JOIN passthrough.external_audiences e ON e.external_id = u.a
    -- in key order: the log's identifier index and the upsert then touch neighbouring pages, and the
    -- dedupe sort below finds its input already sorted
    ORDER BY u.t, u.i COLLATE "C", e.id, u.ts DESC, u.q
  ), logged AS (
    INSERT INTO passthrough.events
      (batch_id, event_ts, identifier_type_id, audience_key, qualified, identifier, idempotence_id)
    SELECT v_result.batch_id, ts, t, k, q, i, idem FROM incoming WHERE NOT verdict_only
  ), latest AS (
    -- newest input per pair; on equal ts false (disqualify) sorts first and wins
    SELECT DISTINCT ON (t, i, k) t, i, k, q, ts FROM incoming WHERE decides ORDER BY t, i, k, ts DESC, q
  ), upserted AS (
    -- rows go in key order so that concurrent batches lock shared pairs in the same order
    INSERT INTO passthrough.memberships AS m
      (identifier_type_id, identifier, audience_key, qualified, event_ts, feed_pos)
    SELECT t, i, k, q, ts, v_xid FROM latest ORDER BY t, i, k
    ON CONFLICT (identifier_type_id, identifier, audience_key) DO UPDATE
      SET qualified = EXCLUDED.qualified, event_ts = EXCLUDED.event_ts,
          previous_event_ts = CASE WHEN m.qualified THEN m.event_ts END,
          -- the feed orders this version after the one it replaces, even one a later transaction wrote; on a
          -- cluster a worker's xmin is not a coordinator's transaction id (sql/functions/070_feed_position.sql)
          feed_pos = passthrough._feed_pos_after(m.feed_pos, v_xid),
          feed_level = passthrough._feed_level_after(m.feed_pos, m.feed_level,
                                                     CASE WHEN NOT v_distributed THEN m.xmin END, v_xid)
      WHERE EXCLUDED.event_ts > m.event_ts
         OR (EXCLUDED.event_ts = m.event_ts AND m.qualified AND NOT EXCLUDED.qualified)
    RETURNING identifier_type_id, identifier, audience_key, qualified, previous_event_ts, event_ts, feed_pos,
              feed_level
  ), moved AS (
    SELECT u.*, x.ttl
    FROM upserted u LEFT JOIN passthrough.audiences x ON x.audience_key = u.audience_key AND x.ttl IS NOT NULL
  ), queued AS (
    -- qualify events of audiences with a ttl: the sweeper's work list (sql/functions/100_expiry.sql)
    INSERT INTO passthrough.membership_expiries (audience_key, event_ts, identifier_type_id, identifier)
    SELECT audience_key, event_ts, identifier_type_id, identifier FROM moved WHERE qualified AND ttl IS NOT NULL
  )
  SELECT array_agg(ROW(m.identifier_type_id, m.identifier, m.audience_key, m.qualified, m.previous_event_ts,
                       m.event_ts, m.feed_pos, m.feed_level, m.ttl)::passthrough.moved_version)
  INTO v_moved
  FROM moved m
  WHERE passthrough._move_recorded(m.qualified, m.previous_event_ts, m.ttl);
  v_result.changed := passthrough._record_moves(v_result.batch_id, v_moved);
  IF v_result.changed > 0 THEN
    PERFORM pg_notify('passthrough_changes', '');  -- wakes change feed followers, once per batch
  END IF;

  -- emptied for a further call in this transaction: a big batch by TRUNCATE (a new file, and a catalog
  -- update that makes the next call plan again), a small one by DELETE (the table is emptied in place at commit)
  IF v_result.accepted >= 10000 THEN
    TRUNCATE pg_temp.passthrough_incoming;
  ELSE
    DELETE FROM pg_temp.passthrough_incoming;
  END IF;
  RETURN v_result;
END;
$$;
COMMENT ON FUNCTION passthrough._apply_valid_events(text, bigint, bigint) IS
  'Private: stores the validated events in pg_temp.passthrough_incoming as one batch: the input with the greatest ts decides each pair, an audience''s newest snapshot included.';
