-- Sluice job store, second shape: an append-only event log read by per-lane cursors.
--
-- This schema is a public interface (README "Inspecting the store", docs/store.md). In short:
--
--   events      the log. Every accepted event is written once, however many destinations it
--               goes to, in datasets (partitions) that are dropped whole once finished.
--   lanes       one row per (workspace, destination): how far its delivery has got (`cursor`),
--               which host holds it (lease) and how it orders events.
--   job_state   one row per job that left the fast path: it failed, was parked behind a failed
--               job of its key, or was aborted. A job delivered at the first try has no row.
--   blocked_keys  ordering keys that have an unfinished job_state row; every later event of
--               such a key is parked behind it.
--
-- A job is (event, destination). Its state is derived:
--   a job_state row, if there is one, says it; otherwise the event is `delivered` when its id is
--   at or below the lane's cursor, `executing` when it is at or below `claimed_to` (read by the
--   lane's owner, outcome not yet recorded), and `pending` above that.

-- The first shape (one jobs row and one job_state row per job) is replaced. Refuse to drop it
-- while it still holds work: drain it with the previous release first.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM job_state WHERE state IN ('pending', 'executing', 'failed')) THEN
        RAISE EXCEPTION 'the job store still holds unfinished jobs of the previous format; '
            'run the previous sluice release until they are delivered, then upgrade';
    END IF;
END $$;
DROP VIEW IF EXISTS destination_depth, blocked_jobs, aborted_jobs, failed_jobs, pending_jobs,
    job_overview;
DROP TABLE IF EXISTS jobs, job_state, dedup_keys;
DROP SEQUENCE IF EXISTS job_id_seq;

CREATE TYPE job_status AS ENUM ('pending', 'executing', 'failed', 'delivered', 'aborted');
-- What a destination keeps in order: each user's events (`user`, across the workspace's
-- sources), each (source, user) pair's events (`source_user`), or nothing (`none`).
CREATE TYPE ordering_scope AS ENUM ('user', 'source_user', 'none');

-- Event ids: handed out by the ingest writer under the ingest lock (see ingest_head), so id
-- order is commit order and the ids visible to a reader always form a prefix.
CREATE SEQUENCE event_id_seq AS bigint;

-- Datasets: the partitions of `events` and `job_state`. Exactly one is open (written to); a
-- closed one is dropped whole once every lane is past it and none of its jobs is unfinished
-- (the few that are, are first moved into the open dataset).
CREATE TABLE datasets (
    dataset    integer     PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The first event id written into it.
    first_id   bigint      NOT NULL,
    closed_at  timestamptz,
    -- The highest event id written into it (set when it is closed).
    last_id    bigint
);

-- The last event id committed, written by every ingest transaction while it holds the ingest
-- lock. A reader that sees it in the same snapshot as the events knows that no id at or below
-- it can still appear.
CREATE TABLE ingest_head (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_id bigint  NOT NULL
);
INSERT INTO ingest_head VALUES (true, 0);

CREATE TABLE events (
    dataset      integer     NOT NULL,
    id           bigint      NOT NULL,
    workspace_id text        NOT NULL,
    source_id    text        NOT NULL,
    -- userId if non-empty, else anonymousId.
    user_key     text        NOT NULL,
    message_id   text        NOT NULL,
    received_at  timestamptz NOT NULL,
    -- Length of `event` in bytes: claims are bounded by bytes as well as by count.
    size         integer     NOT NULL,
    -- The event as JSON text, exactly as accepted (numbers keep every digit, key order kept);
    -- cast to json to query it: event::json->>'userId'.
    event        text        NOT NULL
) PARTITION BY RANGE (dataset);
-- How a lane reads its sources' events in id order. The distribution column for a sharded
-- Postgres (workspace_id) leads every index.
CREATE INDEX events_read ON events (workspace_id, source_id, id);
-- Finding an event by id (operators, admin API): a few bytes per block range.
CREATE INDEX events_id ON events USING brin (id);

-- Which sources feed which destinations: written from the config at start.
CREATE TABLE routes (
    workspace_id   text NOT NULL,
    destination_id text NOT NULL,
    source_id      text NOT NULL,
    PRIMARY KEY (workspace_id, destination_id, source_id)
);

