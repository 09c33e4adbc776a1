-- An audience's members at a point in time, from the live state, the event log and the snapshots (the
-- rules: sql/functions/230_membership_history.sql). Snapshot imports, history and exports read it.

-- Whether a snapshot lists a pair (reads in the past ask it).
CREATE FUNCTION passthrough._listed(p_snapshot_id bigint, p_identifier_type_id smallint, p_identifier text)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT EXISTS (SELECT 1 FROM passthrough.snapshot_members m
                 WHERE m.identifier_type_id = p_identifier_type_id AND m.identifier = p_identifier
                   AND m.snapshot_id = p_snapshot_id);
$$;
COMMENT ON FUNCTION passthrough._listed(bigint, smallint, text) IS
  'Private: whether snapshot p_snapshot_id lists the identifier (false for a NULL snapshot): one primary-key lookup. Not inlined (a sub-select never is): reads call it per pair.';

-- The newest snapshot of an audience at or before p_at: the last imported of the greatest T (it holds the
-- verdict of every snapshot of that T).
CREATE FUNCTION passthrough._snapshot_at_or_before(p_audience_key integer, p_at timestamptz)
RETURNS TABLE (id bigint, snapshot_at timestamptz)
LANGUAGE sql STABLE
AS $$
  SELECT s.id, s.snapshot_at FROM passthrough.snapshots s
  WHERE s.audience_key = p_audience_key AND s.snapshot_at <= p_at
  ORDER BY s.snapshot_at DESC, s.id DESC
  LIMIT 1;
$$;
COMMENT ON FUNCTION passthrough._snapshot_at_or_before(integer, timestamptz) IS
  'Private: the snapshot whose verdict counts at p_at for an audience (none when no snapshot is that old).';

-- _audience_members_at (below) on a Citus cluster (passthrough.distribute()), in statements Citus can run on
-- each shard: the base snapshot is read first (snapshots is a reference table; SQL functions over Citus
-- tables are refused), and a pair's newest input is a join of memberships, events and snapshot_members on
-- the pair (co-located by identifier) with DISTINCT ON, where one server uses a LATERAL ... LIMIT 1 per
-- unsure row, which Citus cannot push down. Only the inputs from the base snapshot's T on are read: older ones lose to its verdict,
-- and a pair with none of them is not listed, so not a member.
CREATE FUNCTION passthrough._audience_members_at_distributed(
  p_audience_key integer, p_at timestamptz, p_newest timestamptz, p_ttl interval
) RETURNS TABLE (identifier_type_id smallint, identifier text, event_ts timestamptz)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_base_id bigint;
  v_base_at timestamptz;
BEGIN
  SELECT s.id, s.snapshot_at INTO v_base_id, v_base_at FROM passthrough.snapshots s
  WHERE s.audience_key = p_audience_key AND s.snapshot_at <= p_at
  ORDER BY s.snapshot_at DESC, s.id DESC
  LIMIT 1;
  IF p_newest IS NULL OR p_at >= p_newest THEN
    -- the stored rows that tell the state at p_at (the single-node form's "not unsure")
    RETURN QUERY
      SELECT m.identifier_type_id, m.identifier::text, m.event_ts FROM passthrough.memberships m
      WHERE m.audience_key = p_audience_key AND m.qualified AND m.event_ts <= p_at
        AND passthrough._within_ttl(m.event_ts, p_ttl, p_at);
    -- the others, from their inputs
    RETURN QUERY
      SELECT d.t, d.i::text, d.ts FROM (
        SELECT DISTINCT ON (m.identifier_type_id, m.identifier) m.identifier_type_id AS t, m.identifier AS i,
               x.ts, x.q
        FROM passthrough.memberships m
        JOIN (SELECT e.identifier_type_id AS t, e.identifier AS i, e.event_ts AS ts, e.qualified AS q
              FROM passthrough.events e
              WHERE e.audience_key = p_audience_key AND e.event_ts <= p_at
                AND (v_base_id IS NULL OR e.event_ts > v_base_at OR (e.event_ts = v_base_at AND NOT e.qualified))
              UNION ALL
              SELECT l.identifier_type_id, l.identifier, v_base_at, true
              FROM passthrough.snapshot_members l WHERE l.snapshot_id = v_base_id) x
          ON x.t = m.identifier_type_id AND x.i = m.identifier
        WHERE m.audience_key = p_audience_key
          AND (m.event_ts > p_at OR (p_ttl IS NOT NULL AND NOT m.qualified AND m.event_ts + p_ttl > p_at))
        ORDER BY m.identifier_type_id, m.identifier, x.ts DESC, x.q
      ) d
      WHERE d.q AND passthrough._within_ttl(d.ts, p_ttl, p_at);
  ELSE
    RETURN QUERY
      SELECT d.t, d.i::text, d.ts FROM (
        SELECT DISTINCT ON (x.t, x.i) x.t, x.i, x.ts, x.q
        FROM (SELECT e.identifier_type_id AS t, e.identifier AS i, e.event_ts AS ts, e.qualified AS q
              FROM passthrough.events e
              WHERE e.audience_key = p_audience_key AND e.event_ts <= p_at
                AND (v_base_id IS NULL OR e.event_ts > v_base_at OR (e.event_ts = v_base_at AND NOT e.qualified))
              UNION ALL
              SELECT l.identifier_type_id, l.identifier, v_base_at, true
              FROM passthrough.snapshot_members l WHERE l.snapshot_id = v_base_id) x
        ORDER BY x.t, x.i, x.ts DESC, x.q
      ) d
      WHERE d.q AND passthrough._within_ttl(d.ts, p_ttl, p_at);
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._audience_members_at_distributed(integer, timestamptz, timestamptz, interval) IS
  'Private: passthrough._audience_members_at on a Citus cluster (p_newest: the audience''s newest snapshot time; p_ttl: its ttl), in statements Citus pushes down to each shard; the same rows.';

-- The members of an audience at p_at.
-- * From the log: the newest snapshot at or before p_at decides every pair at its T, so only its list and
--   the events from T on are read (an event at T counts only as a disqualify: a qualify at T adds nothing
--   to the verdict, and loses to "not listed"). Without a snapshot, every event of the audience.
-- * From the live state, when p_at is not before the audience's newest snapshot (a snapshot import at
--   "now", a size as of now): a stored membership decided by an input at or before p_at is the state at
--   p_at (the writer keeps the newest input of each member; a pair without a row has only inputs the
--   newest snapshot overrides). Only the rows it cannot tell about are read from the log: decided after
--   p_at, or, with a ttl, not qualified now but maybe still within the ttl at p_at (the sweeper flips an
--   expired row and keeps its ts).
CREATE FUNCTION passthrough._audience_members_at(p_audience_key integer, p_at timestamptz)
RETURNS TABLE (identifier_type_id smallint, identifier text, event_ts timestamptz)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_newest timestamptz := (SELECT e.snapshot_at FROM passthrough.external_audiences e WHERE e.id = p_audience_key);
  v_ttl    interval := (SELECT a.ttl FROM passthrough.audiences a WHERE a.audience_key = p_audience_key);
