-- Membership over time, from the event log and the snapshots: the state as of any instant, one pair's
-- history, and an audience's size over time. The rules are the live ones (docs/semantics.md) applied to
-- the inputs whose ts is at or before the instant: events, and the snapshots of the pair's audience
-- (sql/functions/200_snapshot_import.sql; a snapshot at T lists the pair or disqualifies it at T). The
-- greatest ts decides, and on equal ts disqualify wins. "As of t" is event time as the log knows it now: an input that arrives
-- late still counts at its ts. Only the newest snapshot at or before t matters at t: it decides every
-- pair, so the events before it need not be read.

-- customer_audiences_at (below) on a Citus cluster (passthrough.distribute()): the same answer from the
-- customer's inputs read in statements of their own, as customer_audiences does. Citus would push the one
-- statement of customer_audiences_at to the customer's worker, sizes included, and refuses _listed and
-- _snapshot_at_or_before (SQL functions over its tables). Per audience: the newest event at or before p_at
-- (one shard's query), the newest snapshot at or before p_at (a reference table) and whether it lists the
-- customer (one shard's query). A function of its own: with the branch's variables in it,
-- customer_audiences_at took 5 to 15% longer on one server (without sizes, about 100 us a call).
CREATE FUNCTION passthrough._customer_audiences_at_distributed(
  p_type_id smallint, p_identifier text, p_subset text[], p_at timestamptz, p_with_sizes boolean
) RETURNS TABLE (name text, state text, description text, is_ready boolean, revision integer, size bigint,
                 external_audience_id text, event_ts timestamptz)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_keys       integer[];
  v_qualified  boolean[];
  v_times      timestamptz[];
  v_snap_keys  integer[];
  v_snap_ids   bigint[];
  v_snap_times timestamptz[];
  v_listed     bigint[];
BEGIN
  SELECT array_agg(n.audience_key), array_agg(n.qualified), array_agg(n.event_ts)
  INTO v_keys, v_qualified, v_times
  FROM (SELECT DISTINCT ON (e.audience_key) e.audience_key, e.qualified, e.event_ts
        FROM passthrough.events e
        WHERE e.identifier_type_id = p_type_id AND e.identifier = p_identifier AND e.event_ts <= p_at
        ORDER BY e.audience_key, e.event_ts DESC, e.qualified) n;
  SELECT array_agg(b.audience_key), array_agg(b.id), array_agg(b.snapshot_at)
  INTO v_snap_keys, v_snap_ids, v_snap_times
  FROM (SELECT DISTINCT ON (x.audience_key) x.audience_key, x.id, x.snapshot_at
        FROM passthrough.snapshots x WHERE x.snapshot_at <= p_at
        ORDER BY x.audience_key, x.snapshot_at DESC, x.id DESC) b;
  IF v_snap_ids IS NOT NULL THEN
    SELECT array_agg(l.snapshot_id) INTO v_listed FROM passthrough.snapshot_members l
    WHERE l.identifier_type_id = p_type_id AND l.identifier = p_identifier AND l.snapshot_id = ANY (v_snap_ids);
  END IF;
  RETURN QUERY
    SELECT a.name::text, 'qualified'::text, a.description, true, a.revision,
           CASE WHEN p_with_sizes THEN passthrough._audience_size_at(a.audience_key, p_at) END,
           x.external_id::text, s.event_ts
    FROM (
      SELECT DISTINCT ON (i.audience_key) i.audience_key, i.qualified, i.event_ts
      FROM (
        SELECT k.audience_key, k.qualified, k.event_ts FROM unnest(v_keys, v_qualified, v_times)
          AS k(audience_key, qualified, event_ts)
        UNION ALL
        SELECT k.audience_key, coalesce(k.id = ANY (v_listed), false), k.snapshot_at
        FROM unnest(v_snap_keys, v_snap_ids, v_snap_times) AS k(audience_key, id, snapshot_at)
      ) i
      ORDER BY i.audience_key, i.event_ts DESC, i.qualified
    ) s
    JOIN passthrough.audiences a ON a.audience_key = s.audience_key
    JOIN passthrough.external_audiences x ON x.id = s.audience_key
    WHERE s.qualified
      AND passthrough._within_ttl(s.event_ts, a.ttl, p_at)
      AND (p_subset IS NULL OR a.name = ANY (p_subset))
    ORDER BY a.name;
END;
$$;
COMMENT ON FUNCTION passthrough._customer_audiences_at_distributed(smallint, text, text[], timestamptz, boolean) IS
  'Private: passthrough.customer_audiences_at on a Citus cluster, for an identifier type id already checked; the same rows.';

CREATE FUNCTION passthrough.customer_audiences_at(
  p_identifier_type text, p_identifier text, p_subset text[], p_at timestamptz, p_with_sizes boolean DEFAULT true
) RETURNS TABLE (name text, state text, description text, is_ready boolean, revision integer, size bigint,
                 external_audience_id text, event_ts timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_type_id smallint := passthrough._identifier_type_id_for_read(p_identifier_type, p_identifier);
BEGIN
  PERFORM passthrough._check_subset(p_subset);
  PERFORM passthrough._check_instant(p_at, 'at');
  PERFORM passthrough._check_horizon(p_at, 'at');
  IF passthrough._memberships_distributed() THEN
    RETURN QUERY
      SELECT * FROM passthrough._customer_audiences_at_distributed(v_type_id, p_identifier, p_subset, p_at, p_with_sizes);
    RETURN;
  END IF;
  RETURN QUERY
    SELECT a.name::text, 'qualified'::text, a.description, true, a.revision,
           CASE WHEN p_with_sizes THEN passthrough._audience_size_at(a.audience_key, p_at) END,
           x.external_id::text, s.event_ts
    FROM (
      -- per audience, the greatest-ts input at or before p_at: an event, or the verdict of the newest
      -- snapshot (disqualify first at equal ts)
      SELECT DISTINCT ON (i.audience_key) i.audience_key, i.qualified, i.event_ts
      FROM (
        SELECT e.audience_key, e.qualified, e.event_ts
        FROM passthrough.events e
        WHERE e.identifier_type_id = v_type_id AND e.identifier = p_identifier AND e.event_ts <= p_at
        UNION ALL
        SELECT k.audience_key, passthrough._listed(b.id, v_type_id, p_identifier), b.snapshot_at
        FROM (SELECT DISTINCT x.audience_key FROM passthrough.snapshots x WHERE x.snapshot_at <= p_at) k
        CROSS JOIN LATERAL passthrough._snapshot_at_or_before(k.audience_key, p_at) b
      ) i
      ORDER BY i.audience_key, i.event_ts DESC, i.qualified
    ) s
    JOIN passthrough.audiences a ON a.audience_key = s.audience_key
    JOIN passthrough.external_audiences x ON x.id = s.audience_key
    WHERE s.qualified
      AND passthrough._within_ttl(s.event_ts, a.ttl, p_at)
      AND (p_subset IS NULL OR a.name = ANY (p_subset))
    ORDER BY a.name;
END;
$$;
COMMENT ON FUNCTION passthrough.customer_audiences_at(text, text, text[], timestamptz, boolean) IS
  'customer_audiences as of p_at: the defined audiences (of p_subset, or all when NULL) the customer was qualified for at p_at by the inputs with ts at or before it, events and snapshots (greatest ts wins, disqualify wins a tie; a qualify older than the audience''s current ttl at p_at no longer counts), with each audience''s size at p_at (NULL when p_with_sizes is false: sizes read the audience''s whole log). PT003 for an invalid identifier, PT010 for an invalid argument, PT031 for a time before the history horizon (sql/functions/240_retention.sql).';

CREATE FUNCTION passthrough.membership_history(p_identifier_type text, p_identifier text, p_audience text)
RETURNS TABLE (event_ts timestamptz, action text, qualified_after boolean, changed boolean,
               received_at timestamptz, source text, batch_id bigint, idempotence_id text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_type_id smallint := passthrough._identifier_type_id_for_read(p_identifier_type, p_identifier);
  v_key     integer := passthrough._audience_key_for_read(p_audience);
  v_ttl     interval := (SELECT a.ttl FROM passthrough.audiences a WHERE a.audience_key = v_key);
BEGIN
  RETURN QUERY
    WITH events AS (
      SELECT e.event_ts AS ts, e.qualified AS q, e.batch_id AS b, e.idempotence_id AS idem, false AS verdict,
             NULL::timestamptz AS received_at, NULL::text AS source
      FROM passthrough.events e
      WHERE e.identifier_type_id = v_type_id AND e.identifier = p_identifier AND e.audience_key = v_key
    ), verdicts AS (
      -- the audience's snapshots, each T's by its last import (which holds the verdict of that T)
      -- (whether it lists the customer: the snapshots listing the customer, read once by the key, rather
      -- than a _listed call per snapshot, a SQL function over snapshot_members that Citus refuses; on the
      -- customer's key Citus runs the statement on the customer's shard, events included)
      SELECT s.snapshot_at AS ts,
             s.id IN (SELECT l.snapshot_id FROM passthrough.snapshot_members l
                      WHERE l.identifier_type_id = v_type_id AND l.identifier = p_identifier) AS q,
             s.batch_id AS b,
             NULL::text AS idem, true AS verdict, s.received_at, s.source
      FROM passthrough.snapshots s
      WHERE s.audience_key = v_key
        AND NOT EXISTS (SELECT 1 FROM passthrough.snapshots n
                        WHERE n.audience_key = v_key AND n.snapshot_at = s.snapshot_at AND n.id > s.id)
    ), logged AS (
      -- a snapshot that leaves the customer out shows from the customer's first input on
      SELECT * FROM events
      UNION ALL
      SELECT v.* FROM verdicts v
      WHERE v.q OR v.ts >= (SELECT min(x.ts) FROM (SELECT ts FROM events UNION ALL
                                                   SELECT ts FROM verdicts WHERE q) x)
    ), per_ts AS (
      -- the state after all inputs of one ts: disqualify wins a tie
      SELECT l.ts, bool_and(l.q) AS q_after FROM logged l GROUP BY l.ts
    ), around AS (
      SELECT p.ts, p.q_after, lag(p.q_after) OVER w AS prev_q, lag(p.ts) OVER w AS prev_ts,
             lead(p.ts) OVER w AS next_ts
      FROM per_ts p WINDOW w AS (ORDER BY p.ts)
    ), steps AS (
      -- with a ttl, the state just before ts is the previous step's, unless it had expired by then
      SELECT a.ts, a.q_after, a.next_ts,
             a.q_after IS DISTINCT FROM (coalesce(a.prev_q, false)
                                         AND (v_ttl IS NULL OR a.ts <= a.prev_ts + v_ttl)) AS changed
      FROM around a
    )
    SELECT x.ts, x.action, x.q_after, x.changed, coalesce(x.received_at, bt.received_at),
           coalesce(x.source, bt.source), x.b, x.idem
    FROM (
      SELECT l.ts,
             CASE WHEN l.verdict THEN CASE WHEN l.q THEN 'snapshot_qualify' ELSE 'snapshot_disqualify' END
                  WHEN l.q THEN 'qualify' ELSE 'disqualify' END AS action,
             s.q_after, s.changed, l.b, l.idem, l.q, l.received_at, l.source
      FROM logged l JOIN steps s ON s.ts = l.ts
      UNION ALL
      -- expiries that happened: the qualify's ts + the ttl, before any newer input
      SELECT s.ts + v_ttl, 'expire', false, true, NULL::bigint, NULL::text, false, NULL::timestamptz, NULL::text
      FROM steps s
      WHERE v_ttl IS NOT NULL AND s.q_after AND s.ts + v_ttl <= now()
        AND (s.next_ts IS NULL OR s.ts + v_ttl < s.next_ts)
    ) x
    LEFT JOIN passthrough.batches bt ON bt.id = x.b
    ORDER BY x.ts, x.action = 'expire' DESC, x.q, x.b, x.action;
END;
$$;
COMMENT ON FUNCTION passthrough.membership_history(text, text, text) IS
  'Every input of one customer for one defined audience, in event time: each logged event, and each snapshot of the audience (action snapshot_qualify when it lists the customer, snapshot_disqualify when not; from the customer''s first input on) at its T, with its ts, action, the state after its ts (qualified_after), whether the state changed at that ts, when and from where it was received, its batch and idempotence id; for an audience with a ttl, each expiry that happened is a row with action ''expire'' at its real time (no batch). Events older than the history horizon may have been pruned (each pair keeps its newest one). PT003 for an invalid identifier, PT006 for an unknown audience.';

CREATE FUNCTION passthrough.audience_size_at(p_audience text, p_at timestamptz) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_key integer := passthrough._audience_key_for_read(p_audience);
BEGIN
  PERFORM passthrough._check_instant(p_at, 'at');
  PERFORM passthrough._check_horizon(p_at, 'at');
  RETURN passthrough._audience_size_at(v_key, p_at);
END;
$$;
COMMENT ON FUNCTION passthrough.audience_size_at(text, timestamptz) IS
  'The exact number of members of a defined audience at p_at, by the events logged with ts at or before it. Reads the audience''s whole log. PT006 for an unknown audience, PT010 for an invalid time, PT031 for one before the history horizon.';

CREATE FUNCTION passthrough.audience_size_history(
  p_audience text, p_from timestamptz, p_to timestamptz, p_bucket text DEFAULT 'hour'
) RETURNS TABLE (bucket_start timestamptz, bucket_end timestamptz, size_at_start bigint, entered bigint,
                 exited bigint, size_at_end bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_key     integer := passthrough._audience_key_for_read(p_audience);
  v_ttl     interval := (SELECT a.ttl FROM passthrough.audiences a WHERE a.audience_key = v_key);
  v_step    interval;
  v_first   timestamptz;
  v_buckets bigint;
BEGIN
  PERFORM passthrough._check_instant(p_from, 'from');
  PERFORM passthrough._check_instant(p_to, 'to');
  -- before date_trunc reads it: an unknown unit there is PostgreSQL's 22023, not this error
  IF p_bucket IS NULL OR p_bucket NOT IN ('hour', 'day') THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('bucket must be hour or day, got %s', coalesce(to_json(left(p_bucket, 64))::text, 'NULL')),
      DETAIL = 'field: bucket';
  END IF;
  PERFORM passthrough._check_horizon(date_trunc(p_bucket, p_from, 'UTC'), 'from');
  IF p_to <= p_from THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = 'to must be later than from', DETAIL = 'field: to';
  END IF;
  v_step := CASE p_bucket WHEN 'hour' THEN interval '1 hour' ELSE interval '1 day' END;
  v_first := date_trunc(p_bucket, p_from, 'UTC');
  v_buckets := ceil(extract(epoch FROM p_to - v_first) / extract(epoch FROM v_step));
  IF v_buckets > 1000 THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('at most 1000 buckets per call, this window has %s', v_buckets),
      DETAIL = 'field: to',
      HINT = 'Ask for a shorter window, or for day buckets.';
  END IF;
  RETURN QUERY
    WITH logged AS (
      SELECT e.identifier_type_id AS t, e.identifier AS i, e.event_ts AS ts, e.qualified AS q
      FROM passthrough.events e
      WHERE e.audience_key = v_key AND e.event_ts <= v_first + v_buckets * v_step
    ), snaps AS (
      -- each T's last snapshot (it holds the verdict of that T) up to the window's end, and the T before
      SELECT x.id, x.snapshot_at AS ts, lag(x.id) OVER w AS prev_id, lag(x.snapshot_at) OVER w AS prev_ts
      FROM (SELECT DISTINCT ON (s.snapshot_at) s.id, s.snapshot_at
            FROM passthrough.snapshots s
            WHERE s.audience_key = v_key AND s.snapshot_at <= v_first + v_buckets * v_step
            ORDER BY s.snapshot_at, s.id DESC) x
      WINDOW w AS (ORDER BY x.snapshot_at)
    ), listed AS (
      SELECT m.identifier_type_id AS t, m.identifier AS i, sn.ts
      FROM snaps sn JOIN passthrough.snapshot_members m ON m.snapshot_id = sn.id
    ), inputs AS (
      SELECT l.t, l.i, l.ts, l.q FROM logged l
      UNION ALL
      -- a snapshot's verdict, for the pairs whose state it can change: those it lists, and those that may be
      -- members just before its T (listed by the snapshot before, or with an event since that one); it
      -- leaves every other pair out, as it was
      SELECT v.t, v.i, v.ts, true FROM listed v
      UNION ALL
      SELECT c.t, c.i, c.ts, false
      FROM (SELECT sn.ts, m.identifier_type_id AS t, m.identifier AS i
            FROM snaps sn JOIN passthrough.snapshot_members m ON m.snapshot_id = sn.prev_id
            UNION
            SELECT sn.ts, l.t, l.i
            FROM logged l JOIN snaps sn ON l.ts <= sn.ts AND (sn.prev_ts IS NULL OR l.ts > sn.prev_ts)) c
      -- those it does not list (an anti-join, not a _listed call per pair: Citus refuses a SQL function over
      -- snapshot_members)
      WHERE NOT EXISTS (SELECT 1 FROM listed v WHERE v.t = c.t AND v.i = c.i AND v.ts = c.ts)
    ), per_ts AS (
      -- each pair's state after all its inputs of one ts (disqualify wins a tie), up to the window's end
      SELECT n.t, n.i, n.ts, bool_and(n.q) AS q FROM inputs n GROUP BY 1, 2, 3
    ), steps AS (
      SELECT p.ts, p.q, lag(p.q) OVER w AS prev_q, lag(p.ts) OVER w AS prev_ts, lead(p.ts) OVER w AS next_ts
      FROM per_ts p WINDOW w AS (PARTITION BY p.t, p.i ORDER BY p.ts)
    ), moves AS (
      -- with a ttl, the state just before ts is the previous step's unless it had expired by then,
      -- and a qualify not followed by a newer event within the ttl leaves at ts + ttl
      SELECT s.ts, s.q::integer - (coalesce(s.prev_q, false)
                                   AND (v_ttl IS NULL OR s.ts <= s.prev_ts + v_ttl))::integer AS delta
      FROM steps s
      UNION ALL
      SELECT s.ts + v_ttl, -1 FROM steps s
      WHERE v_ttl IS NOT NULL AND s.q AND (s.next_ts IS NULL OR s.ts + v_ttl < s.next_ts)
    ), binned AS (
      -- bucket n (from 1) holds the moves with ts in (start of n, end of n]; 0 and below: before the window
      SELECT ceil(extract(epoch FROM m.ts - v_first) / extract(epoch FROM v_step))::bigint AS n,
             count(*) FILTER (WHERE m.delta = 1) AS n_in, count(*) FILTER (WHERE m.delta = -1) AS n_out
      FROM moves m WHERE m.delta <> 0 AND m.ts > v_first
      GROUP BY 1
    ), counted AS (
      SELECT v_first + (g.n - 1) * v_step AS b_start, v_first + g.n * v_step AS b_end,
             coalesce(x.n_in, 0) AS n_in, coalesce(x.n_out, 0) AS n_out
      FROM generate_series(1::bigint, v_buckets) AS g(n) LEFT JOIN binned x ON x.n = g.n
    ), base AS (
      SELECT coalesce(sum(m.delta), 0)::bigint AS size FROM moves m WHERE m.ts <= v_first
    )
    SELECT c.b_start, c.b_end,
           (bs.size + coalesce(sum(c.n_in - c.n_out) OVER w, 0) - (c.n_in - c.n_out))::bigint,
           c.n_in, c.n_out,
           (bs.size + sum(c.n_in - c.n_out) OVER w)::bigint
    FROM counted c CROSS JOIN base bs
    WINDOW w AS (ORDER BY c.b_start)
    ORDER BY c.b_start;
END;
$$;
COMMENT ON FUNCTION passthrough.audience_size_history(text, timestamptz, timestamptz, text) IS
  'An audience''s size over time, exact, from the event log and the snapshots: buckets of an hour or a day (UTC), from the one holding p_from to the one holding p_to, at most 1000. Each bucket (bucket_start, bucket_end] has the members at its start and at its end and the entries and exits between (size_at_end = size_at_start + entered - exited); exits include expiries (the audience''s current ttl). PT006 for an unknown audience, PT010 for an invalid argument, PT031 when the window starts before the history horizon.';
