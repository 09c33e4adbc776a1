-- Snapshot import: the full member list of one audience at a time T (sql/functions/200_snapshot_import.sql).
\set SHOW_CONTEXT never
\pset null '(null)'
SET timezone = 'UTC';

SELECT passthrough.create_audience('news', 'ext-news');
SELECT passthrough.enable();
SELECT accepted FROM passthrough.apply_events('[
  {"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "u1"},
   "data": {"audience_id": "ext-news", "ts": 1700000000}},
  {"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "u2"},
   "data": {"audience_id": "ext-news", "ts": 1700000000}},
  {"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "u3"},
   "data": {"audience_id": "ext-news", "ts": 1700000000}},
  {"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "late"},
   "data": {"audience_id": "ext-news", "ts": 1700000500}}]');

-- The snapshot at T = 1700000100 lists u1, u2 and u4: u3 leaves, u4 enters, late (newer than T) stays.
SELECT passthrough.begin_load();
COPY pg_temp.passthrough_load (type, action, identifier_type, identifier, audience_id) FROM STDIN WITH (FORMAT csv);
passthrough,qualify,fs_user_id,u1,ext-news
passthrough,qualify,fs_user_id,u2,ext-news
passthrough,qualify,fs_user_id,u4,ext-news
\.
SELECT snapshot_at, listed, to_qualify, to_disqualify, unchanged, kept_newer, members_before, applied, changed
FROM passthrough.import_snapshot('ext-news', p_at => 1700000100, p_dry_run => true);
SELECT * FROM passthrough.snapshot_diff();
SELECT snapshot_at, listed, to_qualify, to_disqualify, unchanged, kept_newer, members_before, applied, changed
FROM passthrough.import_snapshot('ext-news', p_at => 1700000100);
SELECT identifier, event_ts FROM passthrough.audience_members('news');

-- Guards: a snapshot that drops more than half of the members at T is refused (PT023) unless forced.
SELECT passthrough.begin_load();
COPY pg_temp.passthrough_load (type, action, identifier_type, identifier, audience_id) FROM STDIN WITH (FORMAT csv);
passthrough,qualify,fs_user_id,u1,ext-news
\.
SELECT * FROM passthrough.import_snapshot('ext-news', p_at => 1700000200);
\echo :LAST_ERROR_SQLSTATE
-- A dry run is for looking: it shows the diff, and names the guards that would refuse the import.
SELECT listed, to_disqualify, applied, refused_by, refusal_reasons
FROM passthrough.import_snapshot('ext-news', p_at => 1700000200, p_dry_run => true);
SELECT * FROM passthrough.snapshot_diff();
-- invalid rows (PT020): a snapshot lists members, it does not disqualify
SELECT passthrough.begin_load();
COPY pg_temp.passthrough_load (type, action, identifier_type, identifier, audience_id) FROM STDIN WITH (FORMAT csv);
passthrough,disqualify,fs_user_id,u1,ext-news
passthrough,qualify,fs_user_id,u2,ext-other
\.
SELECT * FROM passthrough.import_snapshot('ext-news', p_at => 1700000200);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM passthrough.import_snapshot('ext-news', p_max_disqualify_share => 2);
\echo :LAST_ERROR_SQLSTATE
-- rows that all name one other audience (PT024): one error, not the same problem on every row
SELECT passthrough.begin_load();
COPY pg_temp.passthrough_load (type, action, identifier_type, identifier, audience_id) FROM STDIN WITH (FORMAT csv);
passthrough,qualify,fs_user_id,u1,ext-other
passthrough,qualify,fs_user_id,u2,ext-other
\.
SELECT * FROM passthrough.import_snapshot('ext-news');
\echo :LAST_ERROR_SQLSTATE
