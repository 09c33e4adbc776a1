-- Webhook subscriptions (sql/functions/250_webhooks.sql says how they are delivered).

CREATE TABLE passthrough.webhooks (
  id                integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name              text        COLLATE "C" NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
  url               text        NOT NULL CHECK (url ~* '^https?://'),
  secret            text        NOT NULL,
  audiences         text[],
  allow_private_network boolean NOT NULL DEFAULT false,
  feed_cursor       text,
  failures          integer     NOT NULL DEFAULT 0 CHECK (failures >= 0),
  next_attempt_at   timestamptz NOT NULL DEFAULT now(),
  locked_until      timestamptz,
  last_attempt_at   timestamptz,
  last_status       integer,
  last_error        text,
  last_delivered_at timestamptz,
  created_at        timestamptz NOT NULL DEFAULT now(),
  paused_at         timestamptz
);
COMMENT ON TABLE passthrough.webhooks IS
  'Webhook subscriptions to the change feed. Manage them with passthrough.create_webhook(), list_webhooks(), pause_webhook(), resume_webhook() and delete_webhook(), or the command: passthrough webhooks.';
COMMENT ON COLUMN passthrough.webhooks.secret IS
  'The HMAC-SHA256 key that signs each delivery; shown once by create_webhook, never listed.';
COMMENT ON COLUMN passthrough.webhooks.audiences IS
  'Names of the defined audiences whose changes are delivered; NULL: every change.';
COMMENT ON COLUMN passthrough.webhooks.allow_private_network IS
  'true: deliveries may connect to loopback, link-local, private and other non-global addresses; false (the default): such an address is refused at creation (an IP in the URL) and at every connection (what the host name resolves to).';
COMMENT ON COLUMN passthrough.webhooks.feed_cursor IS
  'The feed cursor of the last change acknowledged (or skipped by the filter); NULL: the start of the feed.';
COMMENT ON COLUMN passthrough.webhooks.locked_until IS
  'The lease of the server process delivering it: no other process claims it before this time.';
