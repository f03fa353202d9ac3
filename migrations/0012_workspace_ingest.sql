-- Per-workspace ingest (docs/scaling.md): one ingest lock and one head per workspace instead of
-- one for the whole store, so that two workspaces never wait for each other (on one PostgreSQL,
-- and across the workers of a sharded one).

-- The last event id committed per workspace, written by every ingest transaction while it
-- holds its workspace's ingest lock. A reader of the workspace that sees it in the same
-- snapshot as the events knows that no id of the workspace at or below it can still appear.
-- Ids stay global (one sequence); each workspace's are in its own commit order.
CREATE TABLE workspace_heads (
    workspace_id text   PRIMARY KEY,
    last_id      bigint NOT NULL
);
INSERT INTO workspace_heads (workspace_id, last_id)
SELECT workspace_id, max(id) FROM events GROUP BY workspace_id;

-- Dedup keys carry their workspace (the distribution column of a sharded store). Keys recorded
-- before this migration have '' and are still found (dedup::dedup_keys_check).
ALTER TABLE dedup_keys ADD COLUMN workspace_id text NOT NULL DEFAULT '';
ALTER TABLE dedup_keys ALTER COLUMN workspace_id DROP DEFAULT;

-- The views that compared lanes with the global head compare them with their workspace's.
CREATE OR REPLACE VIEW lane_status AS
SELECT l.workspace_id, l.destination_id, l.ordering, l.cursor, l.claimed_to,
       greatest(coalesce((SELECT w.last_id FROM workspace_heads w
                          WHERE w.workspace_id = l.workspace_id), 0) - l.cursor, 0) AS ids_behind,
       l.owner, h.host_name AS owner_host, h.pid AS owner_pid, l.lease_until,
       l.lease_until > now() AS leased,
       (SELECT count(*) FROM blocked_keys b
        WHERE b.workspace_id = l.workspace_id AND b.destination_id = l.destination_id)
           AS blocked_keys,
       l.next_due, l.retired_at,
       l.plugin, l.plugin_sha256, l.plugin_error, l.plugin_checked_at,
       l.paused_at, l.paused_by,
       st.breaker_open, st.concurrency_limit, st.minute AS stats_minute
FROM lanes l
LEFT JOIN hosts h ON h.incarnation = l.owner
LEFT JOIN LATERAL (
    SELECT x.breaker_open, x.concurrency_limit, x.minute FROM lane_stats x
    WHERE x.workspace_id = l.workspace_id AND x.destination_id = l.destination_id
    ORDER BY x.minute DESC LIMIT 1
) st ON true;

CREATE OR REPLACE VIEW lane_backlog AS
SELECT l.workspace_id, l.destination_id,
       coalesce(o.failed, 0) AS failed,
       coalesce(o.parked, 0) AS parked,
       least(q.n, 10000) AS queued,
       least(q.reading, 10000) AS executing,
       q.n > 10000 AS queued_capped,
       oldest.id AS oldest_event_id,
       oldest.received_at AS oldest_received_at,
       extract(epoch FROM now() - oldest.received_at)::float8 AS oldest_age_seconds
FROM lanes l
LEFT JOIN workspace_heads h ON h.workspace_id = l.workspace_id
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE s.state = 'failed') AS failed,
           count(*) FILTER (WHERE s.state = 'pending') AS parked
    FROM job_state s
    WHERE s.workspace_id = l.workspace_id AND s.destination_id = l.destination_id
      AND s.state IN ('pending', 'failed')
) o ON true
CROSS JOIN LATERAL (
    SELECT count(*) AS n, count(*) FILTER (WHERE x.id <= l.claimed_to) AS reading FROM (
        SELECT e.id FROM routes r
        CROSS JOIN LATERAL (
            SELECT e.id FROM events e
            WHERE e.workspace_id = r.workspace_id AND e.source_id = r.source_id
              AND e.id > r.from_id AND (r.until_id IS NULL OR e.id <= r.until_id)
              AND e.id > l.cursor AND e.id <= h.last_id
              AND (e.id > l.claimed_to
                   OR NOT EXISTS (SELECT 1 FROM job_state s
                                  WHERE s.workspace_id = e.workspace_id
                                    AND s.destination_id = l.destination_id
                                    AND s.event_id = e.id))
            ORDER BY e.id LIMIT 10001
        ) e
        WHERE r.workspace_id = l.workspace_id AND r.destination_id = l.destination_id
        LIMIT 10001
    ) x
) q
LEFT JOIN LATERAL (
    SELECT x.id, x.received_at FROM (
        (SELECT e.id, e.received_at
         FROM job_state s
         JOIN events e ON e.workspace_id = s.workspace_id AND e.source_id = s.source_id
                      AND e.id = s.event_id AND e.dataset = s.dataset
         WHERE s.workspace_id = l.workspace_id AND s.destination_id = l.destination_id
           AND s.state IN ('pending', 'failed')
         ORDER BY s.event_id LIMIT 1)
        UNION ALL
        (SELECT e.id, e.received_at
         FROM routes r
         CROSS JOIN LATERAL (
             SELECT e.id, e.received_at FROM events e
             WHERE e.workspace_id = r.workspace_id AND e.source_id = r.source_id
              AND e.id > r.from_id AND (r.until_id IS NULL OR e.id <= r.until_id)
               AND e.id > l.cursor AND e.id <= h.last_id
               AND (e.id > l.claimed_to
                    OR NOT EXISTS (SELECT 1 FROM job_state s
                                   WHERE s.workspace_id = e.workspace_id
                                     AND s.destination_id = l.destination_id
                                     AND s.event_id = e.id))
             ORDER BY e.id LIMIT 1
         ) e
         WHERE r.workspace_id = l.workspace_id AND r.destination_id = l.destination_id)
    ) x
    ORDER BY x.id LIMIT 1
) oldest ON true
WHERE l.retired_at IS NULL;

-- `ingest_head` stays for operators and their queries: the highest id committed anywhere.
DROP TABLE ingest_head;
CREATE VIEW ingest_head AS
SELECT true AS one, coalesce((SELECT max(last_id) FROM workspace_heads), 0)::bigint AS last_id;
