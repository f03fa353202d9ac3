-- Sluice job store. This schema is a public interface: operators query it (and the views at the
-- end) with plain SQL. See README "Inspecting the store".
--
-- Two tables per job, split by how they change:
--   jobs       immutable: what to deliver (the event) and where. Written once at ingest, never
--              updated, so its wide rows never leave dead tuples behind.
--   job_state  narrow and mutable: where the job stands (state, attempts, last error, timing).
-- Both are keyed by the job id, which a single sequence hands out in ingest order; ids are the
-- unit a later dataset rotation will range-partition on and drop whole.

CREATE SEQUENCE job_id_seq AS bigint;

CREATE TABLE jobs (
    id             bigint PRIMARY KEY,
    workspace_id   text        NOT NULL,
    source_id      text        NOT NULL,
    destination_id text        NOT NULL,
    -- userId if non-empty, else anonymousId: jobs of one (destination_id, ordering_key) are
    -- delivered in id order.
    ordering_key   text        NOT NULL,
    message_id     text        NOT NULL,
    event          jsonb       NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now()
);

-- States:
--   pending    waiting its turn (never attempted, or released unattempted from a batch)
--   executing  handed to a router; at most the jobs of one claim per ordering key
--   failed     last attempt failed or was throttled; retried at next_attempt_at; it stays the
--              head of its key, so later jobs of the key wait behind it
--   delivered  terminal: the destination accepted it (or the plugin filtered it out)
--   aborted    terminal: permanent failure, or retries exhausted; can be replayed
CREATE TABLE job_state (
    job_id           bigint      PRIMARY KEY,
    destination_id   text        NOT NULL,
    ordering_key     text        NOT NULL,
    state            text        NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'executing', 'failed', 'delivered', 'aborted')),
    attempt          integer     NOT NULL DEFAULT 0,
    error_code       text,
    error_text       text,
    first_attempt_at timestamptz,
    last_attempt_at  timestamptz,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 80);

-- Pickup scans unfinished jobs of a destination in id order.
CREATE INDEX job_state_ready ON job_state (destination_id, job_id)
    WHERE state IN ('pending', 'failed');
-- Keys that are busy or waiting for a retry: what a claim must skip. Small by construction
-- (at most one claim's worth of executing jobs plus one failed head per failing key).
CREATE INDEX job_state_busy_keys ON job_state (destination_id, ordering_key)
    WHERE state IN ('executing', 'failed');
-- The head (lowest unfinished job) of each key, for the blocked_jobs view.
CREATE INDEX job_state_open_keys ON job_state (destination_id, ordering_key, job_id)
    WHERE state IN ('pending', 'executing', 'failed');

-- A resent (source, messageId) within the dedup window creates no new jobs.
CREATE TABLE dedup_keys (
    source_id   text        NOT NULL,
    message_id  text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, message_id)
);
CREATE INDEX dedup_keys_received_at ON dedup_keys (received_at);

-- Operator views ------------------------------------------------------------------------------

-- Every job with its state.
CREATE VIEW job_overview AS
SELECT j.id, j.workspace_id, j.source_id, j.destination_id, j.ordering_key, j.message_id,
       s.state, s.attempt, s.error_code, s.error_text, j.received_at, s.first_attempt_at,
       s.last_attempt_at, s.next_attempt_at, j.event
FROM jobs j JOIN job_state s ON s.job_id = j.id;

-- Jobs not yet delivered or aborted.
CREATE VIEW pending_jobs AS
SELECT * FROM job_overview WHERE state IN ('pending', 'executing', 'failed');

-- Jobs waiting for a retry after a failed attempt (each is the head of its key).
CREATE VIEW failed_jobs AS
SELECT * FROM job_overview WHERE state = 'failed';

-- Jobs given up on; replay them by setting state back to 'pending'.
CREATE VIEW aborted_jobs AS
SELECT * FROM job_overview WHERE state = 'aborted';

-- Jobs that wait behind an earlier unfinished job of the same key, and which job that is.
CREATE VIEW blocked_jobs AS
SELECT s.job_id, s.destination_id, s.ordering_key, s.state,
       head.job_id AS blocked_by, head.state AS blocked_by_state,
       head.attempt AS blocked_by_attempt, head.error_code AS blocked_by_error_code,
       head.next_attempt_at AS blocked_by_next_attempt_at
FROM job_state s
CROSS JOIN LATERAL (
    SELECT h.job_id, h.state, h.attempt, h.error_code, h.next_attempt_at
    FROM job_state h
    WHERE h.destination_id = s.destination_id AND h.ordering_key = s.ordering_key
      AND h.state IN ('pending', 'executing', 'failed')
    ORDER BY h.job_id
    LIMIT 1
) head
WHERE s.state IN ('pending', 'failed') AND head.job_id < s.job_id;

-- Queue depth per destination.
CREATE VIEW destination_depth AS
SELECT destination_id,
       count(*) FILTER (WHERE state = 'pending')   AS pending,
       count(*) FILTER (WHERE state = 'executing') AS executing,
       count(*) FILTER (WHERE state = 'failed')    AS failed,
       min(job_id)                                 AS oldest_job_id
FROM job_state
WHERE state IN ('pending', 'executing', 'failed')
GROUP BY destination_id;
