-- Settings: list, read and change them by name (sql/functions/010_settings.sql).
\set SHOW_CONTEXT never
\pset null '(null)'
SET timezone = 'UTC';
SET intervalstyle = 'postgres';

-- A fresh install: passthrough off, 5 minutes of future skew, no retention.
SELECT * FROM passthrough.list_settings();
SELECT passthrough_enabled, max_future_skew, event_retention, history_horizon, public_passthrough_events
FROM passthrough.get_settings();
SELECT passthrough.is_enabled();

-- Changed by name, values as text.
SELECT passthrough.set_setting('passthrough_enabled', 'on');
SELECT passthrough.set_setting('max_future_skew', '1 hour');
SELECT passthrough.set_setting('event_retention', '90 days');
SELECT passthrough.set_setting('public_passthrough_events', 'false');
SELECT name, value FROM passthrough.list_settings();
SELECT passthrough.set_setting('event_retention', 'none');
SELECT passthrough.disable();
SELECT passthrough.is_enabled();

-- Refused: PT010 names the setting and what it must be.
SELECT passthrough.set_setting('passthrough_enabled', 'maybe');
\echo :LAST_ERROR_SQLSTATE
SELECT passthrough.set_setting('max_future_skew', 'soon');
\echo :LAST_ERROR_SQLSTATE
SELECT passthrough.set_setting('max_future_skew', '-1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT passthrough.set_setting('event_retention', '0');
\echo :LAST_ERROR_SQLSTATE
SELECT passthrough.set_setting('colour', 'blue');
\echo :LAST_ERROR_SQLSTATE
