-- Citus (docs/scale-out.md, Citus): whether the schema is distributed, which decides whether the writers take
-- their steps for a cluster (sql/functions/095_distributed_expiry.sql, sql/functions/145_distributed_writer.sql).

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
