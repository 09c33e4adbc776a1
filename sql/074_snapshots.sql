-- Snapshot import, for systems that cannot send disqualify events: a full list of one audience's
-- members at time T replaces the previous one. Everyone listed gets a qualify event (with the row's ts,
-- or T); everyone qualified whose deciding event is older than T and who is not listed gets a
-- disqualify event at T. Those events go through the one writer like any other, so events newer than
-- T are never overridden, the log records the import, and it all happens in one transaction: readers
-- see the old membership or the new one, never a mix.
--
--   SELECT passthrough.begin_load();                  -- the same staging table as bulk loading
--   COPY pg_temp.passthrough_load (type, action, audience_id, ts, identifier_type, identifier) FROM STDIN;
--   SELECT * FROM passthrough.import_snapshot('aud-1');            -- or p_dry_run => true

CREATE TYPE passthrough.snapshot_result AS (
  snapshot_at   timestamptz, -- T
  listed        bigint,      -- distinct identifiers in the snapshot
  to_qualify    bigint,      -- listed, not qualified now: they become members
  to_disqualify bigint,      -- qualified now by an event older than T, not listed: they stop being members
  unchanged     bigint,      -- listed and qualified now
  kept_newer    bigint,      -- the snapshot disagrees with an event at or after T, which stands
  members_before bigint,     -- qualified members before the import
  applied       boolean,     -- false for a dry run
  batch_id      bigint,      -- the batch that holds the import's events (NULL when nothing was applied)
  changed       bigint       -- pairs whose qualified state changed
);
COMMENT ON TYPE passthrough.snapshot_result IS 'What importing (or dry-running) a snapshot did or would do.';

-- Validates the staged rows as a snapshot of p_audience_id and leaves the diff in
-- pg_temp.passthrough_snapshot_diff; returns T.
CREATE FUNCTION passthrough._prepare_snapshot(p_audience_id text, p_at numeric) RETURNS timestamptz
LANGUAGE plpgsql
SET work_mem = '64MB'
AS $$
DECLARE
  v_now     timestamptz := now();
  v_max_ts  numeric;
  v_at      timestamptz;
  v_key     integer;
  v_total   bigint;
  v_bad     bigint;
  v_invalid jsonb;
BEGIN
  PERFORM passthrough._check_staging(
    'Call SELECT passthrough.begin_load(); then COPY the snapshot''s rows into pg_temp.passthrough_load.');
  IF NOT coalesce(passthrough._valid_audience_id(p_audience_id), false) THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = 'the snapshot''s audience id must be a non-empty string of at most 255 characters',
      DETAIL = 'field: audience_id';
  END IF;
  SELECT extract(epoch FROM v_now + s.max_future_skew) INTO v_max_ts FROM passthrough.settings s;
  IF p_at IS NOT NULL AND cardinality(passthrough._event_problems(
       'passthrough', 'qualify', 1, 'fs_user_id', true, 'x', p_audience_id, p_at, v_max_ts, NULL)) > 0 THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('invalid snapshot time %s', p_at),
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
    SELECT jsonb_agg(jsonb_build_object('row', x.row_no, 'message', array_to_string(x.problems, '; '),
                                        'problems', to_jsonb(x.problems)) ORDER BY x.row_no)
    INTO v_invalid
    FROM (SELECT r.row_no, r.problems FROM pg_temp.passthrough_snapshot_rows r
          WHERE cardinality(r.problems) > 0 ORDER BY r.row_no LIMIT 100) x;
    RAISE EXCEPTION USING ERRCODE = 'PT020',
      MESSAGE = format('snapshot refused: %s of %s rows invalid; row %s: %s',
                       v_bad, v_total, v_invalid->0->>'row', v_invalid->0->>'message'),
      DETAIL = v_invalid::text,
      HINT = 'Nothing was changed. DETAIL lists (up to 100) invalid rows as JSON '
             '[{"row": row_no, "message": ..., "problems": [...]}]; a snapshot is applied whole or not at all.';
  END IF;

  -- T: as given, else the newest ts in the snapshot (conservative: nothing newer than the data is
  -- overridden), else the transaction time.
  v_at := CASE WHEN p_at IS NOT NULL THEN passthrough._ts_from_seconds(p_at)
               WHEN v_max_ts IS NOT NULL THEN passthrough._ts_from_seconds(v_max_ts)
               ELSE v_now END;
  SELECT id INTO v_key FROM passthrough.external_audiences WHERE external_id = p_audience_id;

  IF passthrough._session_table('passthrough_snapshot_diff') IS NULL THEN
    CREATE TEMPORARY TABLE passthrough_snapshot_diff (
      change text, listed boolean, type_id smallint, identifier text COLLATE "C", current_ts timestamptz,
      snapshot_ts timestamptz);
  END IF;
  TRUNCATE pg_temp.passthrough_snapshot_diff;
  INSERT INTO pg_temp.passthrough_snapshot_diff (change, listed, type_id, identifier, current_ts, snapshot_ts)
  WITH listed AS (
    SELECT r.type_id, r.identifier,
           max(CASE WHEN r.ts IS NULL THEN v_at ELSE passthrough._ts_from_seconds(r.ts) END) AS ts
    FROM pg_temp.passthrough_snapshot_rows r GROUP BY r.type_id, r.identifier
  ), current AS (
    -- qualified as live reads see it: a qualify that ran out under the audience's ttl (and that the sweeper
    -- has not recorded yet) is no member, so neither counted nor disqualified
    SELECT m.identifier_type_id AS type_id, m.identifier,
           m.qualified AND passthrough._within_ttl(m.event_ts, a.ttl, v_now) AS qualified, m.event_ts
    FROM passthrough.memberships m
    LEFT JOIN passthrough.audiences a ON a.audience_key = m.audience_key
    WHERE m.audience_key = v_key
  )
  SELECT CASE
           WHEN l.identifier IS NOT NULL AND c.qualified THEN 'unchanged'
           WHEN l.identifier IS NOT NULL AND (c.identifier IS NULL OR l.ts > c.event_ts) THEN 'qualify'
           WHEN l.identifier IS NOT NULL THEN 'kept_newer'       -- disqualified at or after the row's ts
           WHEN c.qualified AND c.event_ts < v_at THEN 'disqualify'
           WHEN c.qualified THEN 'kept_newer'                    -- qualified at or after T
         END,
         l.identifier IS NOT NULL,
         coalesce(l.type_id, c.type_id), coalesce(l.identifier, c.identifier), c.event_ts,
         CASE WHEN l.identifier IS NOT NULL THEN l.ts ELSE v_at END
  FROM listed l
  FULL JOIN current c ON c.type_id = l.type_id AND c.identifier = l.identifier
  WHERE l.identifier IS NOT NULL OR c.qualified;
  RETURN v_at;
