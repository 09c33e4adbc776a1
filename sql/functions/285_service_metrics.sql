-- What /metrics reports about the database (pyapp/web/metrics.py, docs/operations.md "Metrics"): facts that
-- only the database knows, read at scrape time, one row per sample. Python exposes what this returns, nothing more.

CREATE FUNCTION passthrough.service_metrics()
RETURNS TABLE (metric text, webhook text, value double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  -- per webhook: how long its first undelivered change (in feed order, readable, selected by its audience
  -- filter, as passthrough._webhook_page selects) has been in the feed; 0 when it has none
  SELECT 'webhook_lag_seconds', w.name::text,
         coalesce(extract(epoch FROM now() - oldest.received_at)::float8, 0)
  FROM passthrough.webhooks w
  CROSS JOIN LATERAL passthrough._parse_change_cursor(w.feed_cursor) p
  LEFT JOIN LATERAL (
    SELECT coalesce(b.received_at, c.event_ts) AS received_at
    FROM passthrough.membership_changes c
    LEFT JOIN passthrough.batches b ON b.id = c.batch_id
    WHERE (c.pos, c.level, c.batch_id, c.ord) > (p.o_pos, p.o_level, p.o_batch_id, p.o_ord)
      AND c.pos < passthrough._feed_horizon()
      AND (w.audiences IS NULL
           OR EXISTS (SELECT 1 FROM passthrough.audiences a
                      WHERE a.audience_key = c.audience_key AND a.name = ANY (w.audiences)))
    ORDER BY c.pos, c.level, c.batch_id, c.ord
    LIMIT 1
  ) oldest ON true
  UNION ALL
  -- memberships whose ttl ran out and that the sweeper has not recorded yet (reads are right without it)
  SELECT 'expiry_backlog', NULL,
         coalesce((SELECT sum(passthrough._expired_unswept(a.audience_key)) FROM passthrough.audiences a
                   WHERE a.ttl IS NOT NULL), 0)::float8
  UNION ALL
  -- NULL until prune_history has once finished a run
  SELECT 'retention_last_success_age_seconds', NULL, extract(epoch FROM now() - s.last_pruned_at)::float8
  FROM passthrough.settings s;
$$;
COMMENT ON FUNCTION passthrough.service_metrics() IS
  'The database''s facts for monitoring (GET /metrics), one row per sample: webhook_lag_seconds per webhook (how long its first undelivered change, by its audience filter, has been in the feed; 0 when caught up, paused webhooks included), expiry_backlog (memberships whose ttl ran out that the expiry sweeper has not recorded yet), retention_last_success_age_seconds (seconds since prune_history last finished a run; NULL: never).';
