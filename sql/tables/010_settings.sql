-- Operator settings: one row, typed columns.

CREATE TABLE passthrough.settings (
  singleton           boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
  passthrough_enabled boolean     NOT NULL DEFAULT false,
  max_future_skew     interval    NOT NULL DEFAULT interval '5 minutes'
                                  CHECK (max_future_skew >= interval '0'),
  public_passthrough_events boolean NOT NULL DEFAULT false,
  event_retention     interval    CHECK (event_retention > interval '0'),
  history_horizon     timestamptz,
  feed_pruned_through text,
  last_pruned_at      timestamptz,
  updated_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE passthrough.settings IS
  'Operator settings (exactly one row). Change them through passthrough.set_setting() (passthrough.list_settings() lists them) or the function of each: enable(), disable(), set_max_future_skew(), set_event_retention().';
COMMENT ON COLUMN passthrough.settings.passthrough_enabled IS
  'Whether passthrough events are accepted. False after install: an operator turns it on.';
COMMENT ON COLUMN passthrough.settings.event_retention IS
  'How long the event log and the change feed are kept (NULL: for ever); passthrough.prune_history() applies it (sql/functions/240_retention.sql).';
COMMENT ON COLUMN passthrough.settings.history_horizon IS
  'The oldest instant point-in-time answers are exact for, once the event log has been pruned (NULL: all of it).';
COMMENT ON COLUMN passthrough.settings.feed_pruned_through IS
  'Cursor of the newest change pruned from the feed (NULL: none); a consumer behind it has missed changes.';
COMMENT ON COLUMN passthrough.settings.last_pruned_at IS
  'When passthrough.prune_history() last finished with nothing left to prune (NULL: never); passthrough.service_metrics() reports its age.';
COMMENT ON COLUMN passthrough.settings.max_future_skew IS
  'How far ahead of the server clock an event''s ts may be; later timestamps are refused (default 5 minutes: docs/semantics.md says why).';
COMMENT ON COLUMN passthrough.settings.public_passthrough_events IS
  'Whether a request authenticated with a public API key (one that ships inside web pages) may send passthrough events. Off by default: with it on, anyone who reads a page can qualify or disqualify anyone.';

INSERT INTO passthrough.settings DEFAULT VALUES;
