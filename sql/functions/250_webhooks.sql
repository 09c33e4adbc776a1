-- Webhooks: the change feed pushed to HTTP endpoints, at least once, in feed order, signed.
--
-- A subscription has a delivery cursor (a feed cursor: the last change its endpoint acknowledged) and
-- an optional audience filter. The delivery loop (pyapp/webhooks.py, run by passthrough serve) calls
-- the private functions below, each in its own short transaction, and never holds a transaction open
-- while it talks HTTP (an open transaction holds the whole change feed back, docs/semantics.md):
--
--   _claim_webhooks    the due subscriptions nobody holds, leased (locked_until) so that two server
--                      processes never deliver the same subscription at once;
--   _webhook_page      the next changes after its cursor, read with passthrough.changes, each marked
--                      whether the filter selects it;
--   _webhook_delivered the endpoint answered 2xx (or nothing was selected): compare-and-set the cursor,
--                      so a stale worker can never move it back; resets the backoff and frees the lease;
--   _webhook_failed    anything else: failures + 1, the next attempt after an exponential backoff
--                      (1 s doubling to a cap of 10 min, with jitter); frees the lease.
--
-- The cursor moves only after the endpoint acknowledged a page, so a change is delivered at least once;
-- a page that failed is sent again (with any changes that arrived since, when it was not full).
-- Receivers drop repeats by cursor. The secret signs every payload (HMAC-SHA256, see README.md,
-- "Webhooks"); it is shown once, by create_webhook, and kept here because signing needs it.
--
-- A webhook may not reach loopback, link-local (cloud metadata), private or other non-global addresses
-- unless it was created with p_allow_private_network. create_webhook refuses a URL whose host is such an
-- IP address; the delivery loop checks every address a host name resolves to when it connects, and
-- connects to the address it checked (pyapp/webhook_network.py, which lists the same networks).

