-- What every write path checks before it writes: passthrough enabled, the batch source, the API key's
-- scope; and how an invalid batch is refused (PT001).

CREATE FUNCTION passthrough._raise_if_disabled() RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  IF NOT (SELECT passthrough_enabled FROM passthrough.settings) THEN
    RAISE EXCEPTION USING ERRCODE = 'PT002',
      MESSAGE = 'passthrough is disabled',
      DETAIL = 'Nothing was stored.',
      HINT = 'An operator enables it with SELECT passthrough.enable(); or the command: passthrough enable';
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._raise_if_disabled() IS 'Private: raises PT002 while passthrough is off.';

-- Batches Passthrough writes itself carry these sources; only the owner may write a batch that looks like one.
CREATE FUNCTION passthrough._check_source(p_source text, p_allowed text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  IF p_source IN ('expiry', 'snapshot') AND p_source IS DISTINCT FROM p_allowed
     AND NOT pg_catalog.pg_has_role(session_user,
                                    (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname = 'passthrough'),
                                    'USAGE') THEN
    RAISE EXCEPTION USING ERRCODE = 'PT010',
      MESSAGE = format('source %s is reserved for the batches Passthrough writes itself', quote_literal(p_source)),
      DETAIL = 'field: source',
      HINT = 'Name your batches after where they come from, e.g. ''crm-nightly''.';
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._check_source(text, text) IS
  'Private: PT010 when a caller other than the owner names a reserved batch source (expiry, snapshot; p_allowed excepted).';

-- Public API keys ship inside web pages: unless an operator allows it, they may not change membership.
CREATE FUNCTION passthrough._check_key_scope(p_key_scope text) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  IF p_key_scope = 'public' AND NOT (SELECT s.public_passthrough_events FROM passthrough.settings s) THEN
    RAISE EXCEPTION USING ERRCODE = 'PT036',
      MESSAGE = 'a public API key may not send passthrough events',
      DETAIL = 'Nothing was stored. Public keys ship inside web pages, so anyone could qualify or disqualify anyone with one.',
      HINT = 'Send passthrough events with a private key; or, knowing the risk, allow public keys: passthrough settings set public_passthrough_events on (SQL: SELECT passthrough.set_setting(''public_passthrough_events'', ''on'')).';
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._check_key_scope(text) IS
  'Private: PT036 when the caller authenticated with a public API key and the settings do not let public keys send passthrough events.';

-- Raises PT001 for a batch with invalid events. p_invalid: [{"event", "message", "problems"}].
CREATE FUNCTION passthrough._raise_invalid_events(p_invalid jsonb, p_total integer) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = 'PT001',
    MESSAGE = format('batch refused: %s of %s events invalid; event %s: %s',
                     jsonb_array_length(p_invalid), p_total,
                     p_invalid->0->>'event', p_invalid->0->>'message'),
    DETAIL = p_invalid::text,
    HINT = 'Nothing from this batch was stored. DETAIL lists every invalid event as JSON [{"event": index, "message": ..., "problems": [...]}]; fix them and resend the batch.';
END;
$$;
COMMENT ON FUNCTION passthrough._raise_invalid_events(jsonb, integer) IS
  'Private: raises PT001 with every invalid event listed as JSON in DETAIL.';
