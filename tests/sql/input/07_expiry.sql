-- Expiry: an audience's ttl, evaluated at read time and recorded by the sweeper
-- (sql/functions/100_expiry.sql). Events of 2023 with a ttl of one day have expired by any test run;
-- a ttl of 100 years has not.
\set SHOW_CONTEXT never
\pset null '(null)'
SET timezone = 'UTC';
SET intervalstyle = 'postgres';

SELECT passthrough.create_audience('day', 'ext-day', p_ttl => interval '1 day');
SELECT passthrough.create_audience('century', 'ext-century', p_ttl => interval '36500 days');
SELECT name, ttl FROM passthrough.list_audiences();
SELECT passthrough.enable();
SELECT accepted, changed FROM passthrough.apply_events('[
  {"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "u1"},
   "data": {"audience_id": "ext-day", "ts": 1700000000}},
  {"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "u1"},
   "data": {"audience_id": "ext-century", "ts": 1700000000}}]');

-- Reads leave the expired membership out before the sweeper runs.
SELECT name, size FROM passthrough.customer_audiences('fs_user_id', 'u1');
SELECT name, size FROM passthrough.list_audiences();
-- The sweeper records each expiry at its real time (the qualify's ts + the ttl), once.
SELECT passthrough.expire_memberships();
SELECT passthrough.expire_memberships();
SELECT change, identifier, audience, event_ts, source FROM passthrough.changes() ORDER BY event_ts, audience;

-- set_audience_ttl: NULL removes the ttl, and the expiry already recorded stays.
SELECT passthrough.set_audience_ttl('day', NULL);
SELECT name, ttl FROM passthrough.get_audience('day');
SELECT name FROM passthrough.customer_audiences('fs_user_id', 'u1');
SELECT passthrough.expire_memberships(0);
\echo :LAST_ERROR_SQLSTATE
SELECT passthrough.set_audience_ttl('nope', interval '1 day');
\echo :LAST_ERROR_SQLSTATE
