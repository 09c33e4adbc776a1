-- pg_dump and CREATE EXTENSION installs: every row survives a dump and restore.
--
-- pg_dump writes an extension as one CREATE EXTENSION statement and dumps the rows of its tables only
-- for the tables registered with pg_extension_config_dump(); an unregistered table comes back from a
-- restore empty. Every Passthrough table holds data someone cares about (settings, identifier types,
-- audience definitions, API keys, membership, the event log), so every table and sequence of the
-- schema is registered, with all its rows. A table added later must be registered too: an upgrade
-- script calls passthrough._register_dump_tables() after creating it (tests/test_extension.py checks).
--
-- pg_extension_config_dump() only works in a script run by CREATE EXTENSION or ALTER EXTENSION UPDATE
-- (elsewhere it raises SQLSTATE 0A000), and the migrator runs this same file. PostgreSQL's
-- creating_extension flag is not visible from SQL, but what it implies is: the objects a script creates
-- are recorded as members of the extension (pg_depend, deptype 'e') as soon as they exist, and in a
-- migrator install nothing is a member of an extension. So registering the schema's extension members
-- does the work under CREATE/ALTER EXTENSION and nothing under the migrator, with no error to catch.
CREATE FUNCTION passthrough._register_dump_tables() RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  v_rel   regclass;
  v_count integer := 0;
BEGIN
  FOR v_rel IN
    SELECT c.oid::regclass
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_depend d
      ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
    JOIN pg_catalog.pg_extension x ON x.oid = d.refobjid AND x.extname = 'passthrough'
    WHERE c.relnamespace = 'passthrough'::regnamespace
      AND c.relkind IN ('r', 'S')  -- tables, and sequences (identity ones too) so ids continue after a restore
    ORDER BY c.relname
  LOOP
    PERFORM pg_catalog.pg_extension_config_dump(v_rel, '');  -- '': every row
    v_count := v_count + 1;
  END LOOP;
  RETURN v_count;
END;
$$;
COMMENT ON FUNCTION passthrough._register_dump_tables() IS
  'Private: registers every table and sequence of the passthrough extension with pg_extension_config_dump, so pg_dump keeps their rows; returns how many. Does nothing (returns 0) in a migrator install. Install and upgrade scripts call it.';

-- A restore runs CREATE EXTENSION, which seeds rows (the settings row, the default identifier types),
-- before pg_dump's COPY brings back the saved rows: a plain insert would hit the primary key and every
-- saved row of the table would be lost. These triggers let a saved row replace a seeded one, and only
-- a seeded row that nobody has changed since: its xmin is still that of the transaction that ran
-- CREATE EXTENSION, which is also the xmin of the extension's pg_extension row. In a migrator install
-- there is no such row, and a plain dump creates the tables empty, so nothing is ever replaced.
CREATE FUNCTION passthrough._settings_replace_seed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  DELETE FROM passthrough.settings s
  WHERE s.xmin = (SELECT x.xmin FROM pg_catalog.pg_extension x WHERE x.extname = 'passthrough');
  RETURN NEW;
END;
$$;
COMMENT ON FUNCTION passthrough._settings_replace_seed() IS
  'Private (trigger): an inserted settings row replaces the row CREATE EXTENSION seeded if it is unchanged, so a restore brings back the saved settings; a changed row still refuses a second one.';

CREATE TRIGGER replace_seed BEFORE INSERT ON passthrough.settings
  FOR EACH ROW EXECUTE FUNCTION passthrough._settings_replace_seed();

-- add_identifier_type's upsert must keep a type's id (memberships refer to it), so only a row whose id
-- was not drawn from the identity sequence replaces a seed: one whose id exists already or lies beyond
-- the sequence, as in a restore (or INSERT ... OVERRIDING SYSTEM VALUE).
CREATE FUNCTION passthrough._identifier_types_replace_seed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  IF NEW.id > (SELECT s.last_value FROM passthrough.identifier_types_id_seq s)
     OR EXISTS (SELECT 1 FROM passthrough.identifier_types t WHERE t.id = NEW.id) THEN
    DELETE FROM passthrough.identifier_types t
    WHERE (t.id = NEW.id OR t.name = NEW.name)
      AND t.xmin = (SELECT x.xmin FROM pg_catalog.pg_extension x WHERE x.extname = 'passthrough');
  END IF;
  RETURN NEW;
END;
$$;
COMMENT ON FUNCTION passthrough._identifier_types_replace_seed() IS
  'Private (trigger): an inserted identifier type with an id not drawn from the identity sequence (a restore) replaces the unchanged seeded type with its id or name.';

CREATE TRIGGER replace_seed BEFORE INSERT ON passthrough.identifier_types
  FOR EACH ROW EXECUTE FUNCTION passthrough._identifier_types_replace_seed();

SELECT passthrough._register_dump_tables();
