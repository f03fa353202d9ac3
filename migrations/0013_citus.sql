-- Sluice on Citus (docs/scaling.md): the same schema, distributed by workspace when the
-- database has the `citus` extension. On plain PostgreSQL this migration only rewrites two
-- operator functions (same behaviour) and defines `sluice_distribute()`.

-- Citus evaluates volatile functions once, on the coordinator, only where it can: not in an
-- ON CONFLICT ... DO UPDATE SET, nor inside coalesce(). These two functions take the time
-- first; what they do is unchanged.
CREATE OR REPLACE FUNCTION sluice_replay(p_workspace text, p_destination text,
                                         p_event_ids bigint[] DEFAULT NULL,
                                         p_actor text DEFAULT current_user)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    v_now timestamptz := now();
BEGIN
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

CREATE OR REPLACE FUNCTION sluice_pause(p_workspace text, p_destination text,
                                        p_actor text DEFAULT current_user)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    changed boolean;
    v_now timestamptz := now();
BEGIN
    UPDATE lanes SET paused_at = CASE WHEN paused_at IS NULL THEN v_now ELSE paused_at END,
                     paused_by = p_actor
    WHERE workspace_id = p_workspace AND destination_id = p_destination;
    changed := FOUND;
    PERFORM sluice_audit(p_workspace, p_destination, p_actor, 'pause', NULL, 0);
    RETURN changed;
END $$;

-- Distributes the schema on Citus: the tables that hold a workspace's data by `workspace_id`,
-- colocated with `events` (so a lane's statements go to one worker), and the small global
-- tables as reference tables (a copy on every node). Tables already distributed are left as
-- they are, so it can run again. Migrations call it when the extension is there; a database
-- that gets Citus later runs `SELECT sluice_distribute()` once (it moves the data).
CREATE FUNCTION sluice_distribute() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'the citus extension is not installed in this database';
    END IF;
    FOREACH t IN ARRAY ARRAY['workspaces', 'sources', 'source_keys', 'destinations',
                             'catalog_version', 'catalog_audit', 'datasets', 'dedup_buckets',
                             'hosts', 'host_plugins'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = t::regclass) THEN
            PERFORM create_reference_table(t);
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'events'::regclass) THEN
        PERFORM create_distributed_table('events', 'workspace_id');
    END IF;
    FOREACH t IN ARRAY ARRAY['job_state', 'job_attempts', 'routes', 'lanes', 'blocked_keys',
                             'lane_stats', 'operator_audit', 'workspace_heads',
                             'dedup_keys'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = t::regclass) THEN
            PERFORM create_distributed_table(t, 'workspace_id', colocate_with => 'events');
        END IF;
    END LOOP;
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM sluice_distribute();
    END IF;
END $$;