END;
$$;
COMMENT ON FUNCTION passthrough._prepare_snapshot(text, numeric) IS
  'Private: validates the staged rows as a snapshot of one audience (PT020 listing invalid rows) and leaves the diff against the current membership in pg_temp.passthrough_snapshot_diff; returns T.';

CREATE FUNCTION passthrough.import_snapshot(
  p_audience_id text,
  p_at numeric DEFAULT NULL,
  p_max_disqualify_share numeric DEFAULT 0.5,
  p_force boolean DEFAULT false,
  p_dry_run boolean DEFAULT false,
  p_source text DEFAULT 'snapshot'
) RETURNS passthrough.snapshot_result
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET work_mem = '64MB'
AS $$
DECLARE
  v_result  passthrough.snapshot_result;
  v_applied passthrough.apply_result;
  v_at      timestamptz;
  v_type_ids smallint[];
  v_ids      text[];
  v_auds     text[];
  v_quals    boolean[];
  v_ts       timestamptz[];
  v_idems    text[];
BEGIN
  IF p_max_disqualify_share IS NULL OR p_max_disqualify_share < 0 OR p_max_disqualify_share > 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('max_disqualify_share must be between 0 and 1, got %s',
                       coalesce(p_max_disqualify_share::text, 'NULL')),
      DETAIL = 'field: max_disqualify_share';
  END IF;
  IF NOT p_dry_run THEN
    PERFORM passthrough._raise_if_disabled();
  END IF;
  -- One import per audience at a time; the lock is held until the transaction ends.
  PERFORM pg_advisory_xact_lock(hashtext('passthrough.import_snapshot'), hashtext(p_audience_id));

  v_at := passthrough._prepare_snapshot(p_audience_id, p_at);
  SELECT v_at,
         count(*) FILTER (WHERE d.listed),
         count(*) FILTER (WHERE d.change = 'qualify'),
         count(*) FILTER (WHERE d.change = 'disqualify'),
         count(*) FILTER (WHERE d.change = 'unchanged'),
         count(*) FILTER (WHERE d.change = 'kept_newer'),
         count(*) FILTER (WHERE d.change IN ('unchanged', 'disqualify') OR (d.change = 'kept_newer' AND NOT d.listed)),
         false, NULL, 0
  INTO v_result
  FROM pg_temp.passthrough_snapshot_diff d;

  IF v_result.listed = 0 AND NOT p_force THEN
    RAISE EXCEPTION USING ERRCODE = 'PT022',
      MESSAGE = format('snapshot of %s refused: it is empty', to_json(p_audience_id)),
      DETAIL = format('It would disqualify all %s members.', v_result.to_disqualify),
      HINT = 'An empty export is usually a broken upstream job. To empty the audience on purpose, import it '
             'with force: p_force => true in SQL, force=true over HTTP, passthrough import --force.';
  END IF;
  IF v_result.to_disqualify > p_max_disqualify_share * v_result.members_before AND v_result.to_disqualify > 0
     AND NOT p_force THEN
    RAISE EXCEPTION USING ERRCODE = 'PT023',
      MESSAGE = format('snapshot of %s refused: it would disqualify %s of %s members (%s%%), more than the '
                       'allowed %s%%', to_json(p_audience_id), v_result.to_disqualify, v_result.members_before,
                       round(100.0 * v_result.to_disqualify / v_result.members_before, 1),
                       round(100 * p_max_disqualify_share, 1)),
      DETAIL = format('to qualify: %s, to disqualify: %s, unchanged: %s', v_result.to_qualify,
                      v_result.to_disqualify, v_result.unchanged),
      HINT = 'Check the export. To apply it anyway, import it with force (p_force => true in SQL, force=true '
             'over HTTP, passthrough import --force) or with a higher max_disqualify_share (p_max_disqualify_share, '
             'max_disqualify_share=, --max-disqualify-share).';
  END IF;
  IF p_dry_run THEN
    RETURN v_result;
  END IF;

  -- The snapshot as events, through the one writer: a qualify per listed identifier (its newest row ts),
  -- a disqualify at T for each member it drops.
  SELECT array_agg(d.type_id), array_agg(d.identifier), array_agg(p_audience_id),
         array_agg(d.listed), array_agg(d.snapshot_ts), array_agg(NULL::text)
  INTO v_type_ids, v_ids, v_auds, v_quals, v_ts, v_idems
  FROM pg_temp.passthrough_snapshot_diff d
  WHERE d.listed OR d.change = 'disqualify';
  PERFORM passthrough._check_source(p_source, 'snapshot');
  v_applied := passthrough._apply_valid_events(p_source, v_type_ids, v_ids, v_auds, v_quals, v_ts, v_idems);
  v_result.applied := true;
  v_result.batch_id := v_applied.batch_id;
  v_result.changed := v_applied.changed;
  TRUNCATE pg_temp.passthrough_load RESTART IDENTITY;
  RETURN v_result;