CREATE FUNCTION passthrough._check_webhook_url(p_url text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
  v_port text;
BEGIN
  IF p_url IS NULL OR length(p_url) > 2000
     OR p_url !~* '^https?://(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*)(:[0-9]{1,5})?([/?#][^[:space:][:cntrl:]]*)?$' THEN
    RAISE EXCEPTION USING ERRCODE = 'PT035',
      MESSAGE = format('invalid webhook url %s', coalesce(to_json(left(p_url, 200))::text, 'NULL')),
      DETAIL = 'field: url',
      HINT = 'An absolute http:// or https:// URL with a host name or IP address, no user name or password, no spaces, at most 2000 characters.';
  END IF;
  v_port := (regexp_match(p_url, '^https?://(?:\[[^]]*\]|[^/?#:]*):([0-9]+)', 'i'))[1];
  IF v_port IS NOT NULL AND (v_port::integer < 1 OR v_port::integer > 65535) THEN
    RAISE EXCEPTION USING ERRCODE = 'PT035',
      MESSAGE = format('invalid webhook url %s: port %s is out of range', to_json(left(p_url, 200)), v_port),
      DETAIL = 'field: url',
      HINT = 'A port is 1 to 65535.';
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._check_webhook_url(text) IS
  'Private: PT035 unless p_url is an absolute http(s) URL with a host, an optional port (1-65535), no credentials and no spaces.';

CREATE FUNCTION passthrough._non_global_networks()
RETURNS TABLE (network cidr, kind text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  -- IANA's special-purpose registries' non-global blocks; pyapp/webhook_network.py lists the same ones
  -- (tests/test_webhook_addresses.py holds them equal). The most specific block names the kind.
  VALUES ('0.0.0.0/8'::cidr, 'unspecified'), ('10.0.0.0/8', 'private'), ('100.64.0.0/10', 'shared (carrier-grade NAT)'),
         ('127.0.0.0/8', 'loopback'), ('169.254.0.0/16', 'link-local'), ('172.16.0.0/12', 'private'),
         ('192.0.0.0/24', 'reserved'), ('192.0.2.0/24', 'reserved'), ('192.88.99.0/24', 'reserved'),
         ('192.168.0.0/16', 'private'), ('198.18.0.0/15', 'reserved'), ('198.51.100.0/24', 'reserved'),
         ('203.0.113.0/24', 'reserved'), ('224.0.0.0/4', 'multicast'), ('240.0.0.0/4', 'reserved'),
         ('::/8', 'reserved'), ('::/128', 'unspecified'), ('::1/128', 'loopback'), ('64:ff9b:1::/48', 'private'),
         ('100::/64', 'reserved'), ('2001::/23', 'reserved'), ('2001:db8::/32', 'reserved'), ('2002::/16', 'reserved'),
         ('3fff::/20', 'reserved'), ('fc00::/7', 'private'), ('fe80::/10', 'link-local'), ('fec0::/10', 'private'),
         ('ff00::/8', 'multicast')
$$;
COMMENT ON FUNCTION passthrough._non_global_networks() IS
  'Private: the networks a webhook may reach only with allow_private_network, each with the kind of address it holds (loopback, link-local, private, ...).';

CREATE FUNCTION passthrough._non_global_kind(p_address inet) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
  v_address inet := host(p_address)::inet;
BEGIN
  -- IPv4-mapped (::ffff:0:0/96) and NAT64 (64:ff9b::/96) addresses reach the IPv4 address in their last 32 bits
  IF v_address <<= '::ffff:0:0/96'::inet OR v_address <<= '64:ff9b::/96'::inet THEN
    v_address := '0.0.0.0'::inet + (v_address - set_masklen(v_address, 96)::cidr::inet);
  END IF;
  RETURN (SELECT n.kind FROM passthrough._non_global_networks() n
          WHERE family(n.network) = family(v_address) AND v_address <<= n.network
          ORDER BY masklen(n.network) DESC LIMIT 1);
END;
$$;
COMMENT ON FUNCTION passthrough._non_global_kind(inet) IS
  'Private: NULL for an address a webhook may reach by default; else its kind (loopback, link-local, private, multicast, unspecified, reserved, shared).';

CREATE FUNCTION passthrough._check_webhook_address(p_url text, p_allow_private_network boolean) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
  v_host    text := (regexp_match(p_url, '^https?://(\[[^]]*\]|[^/?#:]*)', 'i'))[1];
  v_address inet;
  v_kind    text;
BEGIN
  IF p_allow_private_network THEN
    RETURN;
  END IF;
  -- only an IP literal can be checked here; a host name is checked each time a delivery connects
  IF v_host ~ '^\[.*\]$' OR v_host ~ '^[0-9]{1,3}(\.[0-9]{1,3}){3}$' THEN
    BEGIN
      v_address := btrim(v_host, '[]')::inet;
    EXCEPTION WHEN invalid_text_representation THEN
      RAISE EXCEPTION USING ERRCODE = 'PT035',
        MESSAGE = format('invalid webhook url %s: %s is not an IP address', to_json(left(p_url, 200)), v_host),
        DETAIL = 'field: url',
        HINT = 'An IPv4 address is four numbers from 0 to 255; an IPv6 address goes in brackets.';
    END;
    v_kind := passthrough._non_global_kind(v_address);
    IF v_kind IS NOT NULL THEN
      RAISE EXCEPTION USING ERRCODE = 'PT035',
        MESSAGE = format('webhook url %s is refused: %s is %s %s address', to_json(left(p_url, 200)),
                         host(v_address), CASE WHEN v_kind ~ '^[aeiou]' THEN 'an' ELSE 'a' END, v_kind),
        DETAIL = 'field: url',
        HINT = 'Webhooks reach public addresses only, unless created with p_allow_private_network => true (passthrough webhooks create --allow-private-network), for a receiver on this host or network.';
    END IF;
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough._check_webhook_address(text, boolean) IS
  'Private: PT035 if the URL''s host is an IP address a webhook may not reach (loopback, link-local, private, ...) and p_allow_private_network is false.';

CREATE FUNCTION passthrough.create_webhook(p_name text, p_url text, p_audiences text[] DEFAULT NULL,
                                           p_from_now boolean DEFAULT true,
                                           p_allow_private_network boolean DEFAULT false) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_secret    text;
  v_audiences text[];
  v_unknown   text[];
BEGIN
  IF p_name IS NULL OR p_name !~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$' THEN
    RAISE EXCEPTION USING ERRCODE = 'PT035',
      MESSAGE = format('invalid webhook name %s', coalesce(quote_literal(left(p_name, 100)), 'NULL')),
      DETAIL = 'field: name',
      HINT = 'A webhook name is 1 to 63 characters from A-Z, a-z, 0-9, _, . and -, starting with a letter or digit.';
  END IF;
  PERFORM passthrough._check_webhook_url(p_url);
  IF p_from_now IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'PT035',
      MESSAGE = 'from_now must be true or false, got NULL',
      DETAIL = 'field: from_now',
      HINT = 'true: deliver the changes from now on; false: from the start of the feed.';
  END IF;
  IF p_allow_private_network IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'PT035',
      MESSAGE = 'allow_private_network must be true or false, got NULL',
      DETAIL = 'field: allow_private_network',
      HINT = 'false (the default): deliveries reach public addresses only; true: private, loopback and link-local ones too.';
  END IF;
  PERFORM passthrough._check_webhook_address(p_url, p_allow_private_network);
  IF p_audiences IS NOT NULL THEN
    IF cardinality(p_audiences) = 0 OR cardinality(p_audiences) > 1000 OR array_position(p_audiences, NULL) IS NOT NULL THEN
      RAISE EXCEPTION USING ERRCODE = 'PT035',
        MESSAGE = format('audiences must list 1 to 1000 audience names and no NULL, got %s', cardinality(p_audiences)),
        DETAIL = 'field: audiences',
        HINT = 'Pass NULL to deliver the changes of every audience.';
    END IF;
    SELECT array_agg(DISTINCT a ORDER BY a) INTO v_audiences FROM unnest(p_audiences) a;
    SELECT array_agg(a ORDER BY a) INTO v_unknown
    FROM unnest(v_audiences) a
    WHERE NOT EXISTS (SELECT 1 FROM passthrough.audiences d WHERE d.name = a);
    IF v_unknown IS NOT NULL THEN
      RAISE EXCEPTION USING ERRCODE = 'PT035',
        MESSAGE = format('no audience named %s', array_to_string(ARRAY(SELECT quote_literal(left(u, 100)) FROM unnest(v_unknown[1:10]) u), ', ')),
        DETAIL = 'field: audiences',
        HINT = 'Name defined audiences (passthrough.list_audiences()); the filter matches a change by its audience''s name.';
    END IF;
  END IF;

  -- 244 random bits from the server's strong random source (as API keys, sql/functions/270_api_keys.sql)
  v_secret := 'whsec_' || replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', '');
  INSERT INTO passthrough.webhooks (name, url, secret, audiences, allow_private_network, feed_cursor)
  VALUES (p_name, p_url, v_secret, v_audiences, p_allow_private_network,
          CASE WHEN p_from_now THEN passthrough.current_change_cursor() END)
  ON CONFLICT (name) DO NOTHING;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'PT033',
      MESSAGE = format('a webhook named %L already exists', p_name),
      DETAIL = 'field: name',
      HINT = 'Choose another name, or delete the existing webhook first: passthrough webhooks delete NAME.';
  END IF;
  RETURN v_secret;
END;
$$;
COMMENT ON FUNCTION passthrough.create_webhook(text, text, text[], boolean, boolean) IS
  'Subscribes an http(s) URL to the change feed and returns the secret that signs its deliveries; the only time it is shown. p_audiences: names of defined audiences whose changes are delivered (NULL: all). p_from_now: deliver the changes from now on (default), else from the start of the feed. p_allow_private_network: let deliveries reach loopback, link-local, private and other non-global addresses (default false: refused, at creation for an IP in the URL and at every connection for what the host resolves to). passthrough serve delivers: at least once, in feed order, with retries. PT033 a webhook has that name; PT035 an invalid name, url (or one that is a non-global IP address) or audience list.';

CREATE FUNCTION passthrough.list_webhooks()
RETURNS TABLE (name text, url text, audiences text[], allow_private_network boolean, cursor text, paused boolean,
               failures integer,
               next_attempt_at timestamptz, last_attempt_at timestamptz, last_status integer, last_error text,
               last_delivered_at timestamptz, created_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT w.name::text, w.url, w.audiences, w.allow_private_network, w.feed_cursor, w.paused_at IS NOT NULL, w.failures,
         w.next_attempt_at, w.last_attempt_at, w.last_status, w.last_error, w.last_delivered_at, w.created_at
  FROM passthrough.webhooks w
  ORDER BY w.name;
$$;
COMMENT ON FUNCTION passthrough.list_webhooks() IS
  'Every webhook by name with whether it may reach private addresses and its delivery state: the cursor of the last change acknowledged, failures in a row, the next attempt, the last HTTP status and error; never the secret.';

CREATE FUNCTION passthrough._webhook_not_found(p_name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = 'PT034',
    MESSAGE = format('no webhook named %s', coalesce(quote_literal(left(p_name, 100)), 'NULL')),
    DETAIL = 'field: name',
    HINT = 'passthrough webhooks list (or SELECT * FROM passthrough.list_webhooks()) lists them.';
END;
$$;
COMMENT ON FUNCTION passthrough._webhook_not_found(text) IS
  'Private: raises PT034 for a webhook name that does not exist.';

CREATE FUNCTION passthrough.delete_webhook(p_name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  DELETE FROM passthrough.webhooks w WHERE w.name = p_name;
  IF NOT FOUND THEN
    PERFORM passthrough._webhook_not_found(p_name);
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough.delete_webhook(text) IS
  'Deletes a webhook: nothing more is delivered to it (a delivery in flight may still arrive). PT034 if no webhook has that name.';

CREATE FUNCTION passthrough.pause_webhook(p_name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  UPDATE passthrough.webhooks w SET paused_at = coalesce(w.paused_at, now()) WHERE w.name = p_name;
  IF NOT FOUND THEN
    PERFORM passthrough._webhook_not_found(p_name);
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough.pause_webhook(text) IS
  'Stops delivering to a webhook and keeps its cursor; resume_webhook goes on from there. PT034 if no webhook has that name.';

CREATE FUNCTION passthrough.resume_webhook(p_name text, p_from_now boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  UPDATE passthrough.webhooks w
  SET paused_at = NULL, failures = 0, next_attempt_at = now(), last_error = NULL,
      feed_cursor = CASE WHEN p_from_now THEN passthrough.current_change_cursor() ELSE w.feed_cursor END
  WHERE w.name = p_name;
  IF NOT FOUND THEN
    PERFORM passthrough._webhook_not_found(p_name);
  END IF;
END;
$$;
COMMENT ON FUNCTION passthrough.resume_webhook(text, boolean) IS
  'Delivers to a paused or failing webhook again, now (the backoff starts over), from its cursor; with p_from_now, from the end of the feed instead, skipping the changes in between (the way out for a webhook whose cursor was pruned, PT032). PT034 if no webhook has that name.';

-- ------------------------------------------------------------------ the delivery loop's calls

CREATE FUNCTION passthrough._claim_webhooks(p_lease interval, p_limit integer)
RETURNS TABLE (id integer, name text, url text, secret text, feed_cursor text, allow_private_network boolean)
LANGUAGE plpgsql
AS $$
BEGIN
  -- SKIP LOCKED: a subscription another process is claiming right now is left to it, never waited for
  RETURN QUERY
    WITH due AS (
      SELECT d.id FROM passthrough.webhooks d
      CROSS JOIN LATERAL passthrough._parse_change_cursor(d.feed_cursor) p
      WHERE d.paused_at IS NULL AND d.next_attempt_at <= now()
        AND (d.locked_until IS NULL OR d.locked_until <= now())
        -- only a webhook with something to do: a readable change after its cursor, a cursor the pruning
        -- passed (to report PT032), or a retry; a caught-up one costs no row update per poll
        AND (d.failures > 0
             OR EXISTS (SELECT 1 FROM passthrough.membership_changes c
                        WHERE (c.pos, c.level, c.batch_id, c.ord) > (p.o_pos, p.o_level, p.o_batch_id, p.o_ord)
                          AND c.pos < passthrough._feed_horizon())
             OR passthrough._cursor_pruned(p.o_pos, p.o_level, p.o_batch_id, p.o_ord))
      ORDER BY d.next_attempt_at, d.id
      LIMIT p_limit
      FOR UPDATE OF d SKIP LOCKED
    )
    UPDATE passthrough.webhooks w SET locked_until = now() + p_lease
    FROM due
    WHERE w.id = due.id
    RETURNING w.id, w.name::text, w.url, w.secret, w.feed_cursor, w.allow_private_network;
END;
$$;
COMMENT ON FUNCTION passthrough._claim_webhooks(interval, integer) IS
  'Private: leases up to p_limit due webhooks (not paused, next attempt reached, no live lease, and something to deliver or report) for p_lease and returns what delivering needs, secret included. Call it in its own transaction.';

CREATE FUNCTION passthrough._webhook_page(p_id integer, p_limit integer)
RETURNS TABLE (cursor text, change text, identifier_type text, identifier text, audience_id text,
               audience text, event_ts timestamptz, received_at timestamptz, source text, batch_id bigint,
               selected boolean)
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  -- passthrough.changes owns the feed's rules (readable changes, order, PT030 / PT032 for a bad cursor)
  RETURN QUERY
    SELECT c.cursor, c.change, c.identifier_type, c.identifier, c.audience_id, c.audience, c.event_ts,
           c.received_at, c.source, c.batch_id,
           (w.audiences IS NULL OR c.audience = ANY (w.audiences))
    FROM passthrough.webhooks w
    CROSS JOIN LATERAL passthrough.changes(w.feed_cursor, p_limit) WITH ORDINALITY AS c
    WHERE w.id = p_id
    ORDER BY c.ordinality;
END;
$$;
COMMENT ON FUNCTION passthrough._webhook_page(integer, integer) IS
  'Private: the next p_limit changes of the feed after a webhook''s cursor, in feed order, each with selected: whether its audience filter delivers it. The last row''s cursor is where the webhook goes on once they are delivered. Raises what passthrough.changes raises (PT032 for a pruned cursor).';

CREATE FUNCTION passthrough._webhook_delivered(p_id integer, p_expected_cursor text, p_new_cursor text,
                                               p_status integer DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  v_old record;
  v_new record;
BEGIN
  SELECT * INTO v_old FROM passthrough._parse_change_cursor(p_expected_cursor);
  SELECT * INTO v_new FROM passthrough._parse_change_cursor(p_new_cursor);
  IF (v_new.o_pos, v_new.o_level, v_new.o_batch_id, v_new.o_ord)
     < (v_old.o_pos, v_old.o_level, v_old.o_batch_id, v_old.o_ord) THEN
    RETURN false;  -- never backwards
  END IF;
  -- compare-and-set: only a worker that read the page from the stored cursor may move it
  UPDATE passthrough.webhooks w
  SET feed_cursor = CASE WHEN p_new_cursor = '' THEN NULL ELSE p_new_cursor END,
      failures = 0, next_attempt_at = now(), locked_until = NULL, last_error = NULL,
      last_status = coalesce(p_status, w.last_status),
      last_attempt_at = CASE WHEN p_status IS NULL THEN w.last_attempt_at ELSE now() END,
      last_delivered_at = CASE WHEN p_status IS NULL THEN w.last_delivered_at ELSE now() END
  WHERE w.id = p_id AND w.feed_cursor IS NOT DISTINCT FROM nullif(p_expected_cursor, '');
  RETURN FOUND;
END;
$$;
COMMENT ON FUNCTION passthrough._webhook_delivered(integer, text, text, integer) IS
  'Private: the webhook''s endpoint acknowledged the changes through p_new_cursor (p_status: its HTTP status; NULL when nothing was sent because the filter selected nothing). Moves the cursor only if it still is p_expected_cursor and only forward (compare-and-set; false otherwise), resets the backoff and frees the lease.';

CREATE FUNCTION passthrough._webhook_failed(p_id integer, p_error text, p_status integer,
                                            p_backoff_base interval DEFAULT NULL,
                                            p_backoff_cap interval DEFAULT NULL) RETURNS timestamptz
LANGUAGE plpgsql
AS $$
DECLARE
  v_base interval := coalesce(p_backoff_base, interval '1 second');
  v_cap  interval := coalesce(p_backoff_cap, interval '10 minutes');
  v_next timestamptz;
BEGIN
  -- the n-th failure in a row waits base * 2^(n-1), at most cap, times a random 0.5 to 1 (jitter, so that
  -- many webhooks failing together do not retry together)
  UPDATE passthrough.webhooks w
  SET failures = w.failures + 1,
      next_attempt_at = now() + least(v_cap, v_base * power(2, least(w.failures, 40))) * (0.5 + random() / 2),
      locked_until = NULL, last_attempt_at = now(), last_status = p_status,
      last_error = left(coalesce(p_error, 'unknown error'), 2000)
  WHERE w.id = p_id
  RETURNING w.next_attempt_at INTO v_next;
  RETURN v_next;
END;
$$;
COMMENT ON FUNCTION passthrough._webhook_failed(integer, text, integer, interval, interval) IS
  'Private: a delivery failed (p_status: the HTTP status, NULL for a network or database error): counts it, records the error, frees the lease and schedules the next attempt after an exponential backoff with jitter (1 s doubling to 10 min unless overridden). Returns the next attempt time.';