CREATE TABLE lanes (
    workspace_id   text           NOT NULL,
    destination_id text           NOT NULL,
    ordering       ordering_scope NOT NULL DEFAULT 'user',
    -- Events with ids at or below this were accepted before the lane existed: not its jobs.
    start_id       bigint         NOT NULL,
    -- Every job of the lane whose event id is at or below the cursor is finished or has a
    -- job_state row.
    cursor         bigint         NOT NULL,
    -- The owner has read the log up to here; jobs between cursor and claimed_to without a row
    -- are in flight (a new owner delivers them again: at-least-once).
    claimed_to     bigint         NOT NULL,
    -- The host incarnation holding the lease, and a counter bumped at every acquisition:
    -- every write of the owner is fenced on both.
    owner          uuid,
    owner_epoch    bigint         NOT NULL DEFAULT 0,
    lease_until    timestamptz,
    -- When the earliest blocked key may be retried (so that any host can wake the lane).
    next_due       timestamptz,
    -- Set when the destination left the config: its jobs no longer hold datasets back.
    retired_at     timestamptz,
    updated_at     timestamptz    NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, destination_id)
);

CREATE TABLE job_state (
    dataset          integer     NOT NULL,
    workspace_id     text        NOT NULL,
    destination_id   text        NOT NULL,
    event_id         bigint      NOT NULL,
    source_id        text        NOT NULL,
    -- The ordering key in the destination's scope.
    order_key        text        NOT NULL,
    -- pending: parked behind an earlier unfinished job of its key; failed: waiting for a retry
    -- at next_attempt_at (the head of its key); delivered / aborted: finished.
    state            job_status  NOT NULL,
    attempt          integer     NOT NULL DEFAULT 0,
    error_code       text,
    -- The last error, kept to 10 KB.
    error_text       text,
    first_attempt_at timestamptz,
    last_attempt_at  timestamptz,
    next_attempt_at  timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, destination_id, event_id, dataset)
) PARTITION BY RANGE (dataset);
-- The unfinished jobs of a key, in order: what a retry fetches.
CREATE INDEX job_state_open ON job_state (workspace_id, destination_id, order_key, event_id)
    WHERE state IN ('pending', 'failed');

CREATE TABLE blocked_keys (
    workspace_id    text        NOT NULL,
    destination_id  text        NOT NULL,
    order_key       text        NOT NULL,
    -- When the key's first unfinished job may be tried again.
    next_attempt_at timestamptz NOT NULL,
    blocked_since   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, destination_id, order_key)
);
CREATE INDEX blocked_keys_due ON blocked_keys (workspace_id, destination_id, next_attempt_at);

-- Seen (source, messageId) pairs, as a 128-bit hash, by the minute (since the Unix epoch) they
-- were received. Partitions cover a dedup window's worth of minutes each (so a lookup touches at
-- most two), carry a hash index on `hash` (the keys are random: a btree insert would cost
-- several times more), and are dropped whole once older than the window; `dedup_buckets` lists
-- them. Ingest probes and inserts under the ingest lock, so no unique constraint is needed.
CREATE TABLE dedup_keys (
    bucket integer NOT NULL,
    hash   uuid    NOT NULL
) PARTITION BY RANGE (bucket);
CREATE TABLE dedup_buckets (
    lo integer PRIMARY KEY,
    hi integer NOT NULL
);

-- Host incarnations (one per running `sluice serve`), for leases and for operators.
CREATE TABLE hosts (
    incarnation uuid        PRIMARY KEY,
    host_name   text        NOT NULL,
    pid         integer     NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now(),
    stopped_at  timestamptz
);

-- Operator views ------------------------------------------------------------------------------

