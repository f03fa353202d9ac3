-- The operator functions retry now, abort and replay take the lane's row before any job row,
-- in the order a lane's commit takes them; replaced in place (same signatures, same effects).
--
-- A lane commit (host/crates/store/src/commit.rs) starts with its fence, an UPDATE of the
-- lane's row, and then writes `job_state` and `blocked_keys`. These functions did it the other
-- way round: job rows first, then `UPDATE lanes SET next_due`. An operator call on a job the
-- owner was committing at the same moment could then wait on the lane row while holding the
-- job row the commit waited for: a deadlock, one of the two cancelled (on Citus, `40P01 ...
-- distributed deadlock`, seen in .ci/run on 2026-12-05). Now each function locks the lane row
-- first (a router query on Citus: one shard, one worker) and waits behind the commit holding
-- nothing, and a commit started after it waits for it the same way.

CREATE OR REPLACE FUNCTION sluice_retry_now(p_workspace text, p_destination text,
                                            p_event_ids bigint[] DEFAULT NULL,
                                            p_actor text DEFAULT current_user)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    PERFORM 1 FROM lanes
    WHERE workspace_id = p_workspace AND destination_id = p_destination
    FOR UPDATE;
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

CREATE OR REPLACE FUNCTION sluice_abort(p_workspace text, p_destination text,
                                        p_event_ids bigint[] DEFAULT NULL,
                                        p_actor text DEFAULT current_user)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    PERFORM 1 FROM lanes
    WHERE workspace_id = p_workspace AND destination_id = p_destination
    FOR UPDATE;
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

CREATE OR REPLACE FUNCTION sluice_replay(p_workspace text, p_destination text,
                                         p_event_ids bigint[] DEFAULT NULL,
                                         p_actor text DEFAULT current_user)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    v_now timestamptz := now();
BEGIN
    PERFORM 1 FROM lanes
    WHERE workspace_id = p_workspace AND destination_id = p_destination
    FOR UPDATE;
    WITH replayed AS (
        UPDATE job_state SET state = 'pending', next_attempt_at = v_now, updated_at = v_now
        WHERE workspace_id = p_workspace AND destination_id = p_destination
          AND state = 'aborted'
          AND (p_event_ids IS NULL OR event_id = ANY (p_event_ids))
        RETURNING order_key
    ), keys AS (
        INSERT INTO blocked_keys (workspace_id, destination_id, order_key, next_attempt_at)
        SELECT DISTINCT p_workspace, p_destination, order_key, v_now FROM replayed
        ON CONFLICT (workspace_id, destination_id, order_key)
            DO UPDATE SET next_attempt_at = excluded.next_attempt_at
        RETURNING 1
    )
    SELECT count(*) INTO n FROM replayed;
    UPDATE lanes SET next_due = v_now
    WHERE workspace_id = p_workspace AND destination_id = p_destination AND n > 0;
    PERFORM sluice_audit(p_workspace, p_destination, p_actor, 'replay', p_event_ids, n);
    RETURN n;
END $$;
