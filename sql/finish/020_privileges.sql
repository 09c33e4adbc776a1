-- Nothing is callable by PUBLIC: the roles step (docs/dba.md) grants what each role needs.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA passthrough FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA passthrough FROM PUBLIC;
REVOKE ALL ON SCHEMA passthrough FROM PUBLIC;
