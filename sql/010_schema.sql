-- The schema that holds every Passthrough object.
-- IF NOT EXISTS: CREATE EXTENSION creates the schema named in passthrough.control before it runs this script.
CREATE SCHEMA IF NOT EXISTS passthrough;

COMMENT ON SCHEMA passthrough IS
  'Passthrough audiences: membership pushed by an external CDP, decided by event time. Callers use the functions and views documented in docs/dba.md; tables are private.';
