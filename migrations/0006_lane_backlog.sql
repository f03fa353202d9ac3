-- Depth and oldest age per lane, cheap at any backlog (docs/sql.md, query 1).
--
-- `destination_depth` (0002) derives every job's state through `job_overview`, so it reads the
-- whole backlog: right for a one-off query, too slow for a metrics scrape or a page that
-- refreshes every few seconds when a lane is millions of events behind. `lane_backlog` reads
-- only index entries:
--
--   failed, parked  the lane's unfinished `job_state` rows, by state (from the index below:
--                   as many entries as there are such rows, never the delivered backlog);
--   queued          events past the lane's cursor with no row yet (in flight or not yet read),
--                   counted up to 10,000 (`queued_capped` is then true: there are more);
--   executing       those of them the lane's owner has read (at or below `claimed_to`);
--   oldest_*        the oldest unfinished job: the first open row or the first event past the
--                   cursor, whichever is older (one index probe each).
--
-- Only a job the lane's owner has read (at or below `claimed_to`) can have a row, so only
-- those are probed for one. The first event past the cursor may already be delivered and not
-- yet committed (a lane commits its cursor in batches), so `oldest_*` can lag by one commit,
-- never more.

-- A lane's unfinished rows in id order: its first entry is the lane's oldest open job.
CREATE INDEX job_state_open_lane ON job_state (workspace_id, destination_id, event_id)
    INCLUDE (state) WHERE state IN ('pending', 'failed');

CREATE VIEW lane_backlog AS
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
CROSS JOIN ingest_head h
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

-- Circuit state beside the lease (docs/sql.md, query 2): the breaker and the concurrency limit
-- as a host last reported them for the lane (`lane_stats`, flushed about once a minute while
-- the lane moves; `stats_minute` says when). Same columns as in 0004, these three appended.
CREATE OR REPLACE VIEW lane_status AS
SELECT l.workspace_id, l.destination_id, l.ordering, l.cursor, l.claimed_to,
       (SELECT last_id FROM ingest_head) - l.cursor AS ids_behind,
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
