-- What the admin API and CLI read and write besides the views of 0002-0004 (docs/admin.md):
--
--   job_attempts  every attempt of a job that left the fast path: when, how it ended, and the
--                 error. Partitioned by dataset like `job_state`, so it is dropped (or moved
--                 forward by compaction) with its jobs. A job delivered at the first try has no
--                 row here either: the API shows it as one implied successful attempt.
--   lane_stats    per (lane, minute, host): outcomes counted in the host's memory and flushed
--                 about once a minute, only for lanes that moved (an idle host writes nothing).
--                 Rows older than a day are removed by maintenance.
--   operator_audit.filter  the filter an API call selected its jobs with (null from SQL).

-- One row per attempt. `attempt` is the job's attempt count after this one (a throttle does
-- not spend an attempt, so it repeats the number before it). `outcome`:
--   delivered  the destination accepted it (only recorded for jobs that had failed before)
--   retry      a retryable failure; the job is retried at its next_attempt_at
--   throttled  the destination asked to slow down (no attempt spent)
--   abort      a permanent failure, or retries exhausted (error_code says which, e.g. too_large)
-- `error_code` and `error_text` are this attempt's (null when delivered); text kept to 10 KB.
CREATE TABLE job_attempts (
    dataset        integer     NOT NULL,
    workspace_id   text        NOT NULL,
    destination_id text        NOT NULL,
    event_id       bigint      NOT NULL,
    attempt        integer     NOT NULL,
    at             timestamptz NOT NULL,
    outcome        text        NOT NULL,
    error_code     text,
    error_text     text
) PARTITION BY RANGE (dataset);
CREATE INDEX job_attempts_job ON job_attempts (workspace_id, destination_id, event_id, at);

-- A partition for every dataset that exists; `store::datasets` creates the later ones.
DO $$
DECLARE
    d integer;
BEGIN
    FOR d IN SELECT dataset FROM datasets ORDER BY dataset LOOP
        EXECUTE format('CREATE TABLE job_attempts_ds_%s PARTITION OF job_attempts '
                       'FOR VALUES FROM (%s) TO (%s)', d, d, d + 1);
    END LOOP;
END $$;

-- Outcomes per lane, minute and host (a host's incarnation), with the host's concurrency limit
-- and breaker as last seen in that minute.
CREATE TABLE lane_stats (
    workspace_id      text        NOT NULL,
    destination_id    text        NOT NULL,
    minute            timestamptz NOT NULL,
    host_id           uuid        NOT NULL,
    delivered         bigint      NOT NULL DEFAULT 0,
    failed            bigint      NOT NULL DEFAULT 0,
    aborted           bigint      NOT NULL DEFAULT 0,
    throttled         bigint      NOT NULL DEFAULT 0,
    concurrency_limit integer,
    breaker_open      boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (workspace_id, destination_id, minute, host_id)
);
CREATE INDEX lane_stats_minute ON lane_stats (minute);

-- The filter an admin API call chose its jobs with (the API sets `sluice.audit_filter` for
-- its transaction); null for calls made directly in SQL.
ALTER TABLE operator_audit ADD COLUMN filter jsonb;

CREATE OR REPLACE FUNCTION sluice_audit(p_workspace text, p_destination text, p_actor text,
                                        p_action text, p_event_ids bigint[], p_jobs integer)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO operator_audit (workspace_id, destination_id, actor, action, event_ids, jobs,
                                filter)
    VALUES (p_workspace, p_destination, p_actor, p_action, p_event_ids, p_jobs,
            nullif(current_setting('sluice.audit_filter', true), '')::jsonb);
    SELECT pg_notify('sluice_events', 'op ' || p_workspace || ' ' || p_destination);
$$;
