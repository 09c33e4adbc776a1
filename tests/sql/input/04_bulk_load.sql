-- Bulk loading: stage rows with COPY, then load_staged validates and applies them as one batch
-- (sql/functions/170_bulk_load.sql).
\set SHOW_CONTEXT never
\pset null '(null)'
SET timezone = 'UTC';

SELECT passthrough.create_audience('news', 'ext-news');
SELECT passthrough.enable();

-- No staging table yet: PT021.
SELECT * FROM passthrough.load_staged();
\echo :LAST_ERROR_SQLSTATE

SELECT passthrough.begin_load();
COPY pg_temp.passthrough_load (type, action, identifier_type, identifier, audience_id, ts) FROM STDIN WITH (FORMAT csv);
passthrough,qualify,fs_user_id,u1,ext-news,1700000000
passthrough,qualify,fs_user_id,u2,ext-news,1700000000
passthrough,qualify,fs_user_id,u3,ext-new-id,1700000000
passthrough,disqualify,fs_user_id,u2,ext-news,1700000100
\.
-- register_staged_audiences: the ids never seen before (parallel writers commit this first)
SELECT passthrough.register_staged_audiences();
SELECT load_id, accepted, ignored, rejected, changed FROM passthrough.load_staged('nightly');
SELECT identifier, audience_id, change, source
FROM passthrough.changes() ORDER BY identifier, audience_id, change;
SELECT name, size FROM passthrough.list_audiences();

-- Invalid rows refuse the whole load (PT020), listing the first 100 as JSON in DETAIL.
SELECT passthrough.begin_load();
COPY pg_temp.passthrough_load (type, action, identifier_type, identifier, audience_id, ts) FROM STDIN WITH (FORMAT csv);
passthrough,qualify,fs_user_id,u4,ext-news,1700000000
passthrough,enter,fs_user_id,u5,ext-news,1700000000
passthrough,qualify,phone,555,ext-news,1700000000
\.
SELECT * FROM passthrough.load_staged();
\echo :LAST_ERROR_SQLSTATE

-- With p_rejects the valid rows are stored and the invalid ones kept with their problems. Load ids come
-- from a sequence, which a refused load does not give back: this is load 3.
SELECT load_id, accepted, rejected, changed FROM passthrough.load_staged(p_rejects => true);
SELECT row_no, problems, action, identifier_type, identifier, source FROM passthrough.get_load_rejects(3);
SELECT passthrough.purge_load_rejects();

-- Other types are ignored when asked.
SELECT passthrough.begin_load();
COPY pg_temp.passthrough_load (type, action, identifier_type, identifier, audience_id, ts) FROM STDIN WITH (FORMAT csv);
custom,click,fs_user_id,u6,ext-news,1700000000
passthrough,qualify,fs_user_id,u6,ext-news,1700000000
\.
SELECT accepted, ignored, rejected FROM passthrough.load_staged(p_skip_other_types => true);
SELECT name, size FROM passthrough.list_audiences();