END;
$$;
COMMENT ON FUNCTION passthrough.import_snapshot(text, numeric, numeric, boolean, boolean, text) IS
  'Replaces the membership of one audience with the snapshot staged in pg_temp.passthrough_load (see passthrough.begin_load): listed identifiers are qualified with their ts, members whose deciding event is older than T (p_at, default the newest ts in the snapshot) and who are not listed are disqualified as of T; events newer than T stand. One transaction, events logged as one batch. Refused: invalid rows (PT020), an empty snapshot (PT022) or one that would disqualify more than p_max_disqualify_share of the members (PT023), unless p_force. p_dry_run computes the diff only (passthrough.snapshot_diff lists it).';

CREATE FUNCTION passthrough.snapshot_diff(p_limit integer DEFAULT 1000)
RETURNS TABLE (change text, identifier_type text, identifier text, current_ts timestamptz, snapshot_ts timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF passthrough._session_table('passthrough_snapshot_diff') IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'PT021',
      MESSAGE = 'no snapshot diff in this session',
      HINT = 'Call passthrough.import_snapshot(..., p_dry_run => true) first.';
  END IF;
  PERFORM passthrough._check_limit(p_limit, 100000, 0);
  RETURN QUERY
    SELECT d.change, t.name::text, d.identifier::text, d.current_ts, d.snapshot_ts
    FROM pg_temp.passthrough_snapshot_diff d
    JOIN passthrough.identifier_types t ON t.id = d.type_id
    WHERE d.change <> 'unchanged'
    ORDER BY d.change, t.name, d.identifier
    LIMIT p_limit;
END;
$$;
COMMENT ON FUNCTION passthrough.snapshot_diff(integer) IS
  'The changes (qualify, disqualify, kept_newer) of the last snapshot import or dry run in this session, up to p_limit rows (0 to 100000; PT010 otherwise); unchanged members are left out.';
