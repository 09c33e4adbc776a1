-- Least privilege: the roles a DBA creates with one explicit call (not a migration). The guard that keeps
-- the bulk path's session tables from running a caller's code with the owner's rights is
-- sql/functions/020_session_tables.sql.
--
--   SELECT * FROM passthrough.create_roles();     -- or: passthrough roles create
--
-- Three roles matter (docs/dba.md, "Roles and grants"):
--   * the owner: the role that installed Passthrough; it owns every table and function;
--   * passthrough_writer: USAGE on the schema and EXECUTE on the loading and apply functions, nothing else;
--   * passthrough_reader: USAGE on the schema and EXECUTE on the read functions, nothing else.
-- Neither may touch a table: every function they may call is SECURITY DEFINER with a pinned search_path.

-- The one list of what each role may execute (by function name, every overload).
CREATE FUNCTION passthrough._role_functions()
RETURNS TABLE (role_kind text, function_name text)
LANGUAGE sql IMMUTABLE
AS $$
  VALUES ('writer', 'apply_event'), ('writer', 'apply_events'), ('writer', 'begin_load'),
         ('writer', 'load_staged'), ('writer', 'register_staged_audiences'), ('writer', 'get_load_rejects'), ('writer', 'import_snapshot'),
         ('writer', 'snapshot_diff'), ('writer', 'is_enabled'),
         -- the upkeep passthrough serve runs (pyapp/upkeep.py): what they do is fixed by the owner's settings
         ('writer', 'expire_memberships'), ('writer', 'prune_history'),
         ('reader', 'customer_audiences'), ('reader', 'get_audience'), ('reader', 'list_audiences'), ('reader', 'audience_page_info'),
         ('reader', 'list_identifier_types'), ('reader', 'is_enabled'), ('reader', 'instant_from_seconds'), ('reader', 'get_settings'),
         -- the past and the change feed: what a feed consumer or a report reads
         ('reader', 'customer_audiences_at'), ('reader', 'membership_history'), ('reader', 'audience_size_at'),
         ('reader', 'audience_size_history'), ('reader', 'changes'), ('reader', 'current_change_cursor'),
         ('reader', 'audience_recent_changes'),
         ('reader', 'changes_pending'), ('reader', 'audience_members'), ('reader', 'audience_member_counts'),
         ('reader', 'audience_member_lines'),
         -- monitoring (GET /metrics): webhook lag, expiry backlog, retention age
         ('reader', 'service_metrics');
$$;
COMMENT ON FUNCTION passthrough._role_functions() IS
  'Private: the functions passthrough.create_roles() lets the writer and the reader role execute, by name.';

-- SECURITY INVOKER on purpose: CREATE ROLE needs the caller's CREATEROLE, and the grants are made with the
-- caller's rights, so only the owner of Passthrough (or a superuser) can run it; EXECUTE is revoked from PUBLIC.
CREATE FUNCTION passthrough.create_roles(
  p_writer text DEFAULT 'passthrough_writer', p_reader text DEFAULT 'passthrough_reader'
) RETURNS TABLE (role text, function_name text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_owner oid := (SELECT p.proowner FROM pg_catalog.pg_proc p
                  WHERE p.oid = 'passthrough.create_roles(text, text)'::pg_catalog.regprocedure);
  v_kind  text;
  v_role  text;
  v_fn    pg_catalog.regprocedure;
BEGIN
  IF NOT pg_catalog.pg_has_role(current_user, v_owner, 'USAGE') THEN
    RAISE EXCEPTION USING ERRCODE = '42501',
      MESSAGE = format('only the owner of Passthrough (%s) or a superuser can create its roles', v_owner::regrole),
      HINT = format('Connect as %s, or SET ROLE %s.', v_owner::regrole, v_owner::regrole);
  END IF;
  FOREACH v_role IN ARRAY ARRAY[p_writer, p_reader] LOOP
    IF v_role IS NULL OR v_role !~ '^[a-z_][a-z0-9_]{0,62}$' THEN
      RAISE EXCEPTION USING ERRCODE = 'PT010',
        MESSAGE = format('invalid role name %s', coalesce(quote_literal(left(v_role, 100)), 'NULL')),
        HINT = 'A role name here is 1 to 63 characters from a-z, 0-9 and _, not starting with a digit.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
               WHERE r.rolname = v_role AND (r.rolsuper OR pg_catalog.pg_has_role(r.oid, v_owner, 'USAGE'))) THEN
      RAISE EXCEPTION USING ERRCODE = 'PT010',
        MESSAGE = format('role %I is a superuser or has the rights of the owner; it cannot be limited', v_role),
        HINT = 'Name a role that is neither, or a new one.';
    END IF;
  END LOOP;
  IF p_writer = p_reader THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010', MESSAGE = 'the writer and the reader role must differ';
  END IF;

  FOREACH v_role IN ARRAY ARRAY[p_writer, p_reader] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = v_role) THEN
      EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);  -- a group: GRANT it to login roles
      EXECUTE format('COMMENT ON ROLE %I IS %L', v_role,
                     format('Passthrough %s role (passthrough.create_roles)',
                            CASE v_role WHEN p_writer THEN 'writer' ELSE 'reader' END));
    END IF;
    -- start from nothing, so that running it again (after an upgrade) also takes back what is no longer listed
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA passthrough FROM %I', v_role);
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA passthrough FROM %I', v_role);
    EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA passthrough FROM %I', v_role);
    EXECUTE format('GRANT USAGE ON SCHEMA passthrough TO %I', v_role);
  END LOOP;

  FOR v_kind, v_fn IN
    SELECT f.role_kind, p.oid::pg_catalog.regprocedure
    FROM passthrough._role_functions() f
    JOIN pg_catalog.pg_proc p ON p.proname = f.function_name AND p.pronamespace = 'passthrough'::regnamespace
    ORDER BY 1, 2
  LOOP
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', v_fn, CASE v_kind WHEN 'writer' THEN p_writer ELSE p_reader END);
  END LOOP;

  -- what the catalog now says, not what we meant to do
  RETURN QUERY
    SELECT a.grantee::regrole::text, p.oid::pg_catalog.regprocedure::text
    FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
    WHERE p.pronamespace = 'passthrough'::regnamespace
      AND a.grantee IN (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname IN (p_writer, p_reader))
    ORDER BY 1, 2;
END;
$$;
COMMENT ON FUNCTION passthrough.create_roles(text, text) IS
  'Creates (if missing) the NOLOGIN roles passthrough_writer and passthrough_reader and grants each exactly what it needs: USAGE on the schema, EXECUTE on the loading and apply functions (writer) or the read functions (reader), no table. Run by the owner (or a superuser; CREATE ROLE needs CREATEROLE), again after each upgrade. Returns the grants in effect.';
