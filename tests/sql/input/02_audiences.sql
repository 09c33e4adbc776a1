-- Audience definitions: create, read, list, update, delete (sql/functions/120_audiences.sql).
\set SHOW_CONTEXT never
\pset null '(null)'
SET timezone = 'UTC';
SET intervalstyle = 'postgres';

SELECT passthrough.create_audience('news', 'ext-news', 'Newsletter readers', '{"team": "crm"}');
SELECT passthrough.create_audience('vip', 'ext-vip', p_ttl => interval '30 days');
SELECT name, external_audience_id, description, metadata, revision, is_ready, size, ttl
FROM passthrough.get_audience('vip');
SELECT name, external_audience_id, revision, size FROM passthrough.list_audiences();
-- keyset pages: after a name, up to p_first
SELECT name FROM passthrough.list_audiences(p_first => 1, p_after => 'news');
-- and whether another page follows, and from where
SELECT * FROM passthrough.audience_page_info(p_first => 1);
SELECT * FROM passthrough.audience_page_info(p_first => 1, p_after => 'news');

-- put: a changed field adds one to the revision, the same definition leaves it alone
SELECT passthrough.put_audience('news', 'ext-news', 'Readers of the newsletter', '{"team": "crm"}');
SELECT passthrough.put_audience('news', 'ext-news', 'Readers of the newsletter', '{"team": "crm"}');
SELECT passthrough.set_audience_ttl('news', interval '1 day');
SELECT name, description, revision, ttl FROM passthrough.get_audience('news');
SELECT passthrough.validate_audience('ok_name', 'ext-other');

-- Refused
SELECT passthrough.create_audience('news', 'ext-news');
\echo :LAST_ERROR_SQLSTATE
SELECT passthrough.create_audience('Bad Name', 'ext-bad');
\echo :LAST_ERROR_SQLSTATE
SELECT passthrough.create_audience('copy', 'ext-news');
\echo :LAST_ERROR_SQLSTATE
SELECT passthrough.create_audience('lists', 'ext-lists', p_metadata => '[1, 2]');
\echo :LAST_ERROR_SQLSTATE
SELECT passthrough.create_audience('short', 'ext-short', p_ttl => interval '0');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM passthrough.list_audiences(p_first => 5000);
\echo :LAST_ERROR_SQLSTATE

SELECT passthrough.delete_audience('vip');
SELECT * FROM passthrough.get_audience('vip');
\echo :LAST_ERROR_SQLSTATE
SELECT passthrough.delete_audience('vip');
\echo :LAST_ERROR_SQLSTATE
SELECT name FROM passthrough.list_audiences();