-- Every job (event × destination of its source) with its state, derived as described above.
CREATE VIEW job_overview AS
SELECT e.id AS event_id, l.destination_id, e.workspace_id, e.source_id, e.user_key,
       e.message_id,
       coalesce(s.state, CASE WHEN e.id <= l.cursor THEN 'delivered'
                              WHEN e.id <= l.claimed_to THEN 'executing'
                              ELSE 'pending' END::job_status) AS state,
       coalesce(s.attempt, CASE WHEN e.id <= l.cursor THEN 1 ELSE 0 END) AS attempt,
       s.error_code, s.error_text, e.received_at, s.first_attempt_at, s.last_attempt_at,
       s.next_attempt_at, s.order_key, e.dataset, e.event::json AS event
FROM events e
JOIN routes r ON r.workspace_id = e.workspace_id AND r.source_id = e.source_id
JOIN lanes l ON l.workspace_id = r.workspace_id AND l.destination_id = r.destination_id
LEFT JOIN job_state s ON s.workspace_id = e.workspace_id
    AND s.destination_id = l.destination_id AND s.event_id = e.id
WHERE e.id > l.start_id AND l.retired_at IS NULL;

-- Jobs not yet delivered or aborted.
CREATE VIEW pending_jobs AS
SELECT * FROM job_overview WHERE state IN ('pending', 'executing', 'failed');

-- Jobs waiting for a retry after a failed attempt (each is the first unfinished job of its key).
CREATE VIEW failed_jobs AS
SELECT * FROM job_overview WHERE state = 'failed';

-- Jobs given up on (they can be replayed).
CREATE VIEW aborted_jobs AS
SELECT * FROM job_overview WHERE state = 'aborted';

-- Jobs that wait behind an earlier unfinished job of their key, and which job that is.
CREATE VIEW blocked_jobs AS
SELECT s.event_id, s.destination_id, s.workspace_id, s.order_key, s.state,
       head.event_id AS blocked_by, head.state AS blocked_by_state,
       head.attempt AS blocked_by_attempt, head.error_code AS blocked_by_error_code,
       head.next_attempt_at AS blocked_by_next_attempt_at
FROM job_state s
CROSS JOIN LATERAL (
    SELECT h.event_id, h.state, h.attempt, h.error_code, h.next_attempt_at
    FROM job_state h
    WHERE h.workspace_id = s.workspace_id AND h.destination_id = s.destination_id
      AND h.order_key = s.order_key AND h.state IN ('pending', 'failed')
    ORDER BY h.event_id
    LIMIT 1
) head
WHERE s.state IN ('pending', 'failed') AND head.event_id < s.event_id;

-- Queue depth per destination (lane), with the oldest unfinished job.
CREATE VIEW destination_depth AS
SELECT l.workspace_id, l.destination_id,
       count(*) FILTER (WHERE j.state = 'pending')   AS pending,
       count(*) FILTER (WHERE j.state = 'executing') AS executing,
       count(*) FILTER (WHERE j.state = 'failed')    AS failed,
       min(j.event_id)                                AS oldest_event_id,
       min(j.received_at)                             AS oldest_received_at
FROM lanes l
LEFT JOIN pending_jobs j ON j.workspace_id = l.workspace_id
    AND j.destination_id = l.destination_id
WHERE l.retired_at IS NULL
GROUP BY l.workspace_id, l.destination_id;

-- Lanes with their lease and progress.
CREATE VIEW lane_status AS
SELECT l.workspace_id, l.destination_id, l.ordering, l.cursor, l.claimed_to,
       (SELECT last_id FROM ingest_head) - l.cursor AS ids_behind,
       l.owner, h.host_name AS owner_host, h.pid AS owner_pid, l.lease_until,
       l.lease_until > now() AS leased,
       (SELECT count(*) FROM blocked_keys b
        WHERE b.workspace_id = l.workspace_id AND b.destination_id = l.destination_id)
           AS blocked_keys,
       l.next_due, l.retired_at
FROM lanes l LEFT JOIN hosts h ON h.incarnation = l.owner;

-- The first open dataset. Later ones are created by `store::datasets` with the same names.
INSERT INTO datasets (dataset, first_id) VALUES (1, 1);
CREATE TABLE events_ds_1 PARTITION OF events FOR VALUES FROM (1) TO (2);
CREATE TABLE job_state_ds_1 PARTITION OF job_state FOR VALUES FROM (1) TO (2);
