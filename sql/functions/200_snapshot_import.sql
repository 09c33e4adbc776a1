-- Snapshot import, for systems that cannot send disqualify events: the full list of one audience's
-- members at a time T.
--
-- A snapshot is an input like an event, with a meaning at T for every identifier of its audience: listed,
-- qualified at T; not listed, disqualified at T. The state of a pair is decided by its greatest-ts input
-- among its events and its audience's snapshots, disqualify winning a tie (so a snapshot's verdict at T
-- loses to a disqualify event at T and beats a qualify event at T; of two snapshots with the same T, a
-- pair is listed only if both list it). Each listed row is also a qualify event at its own ts (T when it
-- has none), logged like any other, so point-in-time reads before T see it. The state is then the same
-- for any arrival order of events and snapshots:
--
-- * Each snapshot's list is kept (passthrough.snapshot_members): reads in the past use the newest
--   snapshot at or before their time (sql/functions/190_members_at.sql).
-- * The import of an audience's newest snapshot applies its verdict through the one writer, as
--   verdict-only rows: qualified at T for each listed pair, disqualified at T for each pair stored as
--   qualified by an input no newer than T; a newer input stands. Every other pair is already out. From
--   then on, an event before T (or a qualify at T) can change nothing, and the writer only logs it
--   (sql/functions/150_writer.sql): no lookup, no row written. The listed rows are logged as events.
--   One transaction: readers see the old membership or the new one, never a mix.
-- * An import holds its audience's advisory lock exclusively, writers hold theirs shared, so no writer
--   that cannot see the snapshot yet writes a pair the import cannot see (sql/functions/150_writer.sql).
-- * The guards count as of T: the members at T by the inputs known before the import, and those of them
--   the snapshot leaves out.
--
--   SELECT passthrough.begin_load();                  -- the same staging table as bulk loading
--   COPY pg_temp.passthrough_load (type, action, audience_id, ts, identifier_type, identifier) FROM STDIN;
--   SELECT * FROM passthrough.import_snapshot('aud-1');            -- or p_dry_run => true

-- Validates the staged rows as a snapshot of audience p_key (p_audience_id; NULL when never seen), and leaves
-- its diff as of T in pg_temp.passthrough_snapshot_diff; returns T.
CREATE FUNCTION passthrough._prepare_snapshot(p_audience_id text, p_key integer, p_at numeric) RETURNS timestamptz
LANGUAGE plpgsql
SET work_mem = '64MB'
AS $$
DECLARE
  v_now     timestamptz := now();
  v_max_ts  numeric;
  v_at      timestamptz;
  v_total   bigint;
  v_bad     bigint;
  v_invalid jsonb;
  v_newest  timestamptz;
  v_same_t  bigint;
  v_other   text;
  -- the same-T snapshot the diff's statement asks _listed about; on a Citus cluster none (Citus refuses
  -- SQL functions over its tables): its list is read after, in a statement of its own
  v_listed_by     bigint;
  v_distributed   boolean := passthrough._memberships_distributed();
  v_same_t_types  smallint[];
  v_same_t_ids    text[];
