-- API keys: shown once, stored as SHA-256, authenticated by hash (sql/functions/270_api_keys.sql).
\set SHOW_CONTEXT never
\pset null '(null)'

SELECT passthrough.create_api_key('ci', 'private') AS key \gset
SELECT :'key' ~ '^pt_private_[0-9a-f]{64}$' AS well_formed;
SELECT passthrough.create_api_key('web', 'public') ~ '^pt_public_[0-9a-f]{64}$' AS well_formed;
SELECT passthrough.authenticate_api_key(sha256(convert_to(:'key', 'UTF8')));
SELECT passthrough.authenticate_api_key(sha256(convert_to('pt_private_guess', 'UTF8')));
SELECT name, scope, revoked_at IS NOT NULL AS revoked FROM passthrough.list_api_keys();

SELECT passthrough.revoke_api_key('ci');
SELECT passthrough.authenticate_api_key(sha256(convert_to(:'key', 'UTF8')));
SELECT name, scope, revoked_at IS NOT NULL AS revoked FROM passthrough.list_api_keys();
-- a revoked key's name may be used again
SELECT passthrough.create_api_key('ci', 'private') ~ '^pt_private_' AS created;

-- Refused
SELECT passthrough.create_api_key('ci', 'private');
\echo :LAST_ERROR_SQLSTATE
SELECT passthrough.create_api_key('has space', 'private');
\echo :LAST_ERROR_SQLSTATE
SELECT passthrough.create_api_key('admin', 'root');
\echo :LAST_ERROR_SQLSTATE
SELECT passthrough.revoke_api_key('nobody');
\echo :LAST_ERROR_SQLSTATE