BEGIN
  IF passthrough._memberships_distributed() THEN
    RETURN QUERY SELECT * FROM passthrough._audience_members_at_distributed(p_audience_key, p_at, v_newest, v_ttl);
    RETURN;
  END IF;
  IF v_newest IS NULL OR p_at >= v_newest THEN
    RETURN QUERY
      WITH stored AS (
        SELECT m.identifier_type_id AS t, m.identifier AS i, m.qualified AS q, m.event_ts AS ts,
               m.event_ts > p_at OR (v_ttl IS NOT NULL AND NOT m.qualified AND m.event_ts + v_ttl > p_at) AS unsure
        FROM passthrough.memberships m
        WHERE m.audience_key = p_audience_key
      )
      SELECT s.t, s.i::text, s.ts FROM stored s
      WHERE NOT s.unsure AND s.q AND passthrough._within_ttl(s.ts, v_ttl, p_at)
      UNION ALL
      SELECT s.t, s.i::text, d.ts
      FROM stored s
      CROSS JOIN LATERAL (
        SELECT x.ts, x.q FROM (
          SELECT e.event_ts AS ts, e.qualified AS q FROM passthrough.events e
          WHERE e.identifier_type_id = s.t AND e.identifier = s.i AND e.audience_key = p_audience_key
            AND e.event_ts <= p_at
          UNION ALL
          SELECT b.snapshot_at, passthrough._listed(b.id, s.t, s.i)
          FROM passthrough._snapshot_at_or_before(p_audience_key, p_at) b
        ) x
        ORDER BY x.ts DESC, x.q
        LIMIT 1
      ) d
      WHERE s.unsure AND d.q AND passthrough._within_ttl(d.ts, v_ttl, p_at);
  ELSE
    RETURN QUERY
      WITH base AS (
        SELECT b.id, b.snapshot_at FROM passthrough._snapshot_at_or_before(p_audience_key, p_at) b
      ), inputs AS (
        SELECT e.identifier_type_id AS t, e.identifier AS i, e.event_ts AS ts, e.qualified AS q
        FROM passthrough.events e LEFT JOIN base b ON true
        WHERE e.audience_key = p_audience_key AND e.event_ts <= p_at
          AND (b.id IS NULL OR e.event_ts > b.snapshot_at OR (e.event_ts = b.snapshot_at AND NOT e.qualified))
        UNION ALL
        SELECT m.identifier_type_id, m.identifier, b.snapshot_at, true
        FROM base b JOIN passthrough.snapshot_members m ON m.snapshot_id = b.id
      )
      SELECT d.t, d.i::text, d.ts
      FROM (SELECT DISTINCT ON (n.t, n.i) n.t, n.i, n.ts, n.q FROM inputs n ORDER BY n.t, n.i, n.ts DESC, n.q) d
      WHERE d.q AND passthrough._within_ttl(d.ts, v_ttl, p_at);
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._audience_members_at(integer, timestamptz) IS
  'Private: the members of an audience at p_at and the ts of the input that decided each (a qualify younger than the audience''s current ttl at p_at): from the live state when p_at is not before the audience''s newest snapshot (the log only for rows decided later or possibly expired later), else from the newest snapshot at or before p_at and the events since, or every event when no snapshot is that old.';

CREATE FUNCTION passthrough._audience_size_at(p_audience_key integer, p_at timestamptz) RETURNS bigint
LANGUAGE sql STABLE
AS $$
  SELECT count(*) FROM passthrough._audience_members_at(p_audience_key, p_at);
$$;
COMMENT ON FUNCTION passthrough._audience_size_at(integer, timestamptz) IS
  'Private: the exact number of members of an audience at p_at (passthrough._audience_members_at).';
