-- Operator functions: retry now, abort, replay, pause and resume, by SQL (docs/sql.md).
--
-- Each keeps the ordering invariant (docs/store.md): it only changes jobs that have a
-- `job_state` row (failed, parked or aborted ones) and the due time of their keys, and the
-- lane's owner picks the change up on its next fetch of due keys. The owner is told at once
-- with a NOTIFY (`op <workspace> <destination>` on `sluice_events`). Each call writes an
-- `operator_audit` row: who, when, what, which filter, and how many jobs.

ALTER TABLE lanes
    ADD COLUMN paused_at timestamptz,
    ADD COLUMN paused_by text;

CREATE TABLE operator_audit (
    workspace_id   text        NOT NULL,
    id             bigint      GENERATED ALWAYS AS IDENTITY,
    at             timestamptz NOT NULL DEFAULT now(),
    actor          text        NOT NULL,
    action         text        NOT NULL,
    destination_id text        NOT NULL,
    -- The jobs asked for (null: every job the action applies to in the lane).
    event_ids      bigint[],
    jobs           integer     NOT NULL,
    PRIMARY KEY (workspace_id, id)
);

CREATE FUNCTION sluice_audit(p_workspace text, p_destination text, p_actor text,
                             p_action text, p_event_ids bigint[], p_jobs integer)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO operator_audit (workspace_id, destination_id, actor, action, event_ids, jobs)
    VALUES (p_workspace, p_destination, p_actor, p_action, p_event_ids, p_jobs);
    SELECT pg_notify('sluice_events', 'op ' || p_workspace || ' ' || p_destination);
$$;

-- Makes the given failed jobs (or every failed job of the lane) due now, with the jobs
-- parked behind them. Returns how many failed jobs were made due.
CREATE FUNCTION sluice_retry_now(p_workspace text, p_destination text,
                                 p_event_ids bigint[] DEFAULT NULL,
                                 p_actor text DEFAULT current_user)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    WITH heads AS (
        UPDATE job_state SET next_attempt_at = now(), updated_at = now()
        WHERE workspace_id = p_workspace AND destination_id = p_destination
          AND state = 'failed'
          AND (p_event_ids IS NULL OR event_id = ANY (p_event_ids))
        RETURNING order_key
    ), keys AS (
        UPDATE blocked_keys b SET next_attempt_at = now()
        WHERE b.workspace_id = p_workspace AND b.destination_id = p_destination
          AND b.order_key IN (SELECT order_key FROM heads)
        RETURNING 1
    )
    SELECT count(*) INTO n FROM heads;
    UPDATE lanes SET next_due = now()
    WHERE workspace_id = p_workspace AND destination_id = p_destination AND n > 0;
    PERFORM sluice_audit(p_workspace, p_destination, p_actor, 'retry_now', p_event_ids, n);
    RETURN n;
END $$;

-- Aborts the given unfinished jobs that have a row (failed, or parked behind a failed job),
-- or every such job of the lane. The next job of each key then goes (the key is made due).
-- Jobs that have not failed yet have no row and are not touched: pause the lane to hold them.
CREATE FUNCTION sluice_abort(p_workspace text, p_destination text,
                             p_event_ids bigint[] DEFAULT NULL,
                             p_actor text DEFAULT current_user)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    WITH targets AS (
        SELECT dataset, event_id, state AS was
        FROM job_state
        WHERE workspace_id = p_workspace AND destination_id = p_destination
          AND state IN ('pending', 'failed')
          AND (p_event_ids IS NULL OR event_id = ANY (p_event_ids))
        FOR UPDATE
    ), aborted AS (
        UPDATE job_state s
        SET state = 'aborted', error_code = 'operator_abort',
            error_text = 'aborted by ' || p_actor
                || coalesce(' after ' || s.error_code || ': ' || left(s.error_text, 9000), ''),
            updated_at = now()
        FROM targets t
        WHERE s.workspace_id = p_workspace AND s.destination_id = p_destination
          AND s.dataset = t.dataset AND s.event_id = t.event_id
        RETURNING s.order_key, t.was
    ), keys AS (
        -- A key whose failed head was aborted goes on now; aborting only jobs parked behind
        -- a failed head leaves that head's retry time as it was.
        UPDATE blocked_keys b SET next_attempt_at = now()
        WHERE b.workspace_id = p_workspace AND b.destination_id = p_destination
          AND b.order_key IN (SELECT order_key FROM aborted WHERE was = 'failed')
        RETURNING 1
    )
    SELECT count(*) INTO n FROM aborted;
    UPDATE lanes SET next_due = now()
    WHERE workspace_id = p_workspace AND destination_id = p_destination AND n > 0;
    PERFORM sluice_audit(p_workspace, p_destination, p_actor, 'abort', p_event_ids, n);
    RETURN n;
END $$;

-- Replays the given aborted jobs (or every aborted job of the lane that is still kept). A
-- replayed job rejoins its key as an unfinished job in event-id order: it goes before any
-- later job of its key that is still waiting, and after the ones already delivered. It keeps
-- its attempt count and last error until it is tried again.
CREATE FUNCTION sluice_replay(p_workspace text, p_destination text,
                              p_event_ids bigint[] DEFAULT NULL,
                              p_actor text DEFAULT current_user)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    WITH replayed AS (
        UPDATE job_state SET state = 'pending', next_attempt_at = now(), updated_at = now()
        WHERE workspace_id = p_workspace AND destination_id = p_destination
          AND state = 'aborted'
          AND (p_event_ids IS NULL OR event_id = ANY (p_event_ids))
        RETURNING order_key
    ), keys AS (
        INSERT INTO blocked_keys (workspace_id, destination_id, order_key, next_attempt_at)
        SELECT DISTINCT p_workspace, p_destination, order_key, now() FROM replayed
        ON CONFLICT (workspace_id, destination_id, order_key)
            DO UPDATE SET next_attempt_at = now()
        RETURNING 1
    )
    SELECT count(*) INTO n FROM replayed;
    UPDATE lanes SET next_due = now()
    WHERE workspace_id = p_workspace AND destination_id = p_destination AND n > 0;
    PERFORM sluice_audit(p_workspace, p_destination, p_actor, 'replay', p_event_ids, n);
    RETURN n;
END $$;

-- Pauses a lane: its owner finishes the calls in flight, writes their outcomes and gives the
-- lane up; no host takes it until it is resumed. Ingest goes on; jobs wait.
CREATE FUNCTION sluice_pause(p_workspace text, p_destination text,
                             p_actor text DEFAULT current_user)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    changed boolean;
BEGIN
    UPDATE lanes SET paused_at = coalesce(paused_at, now()), paused_by = p_actor
    WHERE workspace_id = p_workspace AND destination_id = p_destination;
    changed := FOUND;
    PERFORM sluice_audit(p_workspace, p_destination, p_actor, 'pause', NULL, 0);
    RETURN changed;
END $$;

CREATE FUNCTION sluice_resume(p_workspace text, p_destination text,
                              p_actor text DEFAULT current_user)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    changed boolean;
BEGIN
    UPDATE lanes SET paused_at = NULL, paused_by = NULL
    WHERE workspace_id = p_workspace AND destination_id = p_destination;
    changed := FOUND;
    PERFORM sluice_audit(p_workspace, p_destination, p_actor, 'resume', NULL, 0);
    RETURN changed;
END $$;

-- Lanes with their lease, progress, plugin and pause.
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
       l.paused_at, l.paused_by
FROM lanes l LEFT JOIN hosts h ON h.incarnation = l.owner;
