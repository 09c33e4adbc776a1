-- The guard of the session tables the bulk path and the writer create (pg_temp.passthrough_load, ...).

-- The bulk path's session tables (pg_temp.passthrough_load, ...) are created by SECURITY DEFINER
-- functions, so the owner owns them. A caller could create a table of that name first, with a trigger or
-- a row security policy that would run the caller's code with the owner's rights when the function reads or
-- truncates it; only a table the owner (the current user inside those functions) owns is used.
CREATE FUNCTION passthrough._session_table(p_name text) RETURNS regclass
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_rel   regclass := pg_catalog.to_regclass('pg_temp.' || pg_catalog.quote_ident(p_name));
  v_owner regrole;
BEGIN
  IF v_rel IS NULL THEN
    RETURN NULL;
  END IF;
  SELECT c.relowner::regrole INTO v_owner FROM pg_catalog.pg_class c WHERE c.oid = v_rel;
  IF v_owner::oid IS DISTINCT FROM (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
     OR (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = v_rel) <> 'r' THEN
    RAISE EXCEPTION USING ERRCODE = '42501',
      MESSAGE = format('pg_temp.%s was not created by Passthrough (it belongs to %s); it will not be used',
                       p_name, v_owner),
      HINT = format('DROP TABLE pg_temp.%s; then call passthrough.begin_load() to get the staging table.', p_name);
  END IF;
  RETURN v_rel;
END;
$$;
COMMENT ON FUNCTION passthrough._session_table(text) IS
  'Private: the session''s temporary table of that name if Passthrough''s owner created it, NULL if there is none; 42501 for one created by anyone else.';
