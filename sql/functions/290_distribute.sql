-- Citus: turning the schema installed on a Citus coordinator into a distributed one (docs/scale-out.md, Citus).
--
--   SELECT * FROM passthrough.distribute();     -- or: passthrough distribute
--
-- Every question but sizes and listings is about one identifier, so the per-identifier tables are hash
-- distributed by identifier and co-located (one identifier's rows of all of them live in one shard group,
-- and the writer's joins between them run on one worker). The small tables every statement reads become
-- reference tables (a copy on every node). The tables whose rows are not about one identifier, or whose
-- order rests on one server's transaction ids (the change feed), stay plain tables on the coordinator.

-- The one list of where each table goes, in the order distribute() places them (a foreign key's target first).
CREATE FUNCTION passthrough._distribution_plan()
RETURNS TABLE (table_name text, placement text)
LANGUAGE sql IMMUTABLE
AS $$
  VALUES ('memberships', 'distributed'), ('events', 'distributed'), ('membership_expiries', 'distributed'),
         ('snapshot_members', 'distributed'),
         ('settings', 'reference'), ('identifier_types', 'reference'), ('external_audiences', 'reference'),
         ('audiences', 'reference'), ('api_keys', 'reference'), ('webhooks', 'reference'),
         ('batches', 'reference'), ('snapshots', 'reference'),
         -- the feed's positions are the coordinator's transaction ids (sql/functions/070_feed_position.sql);
         -- sizes are per audience; rejects may have no identifier
         ('membership_changes', 'coordinator'), ('audience_size_deltas', 'coordinator'),
         ('load_rejects', 'coordinator');
$$;
COMMENT ON FUNCTION passthrough._distribution_plan() IS
  'Private: where passthrough.distribute() places each table: distributed (by identifier, co-located with memberships), reference (a copy on every node) or coordinator (a plain table there).';

CREATE FUNCTION passthrough.distribute()
RETURNS TABLE (table_name text, placement text, action text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_plan   record;
  v_rel    regclass;
  v_method "char";
  v_column text;
  v_coloc  integer;
  v_repl   "char";
  v_name   name;
  v_key    record;
  v_keys   name[] := '{}';  -- the foreign keys to put back: table, name, column, target table, target column
  v_i      integer;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension x WHERE x.extname = 'citus') THEN
    RAISE EXCEPTION USING ERRCODE = 'PT040',
      MESSAGE = 'Citus is not installed in this database',
      DETAIL = format('database %s has no citus extension', current_database()),
      HINT = 'Load citus (shared_preload_libraries), CREATE EXTENSION citus and add the workers on the coordinator, '
             'then distribute there (docs/scale-out.md, Citus).';
  END IF;
  IF NOT pg_catalog.citus_is_coordinator() THEN
    RAISE EXCEPTION USING ERRCODE = 'PT040',
      MESSAGE = 'this Citus node is not the coordinator',
      DETAIL = format('database %s has the citus extension but is not registered as the coordinator', current_database()),
      HINT = 'Run distribute on the coordinator, after SELECT citus_set_coordinator_host(...) there.';
  END IF;
  -- settings and identifier_types carry the triggers that let a pg_dump restore of a CREATE EXTENSION install
  -- replace the seeded rows (sql/finish/010_extension_dump.sql). A Citus cluster is not backed up that way
  -- (docs/scale-out.md), and on a reference table they would run on every copy of it and query the others.
  -- (Citus refuses even DROP TRIGGER IF EXISTS on a reference table: only drop what is there)
  FOR v_name IN SELECT c.relname FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
                WHERE t.tgname = 'replace_seed' AND c.relnamespace = 'passthrough'::regnamespace
                  AND c.relname IN ('settings', 'identifier_types') LOOP
    EXECUTE format('DROP TRIGGER replace_seed ON passthrough.%I', v_name);
  END LOOP;
  -- one transaction creates every shard and copies every row, and audiences' foreign key to a reference table
  -- makes Citus refuse a table created over parallel connections before it: one connection per node
  PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
  -- A foreign key from a plain table to one being made a reference table (audiences -> external_audiences)
  -- makes Citus turn the plain one into a Citus local table, by renaming it to its shard and creating a new
  -- table in its place; in a CREATE EXTENSION install the extension owns the table's sequence and that fails.
  -- So the keys between tables that are to be reference tables, and are not Citus tables yet, are dropped
  -- first and put back below, once both ends are reference tables.
  FOR v_key IN SELECT t.relname AS tab, c.conname, a.attname AS col, r.relname AS target, ra.attname AS target_col,
                      cardinality(c.conkey) = 1 AND c.confupdtype = 'a' AND c.confdeltype = 'a'
                        AND c.confmatchtype = 's' AND NOT c.condeferrable AS plain
               FROM pg_catalog.pg_constraint c
               JOIN pg_catalog.pg_class t ON t.oid = c.conrelid
               JOIN pg_catalog.pg_class r ON r.oid = c.confrelid
               JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
               JOIN pg_catalog.pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = c.confkey[1]
               JOIN passthrough._distribution_plan() p ON p.table_name = t.relname AND p.placement = 'reference'
               JOIN passthrough._distribution_plan() q ON q.table_name = r.relname AND q.placement = 'reference'
               WHERE c.contype = 'f' AND c.connamespace = 'passthrough'::regnamespace
                 AND r.relnamespace = 'passthrough'::regnamespace
                 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition d WHERE d.logicalrelid = c.conrelid)
               ORDER BY c.conname LOOP
    IF NOT v_key.plain THEN  -- only what is put back below: a schema change must extend it
      RAISE EXCEPTION 'distribute() puts back single-column foreign keys without actions only, not %.%',
        v_key.tab, v_key.conname;
    END IF;
    EXECUTE format('ALTER TABLE passthrough.%I DROP CONSTRAINT %I', v_key.tab, v_key.conname);
    v_keys := v_keys || ARRAY[v_key.tab, v_key.conname, v_key.col, v_key.target, v_key.target_col];
  END LOOP;

  -- The event log has no key, and a shard move by logical replication (citus_rebalance_start's default mode,
  -- which lets writes go on) needs one to identify a row: the whole row, then. The log is only inserted into
  -- but for pruning, whose deletes then carry the deleted row in the WAL (with wal_level = logical only).
  IF (SELECT c.relreplident FROM pg_catalog.pg_class c WHERE c.oid = 'passthrough.events'::regclass) <> 'f' THEN
    ALTER TABLE passthrough.events REPLICA IDENTITY FULL;
  END IF;
  FOR v_plan IN SELECT p.table_name, p.placement FROM passthrough._distribution_plan() p LOOP
    v_rel := pg_catalog.format('passthrough.%I', v_plan.table_name)::regclass;
    SELECT d.partmethod, pg_catalog.column_to_column_name(d.logicalrelid, d.partkey), d.colocationid, d.repmodel
      INTO v_method, v_column, v_coloc, v_repl
    FROM pg_catalog.pg_dist_partition d WHERE d.logicalrelid = v_rel;
    table_name := v_plan.table_name;
    placement := v_plan.placement;

    IF v_plan.placement = 'distributed' AND v_method = 'h' AND v_column = 'identifier'
       AND (v_plan.table_name = 'memberships' OR v_coloc = (
             SELECT d.colocationid FROM pg_catalog.pg_dist_partition d
             WHERE d.logicalrelid = 'passthrough.memberships'::regclass))
       OR v_plan.placement = 'reference' AND v_method = 'n' AND v_repl = 't'
       OR v_plan.placement = 'coordinator' AND v_method IS NULL THEN
      action := 'unchanged';
    ELSIF v_plan.placement = 'reference' AND v_method = 'n' THEN
      -- a Citus local table: Citus made it one when the target of its foreign key became a reference table
      PERFORM pg_catalog.create_reference_table(v_rel);
      action := 'made a reference table';
    ELSIF v_method IS NOT NULL THEN
      RAISE EXCEPTION USING ERRCODE = 'PT040',
        MESSAGE = format('passthrough.%s is already distributed otherwise than as a %s table', v_plan.table_name,
                         v_plan.placement),
        DETAIL = format('pg_dist_partition: partmethod %s, column %s', v_method, coalesce(v_column, 'none')),
        HINT = format('SELECT undistribute_table(%L), then distribute again.', v_rel::text);
    ELSIF v_plan.placement = 'distributed' THEN
      PERFORM pg_catalog.create_distributed_table(v_rel, 'identifier',
        colocate_with => CASE WHEN v_plan.table_name = 'memberships' THEN 'none' ELSE 'passthrough.memberships' END);
      action := 'distributed by identifier';
    ELSIF v_plan.placement = 'reference' THEN
      PERFORM pg_catalog.create_reference_table(v_rel);
      action := 'made a reference table';
    ELSE
      action := 'unchanged';
    END IF;
    RETURN NEXT;
  END LOOP;
  -- (a CREATE EXTENSION install has a copy of each key on the workers too, where Citus installed the extension:
  -- there the table is now the shell of the reference table, and the key is dropped again through it)
  FOR v_i IN 1 .. cardinality(v_keys) / 5 LOOP
    EXECUTE format('ALTER TABLE passthrough.%I DROP CONSTRAINT IF EXISTS %I', v_keys[5 * v_i - 4], v_keys[5 * v_i - 3]);
    EXECUTE format('ALTER TABLE passthrough.%I ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES passthrough.%I (%I)',
                   v_keys[5 * v_i - 4], v_keys[5 * v_i - 3], v_keys[5 * v_i - 2], v_keys[5 * v_i - 1], v_keys[5 * v_i]);
  END LOOP;
END;
$$;
COMMENT ON FUNCTION passthrough.distribute() IS
  'On a Citus coordinator: distributes the per-identifier tables by identifier (co-located), makes the small shared tables reference tables and keeps the change feed, size deltas and load rejects on the coordinator; returns each table''s placement and what was done. Idempotent. PT040 where Citus is not installed or this is not the coordinator.';
