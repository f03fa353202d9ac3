-- Ingest's write in fewer round trips (store::append). A group commit on plain PostgreSQL was
-- twelve round trips between the host and the server, ten of them statements: taking the ingest
-- locks, checking the dedup partition, probing and recording dedup keys, taking ids, finding
-- the open dataset, moving the workspaces' heads and NOTIFY. With the COMMIT they took 3.3 ms
-- of a 100-event request's 4.8 ms commit. This function does all of them in one call, in the
-- same order and under the same locks; only the COPY of the rows and the COMMIT stay outside.
--
-- Arguments (the host computes them; see store::append for the contract):
-- - p_ingest_lock: the store-wide ingest lock, taken shared first, in a statement of its own
--   (ingest_lock::take_for_ingest says why);
-- - p_lock_keys: the workspaces' lock keys, taken exclusively in key order;
-- - p_workspaces, p_hashes: per event left after the in-group dedup, in group order, its
--   workspace and its dedup hash;
-- - p_minute, p_oldest: the dedup partition to record in and the oldest bucket within the
--   window; p_oldest NULL turns dedup off;
-- - p_channel, p_payload: a NOTIFY sent at commit if any event is new; p_payload NULL: none.
--
-- Returns one row. partition_missing: no dedup partition covers p_minute; nothing was
-- probed or written (the locks are held), and the host creates the partition and calls again.
-- Otherwise seen (the hashes found within the window), ids (one per new event, in group
-- order) and dataset (the open one; NULL when no event is new).
--
-- Plain PostgreSQL only: on Citus the probe takes a per-shard form and the host keeps its
-- statements (dedup::DedupProbe).
CREATE FUNCTION sluice_ingest_prepare(
    p_ingest_lock bigint,
    p_lock_keys bigint[],
    p_workspaces text[],
    p_hashes uuid[],
    p_minute integer,
    p_oldest integer,
    p_channel text,
    p_payload text
) RETURNS TABLE (partition_missing boolean, seen uuid[], ids bigint[], dataset integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_seen uuid[] := '{}';
    v_ids bigint[];
    v_dataset integer;
    v_new integer;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(p_ingest_lock);
    PERFORM count(pg_advisory_xact_lock(k))
    FROM (SELECT k FROM unnest(p_lock_keys) AS k ORDER BY k) AS s;

    IF p_oldest IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM dedup_buckets WHERE lo <= p_minute AND hi > p_minute) THEN
            RETURN QUERY SELECT true, NULL::uuid[], NULL::bigint[], NULL::integer;
            RETURN;
        END IF;
        -- One index lookup per key (LIMIT 1 in a lateral join): a planner with stale
        -- statistics would otherwise scan whole partitions for a big group. Keys recorded
        -- before they carried a workspace ('', migration 0012) are found too.
        WITH c AS (
            SELECT w, h FROM unnest(p_workspaces, p_hashes) AS c(w, h)
        ), found AS (
            SELECT c.h FROM c,
                LATERAL (SELECT 1 FROM dedup_keys d
                         WHERE d.hash = c.h AND d.workspace_id IN (c.w, '')
                           AND d.bucket >= p_oldest
                         LIMIT 1) x
        ), recorded AS (
            INSERT INTO dedup_keys (bucket, workspace_id, hash)
            SELECT p_minute, c.w, c.h FROM c WHERE NOT EXISTS (SELECT 1 FROM found f WHERE f.h = c.h)
        )
        SELECT coalesce(array_agg(h), '{}') INTO v_seen FROM found;
    END IF;

    v_new := coalesce(cardinality(p_workspaces), 0) - cardinality(v_seen);
    IF v_new = 0 THEN
        RETURN QUERY SELECT false, v_seen, '{}'::bigint[], NULL::integer;
        RETURN;
    END IF;

    -- One nextval per id, in order: a block taken with setval could overlap the ids that
    -- another workspace's transaction takes at the same moment.
    SELECT array_agg(nextval('event_id_seq') ORDER BY n) INTO v_ids
    FROM generate_series(1, v_new) AS n;
    SELECT d.dataset INTO v_dataset FROM datasets d WHERE d.closed_at IS NULL
    ORDER BY d.dataset DESC LIMIT 1;

    -- Each workspace's head moves to the last id it got: the new events take the ids in
    -- group order.
    INSERT INTO workspace_heads (workspace_id, last_id)
    SELECT k.w, max(v_ids[k.i])
    FROM (SELECT c.w, row_number() OVER (ORDER BY c.o) AS i
          FROM unnest(p_workspaces, p_hashes) WITH ORDINALITY AS c(w, h, o)
          WHERE c.h NOT IN (SELECT unnest(v_seen))) AS k
    GROUP BY k.w
    ON CONFLICT (workspace_id) DO UPDATE SET last_id = excluded.last_id;

    IF p_payload IS NOT NULL THEN
        PERFORM pg_notify(p_channel, p_payload);
    END IF;
    RETURN QUERY SELECT false, v_seen, v_ids, v_dataset;
END $$;
