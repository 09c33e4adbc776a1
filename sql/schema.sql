-- The schema that holds every Passthrough object.
-- CREATE EXTENSION creates the schema named in passthrough.control (schema = passthrough) before it
-- runs this script, and PostgreSQL (15+, and the 2022 minor releases of older versions) refuses
-- CREATE SCHEMA IF NOT EXISTS in an extension script when the schema exists but is not a member of
-- the extension. So the schema is created only when it is missing: by the migrator on a fresh database.
-- A DBA may also create it first (to choose its owner); both paths then use it as it is.
DO $$
BEGIN
  IF pg_catalog.to_regnamespace('passthrough') IS NULL THEN
    CREATE SCHEMA passthrough;
  END IF;
END
$$;

COMMENT ON SCHEMA passthrough IS
  'Passthrough audiences: membership pushed by an external CDP, decided by event time. Callers use the functions and views documented in docs/dba.md; tables are private.';