BEGIN
  PERFORM passthrough._check_staging(
    'Call SELECT passthrough.begin_load(); then COPY the snapshot''s rows into pg_temp.passthrough_load.');
  PERFORM passthrough._key_staged_identifiers();
  SELECT extract(epoch FROM v_now + s.max_future_skew) INTO v_max_ts FROM passthrough.settings s;
  IF p_at IS NOT NULL AND cardinality(passthrough._event_problems(
       'passthrough', 'qualify', 1, 'fs_user_id', true, 'x', p_audience_id, p_at, v_max_ts, NULL)) > 0 THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('invalid snapshot time %s', passthrough._number_in_message(p_at)),
      DETAIL = array_to_string(passthrough._event_problems(
        'passthrough', 'qualify', 1, 'fs_user_id', true, 'x', p_audience_id, p_at, v_max_ts, NULL), '; '),
      HINT = 'The snapshot time is seconds since the Unix epoch, like an event''s ts.';
  END IF;

  IF passthrough._session_table('passthrough_snapshot_rows') IS NULL THEN
    CREATE TEMPORARY TABLE passthrough_snapshot_rows (
      row_no bigint, type_id smallint, identifier text COLLATE "C", ts numeric, problems text[]);
  END IF;
  TRUNCATE pg_temp.passthrough_snapshot_rows;
  -- The event rules every path shares, plus what a snapshot row must also be.
  INSERT INTO pg_temp.passthrough_snapshot_rows (row_no, type_id, identifier, ts, problems)
  SELECT s.row_no, t.id, s.identifier, s.ts,
         coalesce(s.transport_problems, '{}')
         || passthrough._event_problems(
              s.type, s.action, s.identifier_count, s.identifier_type, t.high_confidence,
              s.identifier, s.audience_id, s.ts, v_max_ts, s.idempotence_id)
         || array_remove(ARRAY[
              CASE WHEN s.action = 'disqualify'
                THEN 'action: a snapshot lists the qualified members; leave out who is not' END,
              CASE WHEN s.audience_id <> p_audience_id
                THEN format('data.audience_id: this is a snapshot of %s, got %s', to_json(p_audience_id),
                            to_json(left(s.audience_id, 255))) END,
              CASE WHEN s.ts > p_at
                THEN format('data.ts: %s is later than the snapshot time %s', s.ts, p_at) END
            ], NULL)
  FROM pg_temp.passthrough_load s
  LEFT JOIN passthrough.identifier_types t ON t.name = passthrough._normalize_identifier_type(s.identifier_type);

  SELECT count(*), count(*) FILTER (WHERE cardinality(r.problems) > 0), max(r.ts) FILTER (WHERE cardinality(r.problems) = 0)
  INTO v_total, v_bad, v_max_ts
  FROM pg_temp.passthrough_snapshot_rows r;
  IF v_bad > 0 THEN
    -- Rows that all name one other audience are a snapshot of that one, imported under the wrong name (a
    -- file's name is its audience by default): one error that says so, not the same problem on every row.
    SELECT min(s.audience_id) INTO v_other FROM pg_temp.passthrough_load s
    HAVING count(*) = v_total AND count(DISTINCT s.audience_id) = 1 AND count(s.audience_id) = v_total
       AND min(s.audience_id) <> p_audience_id AND passthrough._valid_audience_id(min(s.audience_id));
    IF v_other IS NOT NULL THEN
      RAISE EXCEPTION USING ERRCODE = 'PT024',
        MESSAGE = format('snapshot of %s refused: its rows are of audience %s', to_json(p_audience_id),
                         to_json(v_other)),
        DETAIL = format('All %s rows name audience %s in their audience_id; a snapshot''s rows name the audience '
                        'it is imported as.', v_total, to_json(v_other)),
        HINT = format('If they are the members of %s, import them as its snapshot: passthrough import --audience '
                      '%s FILE (without --audience, a file''s name is its audience), POST to its '
                      '/v3/audiences/{audience_id}/snapshot, or passthrough.import_snapshot(%L).',
                      to_json(v_other), v_other, v_other);
    END IF;
    SELECT jsonb_agg(passthrough._invalid_row(x.row_no, x.problems) ORDER BY x.row_no)
    INTO v_invalid
    FROM (SELECT r.row_no, r.problems FROM pg_temp.passthrough_snapshot_rows r
          WHERE cardinality(r.problems) > 0 ORDER BY r.row_no LIMIT 100) x;
    PERFORM passthrough._raise_invalid_rows('snapshot', v_bad, v_total, v_invalid,
      'Nothing was changed. DETAIL lists (up to 100) invalid rows as JSON '
      '[{"row": row_no, "message": ..., "problems": [...]}]; a snapshot is applied whole or not at all.');
  END IF;

  -- T: as given, else the newest ts in the snapshot (conservative: nothing newer than the data is
  -- overridden), else the transaction time.
  v_at := CASE WHEN p_at IS NOT NULL THEN passthrough._ts_from_seconds(p_at)
               WHEN v_max_ts IS NOT NULL THEN passthrough._ts_from_seconds(v_max_ts)
               ELSE v_now END;
  SELECT e.snapshot_at INTO v_newest FROM passthrough.external_audiences e WHERE e.id = p_key;
  -- the last snapshot of the same T: the verdict at T is its list and this one's together
  SELECT s.id INTO v_same_t FROM passthrough.snapshots s
  WHERE s.audience_key = p_key AND s.snapshot_at = v_at ORDER BY s.id DESC LIMIT 1;
  v_listed_by := CASE WHEN v_distributed THEN NULL ELSE v_same_t END;

  IF passthrough._session_table('passthrough_snapshot_diff') IS NULL THEN
    CREATE TEMPORARY TABLE passthrough_snapshot_diff (
      change text, listed boolean, type_id smallint, identifier text COLLATE "C", current_ts timestamptz,
      snapshot_ts timestamptz, in_verdict boolean, member boolean);
  END IF;
  TRUNCATE pg_temp.passthrough_snapshot_diff;
  INSERT INTO pg_temp.passthrough_snapshot_diff
    (change, listed, type_id, identifier, current_ts, snapshot_ts, in_verdict, member)
  WITH listed AS (
    SELECT r.type_id, r.identifier,
           max(CASE WHEN r.ts IS NULL THEN v_at ELSE passthrough._ts_from_seconds(r.ts) END) AS ts
    FROM pg_temp.passthrough_snapshot_rows r GROUP BY r.type_id, r.identifier
  ), members AS (
    -- the members at T by every input known before this import
    SELECT m.identifier_type_id AS type_id, m.identifier FROM passthrough._audience_members_at(p_key, v_at) m
  ), current AS (
    -- members now as live reads see them (within the ttl): those not members at T and not listed are
    -- reported as kept by a newer input
    SELECT m.identifier_type_id AS type_id, m.identifier
    FROM passthrough.memberships m LEFT JOIN passthrough.audiences a ON a.audience_key = m.audience_key
    WHERE m.audience_key = p_key AND m.qualified AND passthrough._within_ttl(m.event_ts, a.ttl, v_now)
  ), pairs AS (
    SELECT coalesce(l.type_id, b.type_id, c.type_id) AS type_id,
           coalesce(l.identifier, b.identifier, c.identifier) AS identifier,
           l.identifier IS NOT NULL AS listed, b.identifier IS NOT NULL AS member, l.ts,
           l.identifier IS NOT NULL
             AND (v_listed_by IS NULL OR passthrough._listed(v_listed_by, l.type_id, l.identifier)) AS in_verdict
    FROM listed l
    FULL JOIN members b ON b.type_id = l.type_id AND b.identifier = l.identifier
    FULL JOIN current c ON c.type_id = coalesce(l.type_id, b.type_id) AND c.identifier = coalesce(l.identifier, b.identifier)
  ), judged AS (
    SELECT p.*, c.event_ts AS current_ts,
           -- whether the verdict at T decides the pair's state now: no snapshot is newer, and neither is the
           -- input that decides it now (at the same ts, a disqualify wins)
           (v_newest IS NULL OR v_at >= v_newest)
           AND (c.event_ts IS NULL OR c.event_ts < v_at
                OR (c.event_ts = v_at AND (c.qualified OR NOT p.in_verdict))) AS decides
    FROM pairs p
    LEFT JOIN passthrough.memberships c
      ON c.identifier_type_id = p.type_id AND c.identifier = p.identifier AND c.audience_key = p_key
  )
  SELECT CASE
           WHEN j.listed AND j.member THEN 'unchanged'
           WHEN j.listed AND j.in_verdict AND j.decides THEN 'qualify'
           WHEN NOT j.listed AND j.member AND j.decides THEN 'disqualify'
           ELSE 'kept_newer'
         END,
         j.listed, j.type_id, j.identifier, j.current_ts, coalesce(j.ts, v_at), j.in_verdict, j.member
  FROM judged j;
  IF v_distributed AND v_same_t IS NOT NULL THEN
    -- a listed pair the same-T snapshot leaves out is not in the verdict at T: then a non-member is kept
    -- out ("kept_newer"), as the statement above decides it on one server (the pairs not listed are not
    -- affected: in_verdict counts only for listed ones)
    SELECT array_agg(l.identifier_type_id), array_agg(l.identifier::text) INTO v_same_t_types, v_same_t_ids
    FROM passthrough.snapshot_members l WHERE l.snapshot_id = v_same_t;
    UPDATE pg_temp.passthrough_snapshot_diff d
    SET in_verdict = false, change = CASE WHEN d.member THEN 'unchanged' ELSE 'kept_newer' END
    WHERE d.in_verdict
      AND NOT EXISTS (SELECT 1 FROM unnest(v_same_t_types, v_same_t_ids) AS x(type_id, identifier)
                      WHERE x.type_id = d.type_id AND x.identifier = d.identifier);
  END IF;
  RETURN v_at;
END;
$$;
COMMENT ON FUNCTION passthrough._prepare_snapshot(text, integer, numeric) IS
  'Private: validates the staged rows as a snapshot of one audience (PT020 listing invalid rows; PT024 when they all name one other audience) and leaves its diff against the members at T in pg_temp.passthrough_snapshot_diff; returns T.';

CREATE FUNCTION passthrough.import_snapshot(
  p_audience_id text,
  p_at numeric DEFAULT NULL,
  p_max_disqualify_share numeric DEFAULT NULL,
  p_force boolean DEFAULT false,
  p_dry_run boolean DEFAULT false,
  p_source text DEFAULT 'snapshot'
) RETURNS passthrough.snapshot_result
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET work_mem = '64MB'
AS $$
DECLARE
  v_result   passthrough.snapshot_result;
  v_applied  passthrough.apply_result;
  v_at       timestamptz;
  v_key      integer;
  v_dropped  bigint;
  v_id       bigint;
  v_newest   boolean;
  v_events   bigint;
  v_verdicts bigint;
  v_states   text[] := '{}';  -- the SQLSTATE, DETAIL and HINT each guard in v_result.refused_by raises
  v_details  text[] := '{}';
  v_hints    text[] := '{}';
  -- NULL: the default, here only (the CLI and HTTP pass NULL when they are given nothing)
  v_max_share numeric := coalesce(p_max_disqualify_share, 0.5);
BEGIN
  IF v_max_share < 0 OR v_max_share > 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('max_disqualify_share must be between 0 and 1, got %s', passthrough._number_in_message(v_max_share)),
      DETAIL = 'field: max_disqualify_share';
  END IF;
  IF NOT coalesce(passthrough._valid_audience_id(p_audience_id), false) THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = 'the snapshot''s audience id must be a non-empty string of at most 255 characters',
      DETAIL = 'field: audience_id';
  END IF;
  IF NOT p_dry_run THEN
    PERFORM passthrough._raise_if_disabled();
    PERFORM passthrough._check_source(p_source, 'snapshot');
    INSERT INTO passthrough.external_audiences (external_id) VALUES (p_audience_id)
    ON CONFLICT (external_id) DO NOTHING;
  END IF;
  SELECT e.id INTO v_key FROM passthrough.external_audiences e WHERE e.external_id = p_audience_id;
  IF NOT p_dry_run THEN
    -- Until this transaction ends: no other import of the audience, and no writer of it (nor of a batch
    -- naming over 256 audiences) that started before; the diff below then sees every pair (sql/functions/150_writer.sql).
    PERFORM pg_advisory_xact_lock(passthrough._audience_lock_space(), v_key);
    PERFORM pg_advisory_xact_lock(passthrough._audience_lock_space(), 0);
  END IF;

  v_at := passthrough._prepare_snapshot(p_audience_id, v_key, p_at);
  SELECT v_at,
         count(*) FILTER (WHERE d.listed),
         count(*) FILTER (WHERE d.change = 'qualify'),
         count(*) FILTER (WHERE d.change = 'disqualify'),
         count(*) FILTER (WHERE d.change = 'unchanged'),
         count(*) FILTER (WHERE d.change = 'kept_newer'),
         count(*) FILTER (WHERE d.member),
         false, NULL, 0,
         count(*) FILTER (WHERE d.member AND NOT d.listed)
  INTO v_result.snapshot_at, v_result.listed, v_result.to_qualify, v_result.to_disqualify, v_result.unchanged,
       v_result.kept_newer, v_result.members_before, v_result.applied, v_result.batch_id, v_result.changed,
       v_dropped
  FROM pg_temp.passthrough_snapshot_diff d;

  -- The guards, decided here only: a dry run reports each one that trips (it is for looking), an import
  -- raises the first.
  v_result.refused_by := '{}';
  v_result.refusal_reasons := '{}';
  IF v_result.listed = 0 AND NOT p_force THEN
    v_result.refused_by := v_result.refused_by || 'empty_snapshot'::text;
    v_result.refusal_reasons := v_result.refusal_reasons || 'it is empty'::text;
    v_states := v_states || 'PT022'::text;
    v_details := v_details || format('It would disqualify all %s members.', v_dropped);
    v_hints := v_hints
      || 'An empty export is usually a broken upstream job. To empty the audience on purpose, import it '
         'with force: p_force => true in SQL, force=true over HTTP, passthrough import --force.'::text;
  END IF;
  -- as of T: the members it leaves out, whether or not a newer input keeps them now
  IF v_dropped > v_max_share * v_result.members_before AND v_dropped > 0 AND NOT p_force THEN
    v_result.refused_by := v_result.refused_by || 'snapshot_disqualifies_too_many'::text;
    v_result.refusal_reasons := v_result.refusal_reasons
      || format('it would disqualify %s of %s members (%s%%), more than the allowed %s%%',
                v_dropped, v_result.members_before, round(100.0 * v_dropped / v_result.members_before, 1),
                round(100 * v_max_share, 1));
    v_states := v_states || 'PT023'::text;
    v_details := v_details
      || format('As of T (%s): to qualify: %s, to disqualify: %s, unchanged: %s, kept by a newer input: %s',
                v_at, v_result.to_qualify, v_dropped, v_result.unchanged, v_result.kept_newer);
    v_hints := v_hints
      || 'Check the export. To apply it anyway, import it with force (p_force => true in SQL, force=true '
         'over HTTP, passthrough import --force) or with a higher max_disqualify_share (p_max_disqualify_share, '
         'max_disqualify_share=, --max-disqualify-share).'::text;
  END IF;
  IF p_dry_run THEN
    RETURN v_result;
  END IF;
  IF cardinality(v_result.refused_by) > 0 THEN
    RAISE EXCEPTION USING ERRCODE = v_states[1],
      MESSAGE = format('snapshot of %s refused: %s', to_json(p_audience_id), v_result.refusal_reasons[1]),
      DETAIL = v_details[1], HINT = v_hints[1];
  END IF;

  -- The snapshot is stored, and becomes its audience's newest unless one with a later T exists.
  INSERT INTO passthrough.snapshots (audience_key, snapshot_at, listed, source)
  VALUES (v_key, v_at, v_result.listed, p_source)
  RETURNING id INTO v_id;
  INSERT INTO passthrough.snapshot_members (snapshot_id, identifier_type_id, identifier)
  SELECT v_id, d.type_id, d.identifier FROM pg_temp.passthrough_snapshot_diff d
  WHERE d.in_verdict ORDER BY d.type_id, d.identifier;
  UPDATE passthrough.external_audiences e SET snapshot_at = v_at, snapshot_id = v_id
  WHERE e.id = v_key AND (e.snapshot_at IS NULL OR e.snapshot_at <= v_at);
  v_newest := FOUND;

  -- Through the one writer: each row as a qualify event at its ts (T without one), logged; and, when
  -- this snapshot is the newest, its verdict at T as verdict-only rows: qualified for the pairs it lists,
  -- disqualified for the pairs stored as qualified by an input no newer than T (a newer input stands). The
  -- writer lets only the verdict move pairs: the events are no newer than T.
  PERFORM passthrough._incoming_table();
  INSERT INTO pg_temp.passthrough_incoming (t, i, a, q, ts, idem)
  SELECT r.type_id, r.identifier, p_audience_id, true,
         CASE WHEN r.ts IS NULL THEN v_at ELSE passthrough._ts_from_seconds(r.ts) END, NULL
  FROM pg_temp.passthrough_snapshot_rows r;
  GET DIAGNOSTICS v_events = ROW_COUNT;
  v_verdicts := 0;
  IF v_newest AND passthrough._memberships_distributed() THEN
    -- On a Citus cluster the same rows in three statements: Citus plans no correlated subquery over a
    -- temporary table beside its distributed memberships. The stored members no newer than T come to the
    -- coordinator, then those the verdict lists are taken out again.
    INSERT INTO pg_temp.passthrough_incoming (t, i, a, q, ts, idem, verdict_only)
    SELECT m.identifier_type_id, m.identifier, p_audience_id, false, v_at, NULL, true
    FROM passthrough.memberships m
    WHERE m.audience_key = v_key AND m.qualified AND m.event_ts <= v_at;
    DELETE FROM pg_temp.passthrough_incoming u USING pg_temp.passthrough_snapshot_diff d
    WHERE u.verdict_only AND NOT u.q AND d.in_verdict AND d.type_id = u.t AND d.identifier = u.i;
    INSERT INTO pg_temp.passthrough_incoming (t, i, a, q, ts, idem, verdict_only)
    SELECT d.type_id, d.identifier, p_audience_id, true, v_at, NULL, true
    FROM pg_temp.passthrough_snapshot_diff d WHERE d.in_verdict;
    SELECT count(*) INTO v_verdicts FROM pg_temp.passthrough_incoming u WHERE u.verdict_only;
  ELSIF v_newest THEN
    INSERT INTO pg_temp.passthrough_incoming (t, i, a, q, ts, idem, verdict_only)
    SELECT d.type_id, d.identifier, p_audience_id, true, v_at, NULL, true
    FROM pg_temp.passthrough_snapshot_diff d WHERE d.in_verdict
    UNION ALL
    SELECT m.identifier_type_id, m.identifier, p_audience_id, false, v_at, NULL, true
    FROM passthrough.memberships m
    WHERE m.audience_key = v_key AND m.qualified AND m.event_ts <= v_at
      AND NOT EXISTS (SELECT 1 FROM pg_temp.passthrough_snapshot_diff d
                      WHERE d.in_verdict AND d.type_id = m.identifier_type_id AND d.identifier = m.identifier);
    GET DIAGNOSTICS v_verdicts = ROW_COUNT;
  END IF;
  v_applied := passthrough._apply_valid_events(p_source, v_events, v_verdicts);
  UPDATE passthrough.snapshots s SET batch_id = v_applied.batch_id WHERE s.id = v_id;
  v_result.applied := true;
  v_result.batch_id := v_applied.batch_id;
  v_result.changed := v_applied.changed;
  TRUNCATE pg_temp.passthrough_load RESTART IDENTITY;
  RETURN v_result;
END;
$$;
COMMENT ON FUNCTION passthrough.import_snapshot(text, numeric, numeric, boolean, boolean, text) IS
  'Imports the snapshot staged in pg_temp.passthrough_load (see passthrough.begin_load): the full list of one audience at T (p_at, default the newest ts in the list, else now). It is an input at T for every identifier of the audience: listed, qualified at T; not listed, disqualified at T; an input with a greater ts (or a disqualify at T) stands, whenever it arrives. Listed rows are also logged as qualify events at their ts. One transaction, one batch. Refused: invalid rows (PT020), rows that all name one other audience (PT024), and, unless p_force, by its guards: an empty snapshot (PT022) or one that leaves out more than p_max_disqualify_share (0 to 1, NULL for 0.5) of the members at T (PT023). p_dry_run computes the diff only (passthrough.snapshot_diff lists it) and raises no guard: refused_by and refusal_reasons name those that would refuse the import.';

CREATE FUNCTION passthrough.snapshot_diff(p_diff_limit integer DEFAULT NULL)
RETURNS TABLE (change text, identifier_type text, identifier text, current_ts timestamptz, snapshot_ts timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  -- NULL: the default, here only (passthrough import --diff-limit and HTTP diff_limit pass NULL when not given)
  v_limit integer := coalesce(p_diff_limit, 50);
BEGIN
  IF passthrough._session_table('passthrough_snapshot_diff') IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'PT021',
      MESSAGE = 'no snapshot diff in this session',
      HINT = 'Call passthrough.import_snapshot(..., p_dry_run => true) first.';
  END IF;
  PERFORM passthrough._check_limit(v_limit, 100000, 0, 'diff_limit');
  RETURN QUERY
    SELECT d.change, t.name::text, d.identifier::text, d.current_ts, d.snapshot_ts
    FROM pg_temp.passthrough_snapshot_diff d
    JOIN passthrough.identifier_types t ON t.id = d.type_id
    WHERE d.change <> 'unchanged'
    ORDER BY d.change, t.name, d.identifier
    LIMIT v_limit;
END;
$$;
COMMENT ON FUNCTION passthrough.snapshot_diff(integer) IS
  'The changes (qualify, disqualify, kept_newer) of the last snapshot import or dry run in this session, up to p_diff_limit rows (0 to 100000, NULL for 50; PT010 naming diff_limit otherwise); unchanged members are left out. The result''s counts tell whether the list was cut.';
