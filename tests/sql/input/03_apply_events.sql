-- Events: apply_events qualifies and disqualifies; customer_audiences reads the result
-- (sql/functions/160_apply_events.sql, 150_writer.sql, 220_membership_reads.sql).
\set SHOW_CONTEXT never
\pset null '(null)'
SET timezone = 'UTC';
SET intervalstyle = 'postgres';

SELECT passthrough.create_audience('news', 'ext-news');
SELECT passthrough.create_audience('sale', 'ext-sale');

-- Off after install: nothing is stored.
SELECT * FROM passthrough.apply_events('[{"type": "passthrough", "action": "qualify",
  "identifiers": {"fs_user_id": "u1"}, "data": {"audience_id": "ext-news", "ts": 1700000000}}]');
\echo :LAST_ERROR_SQLSTATE
SELECT passthrough.enable();

-- ts is seconds since the Unix epoch: 1700000000 is 2023-11-14 22:13:20 UTC.
SELECT * FROM passthrough.apply_events('[
  {"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "u1"},
   "data": {"audience_id": "ext-news", "ts": 1700000000}},
  {"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "u1", "vuid": "browser-9"},
   "data": {"audience_id": "ext-sale", "ts": 1700000010}},
  {"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "u2"},
   "data": {"audience_id": "ext-news", "ts": 1700000020}}
]', 'sql-test');
SELECT * FROM passthrough.customer_audiences('fs_user_id', 'u1');
SELECT name, size FROM passthrough.customer_audiences('fs_user_id', 'u1', ARRAY['sale']);

-- The greatest ts decides: a disqualify older than the qualify changes nothing, a newer one does.
SELECT accepted, changed FROM passthrough.apply_events('[{"type": "passthrough", "action": "disqualify",
  "identifiers": {"fs_user_id": "u1"}, "data": {"audience_id": "ext-news", "ts": 1699999999}}]');
SELECT accepted, changed FROM passthrough.apply_events('[{"type": "passthrough", "action": "disqualify",
  "identifiers": {"fs_user_id": "u1"}, "data": {"audience_id": "ext-news", "ts": 1700000100}}]');
SELECT name, event_ts FROM passthrough.customer_audiences('fs_user_id', 'u1');
-- on equal ts, disqualify wins
SELECT accepted, changed FROM passthrough.apply_events('[
  {"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "u3"},
   "data": {"audience_id": "ext-sale", "ts": 1700000200}},
  {"type": "passthrough", "action": "disqualify", "identifiers": {"fs_user_id": "u3"},
   "data": {"audience_id": "ext-sale", "ts": 1700000200}}]');
SELECT count(*) FROM passthrough.customer_audiences('fs_user_id', 'u3');
-- apply_event: one event
SELECT accepted, changed FROM passthrough.apply_event('fs_user_id', 'u3', 'ext-sale', 'qualify', 1700000300);
SELECT name, size FROM passthrough.list_audiences();

-- An invalid batch is refused whole (PT001); DETAIL lists every invalid event as JSON.
SELECT * FROM passthrough.apply_events('[
  {"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "u9"},
   "data": {"audience_id": "ext-news", "ts": 1700000000}},
  {"type": "passthrough", "action": "maybe", "identifiers": {"fs_user_id": "u9"},
   "data": {"audience_id": "ext-news", "ts": 1700000000000}},
  {"type": "passthrough", "action": "qualify", "identifiers": {"vuid": "browser-9"}, "data": {"audience_id": ""}}
]');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM passthrough.customer_audiences('fs_user_id', 'u9');

-- Reads: an unknown identifier type is PT003; a low-confidence one keys nothing.
SELECT * FROM passthrough.customer_audiences('phone', '555');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM passthrough.customer_audiences('fs_user_id', '');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM passthrough.customer_audiences('vuid', 'browser-9');
