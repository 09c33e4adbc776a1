-- Citus (docs/scale-out.md, Citus): whether the schema is distributed, and the session table in which the
-- writers on a cluster keep what their update of the distributed memberships returned
-- (sql/functions/095_distributed_expiry.sql, sql/functions/145_distributed_writer.sql).

-- Whether distribute() has run: memberships is in Citus's metadata. Two statements, because on a server
-- without Citus pg_dist_partition does not exist and a statement naming it could not even be planned.
CREATE FUNCTION passthrough._memberships_distributed() RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
    RETURN false;
  END IF;
  RETURN EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition d
                 WHERE d.logicalrelid = 'passthrough.memberships'::regclass);
END;
$$;
COMMENT ON FUNCTION passthrough._memberships_distributed() IS
  'Private: whether passthrough.memberships is a Citus table (passthrough.distribute() has run); false without Citus.';

-- The membership row versions a writer on a cluster wrote, with the audience's ttl: the distributed writer's
-- and sweeper's update of memberships returns them into it, and the rest of their work reads them from it.
CREATE FUNCTION passthrough._moved_table() RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  IF passthrough._session_table('passthrough_moved') IS NULL THEN
    CREATE TEMPORARY TABLE passthrough_moved (
      identifier_type_id smallint, identifier text COLLATE "C", audience_key integer, qualified boolean,
      previous_event_ts timestamptz, event_ts timestamptz, feed_pos xid8, feed_level smallint, ttl interval
    ) ON COMMIT DELETE ROWS;
  ELSE
    DELETE FROM pg_temp.passthrough_moved;
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._moved_table() IS
  'Private: creates this session''s pg_temp.passthrough_moved (what a writer on a Citus cluster changed) unless it exists, else empties it; 42501 for one planted by anyone else.';
