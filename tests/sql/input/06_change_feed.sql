-- The change feed: every transition of a pair, in an order a consumer resumes from
-- (sql/functions/210_change_feed.sql). Cursors hold transaction ids, so they are not printed here.
\set SHOW_CONTEXT never
\pset null '(null)'
SET timezone = 'UTC';

SELECT passthrough.create_audience('news', 'ext-news');
SELECT passthrough.enable();
-- One change per batch: the feed orders batches; the order of one batch's changes is not specified.
SELECT changed FROM passthrough.apply_events('[{"type": "passthrough", "action": "qualify",
  "identifiers": {"fs_user_id": "u1"}, "data": {"audience_id": "ext-news", "ts": 1700000000}}]', 'first');
SELECT changed FROM passthrough.apply_events('[{"type": "passthrough", "action": "qualify",
  "identifiers": {"fs_user_id": "u2"}, "data": {"audience_id": "ext-undefined", "ts": 1700000000}}]', 'second');
SELECT changed FROM passthrough.apply_events('[{"type": "passthrough", "action": "disqualify",
  "identifiers": {"fs_user_id": "u1"}, "data": {"audience_id": "ext-news", "ts": 1700000060}}]', 'third');
-- audience is NULL for an external id no definition links
SELECT change, identifier_type, identifier, audience_id, audience, event_ts, source FROM passthrough.changes();

-- Resuming from a row's cursor returns what follows it.
SELECT c.cursor AS first_cursor FROM passthrough.changes(p_limit => 1) c \gset
SELECT change, identifier, source FROM passthrough.changes(:'first_cursor');
SELECT count(*) FROM passthrough.changes(passthrough.current_change_cursor());
SELECT passthrough.changes_pending();

-- Refused
SELECT * FROM passthrough.changes('not-a-cursor');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM passthrough.changes(p_limit => 0);
\echo :LAST_ERROR_SQLSTATE
