-- Dedup keys recorded a group at a time (store::dedup_memory). A key kept as a row of
-- dedup_keys with an entry in its hash index cost 5.4 us to write (both WAL-logged), most of an
-- ingest transaction's time under its workspace's lock. Now a group commit records its new
-- keys as one row per workspace: the keys as an array, tagged with the workspace's head after
-- the group. Each host keeps the keys of the window in memory and probes them there; a row
-- tells a host what other writers recorded since its memory's head (the "catch-up": under the
-- workspace's lock, the groups with head_after above the head the host's memory covers).
--
-- dedup_keys stays: it holds the keys recorded before this migration, and those a host
-- records one by one when its memory for dedup keys is full. It is probed only while it has
-- a key within the window.
--
-- On Citus ingest keeps probing and recording dedup_keys per shard (dedup::DedupProbe); this
-- table stays empty there.
CREATE TABLE dedup_groups (
    workspace_id text NOT NULL,
    -- The workspace's head after the group: every key of a group at or below a host's
    -- memory head is in its memory.
    head_after bigint NOT NULL,
    -- The minute the keys were recorded in (as dedup_keys.bucket): a key is in the window
    -- while bucket >= the group's minute minus the window.
    bucket integer NOT NULL,
    hashes uuid[] NOT NULL,
    PRIMARY KEY (workspace_id, head_after)
);
-- Random hashes do not compress: store them out of line without trying.
ALTER TABLE dedup_groups ALTER COLUMN hashes SET STORAGE EXTERNAL;
-- Expiry (Store::dedup_expire) deletes by bucket.
CREATE INDEX dedup_groups_bucket ON dedup_groups (bucket);

-- Ingest's write in one statement (store::append): steps 1-4 of migration 0015's comment (the
-- locks, the dedup, the ids, the heads, the dataset, NOTIFY) and the rows themselves, with the
-- dedup keys probed in the host's memory. Called outside a transaction block, it commits when
-- it returns: one round trip, and the workspace's lock is held for no round trip at all (with
-- BEGIN, the call, a COPY and COMMIT it was held over four). The arguments:
-- - p_ingest_lock, p_lock_keys: as in 0015;
-- - p_workspaces, p_hashes: per event left after the in-group dedup and the host's memory,
--   in group order, its workspace and its dedup hash; p_sources, p_user_keys,
--   p_message_ids, p_received_at, p_sizes, p_events: its columns of `events`, in the same
--   order;
-- - p_group_workspaces: the group's workspaces, each once, sorted (the host has them);
-- - p_known_heads: per workspace of p_group_workspaces, the head the host's memory covers
--   (0 when it has none);
-- - p_group_keys: record the new keys as dedup_groups rows (false: as dedup_keys rows, when
--   the host's memory is full);
-- - p_minute, p_oldest, p_channel, p_payload: as in 0015 (p_oldest NULL: dedup off).
--
-- Returns one row: partition_missing (as in 0015; only when recording dedup_keys rows; nothing
-- was written), behind (a workspace's head is below what the host's memory covers: the
-- database is not the one the memory was filled from; nothing was written and the host drops
-- that memory), seen,
-- ids, dataset, heads_before (per workspace of p_group_workspaces, as in 0016), and the keys of
-- the groups other writers recorded since the host's memory heads, flattened
-- (caught_workspaces, caught_buckets, caught_hashes), for the host to add to its memory.
--
-- The common case takes the short paths: one workspace, the memory at its head (nothing to
-- catch up), no key seen. Each array step over the group costs about a microsecond an event,
-- and this call runs under the workspace's lock.
CREATE FUNCTION sluice_ingest_write(
    p_ingest_lock bigint,
    p_lock_keys bigint[],
    p_workspaces text[],
    p_hashes uuid[],
    p_sources text[],
    p_user_keys text[],
    p_message_ids text[],
    p_received_at timestamptz[],
    p_sizes integer[],
    p_events text[],
    p_group_workspaces text[],
    p_known_heads bigint[],
    p_group_keys boolean,
    p_minute integer,
    p_oldest integer,
    p_channel text,
    p_payload text
) RETURNS TABLE (partition_missing boolean, behind boolean, seen uuid[], ids bigint[],
                 dataset integer, heads_before bigint[],
                 caught_workspaces text[], caught_buckets integer[], caught_hashes uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    v_heads_before bigint[];
    v_caught_workspaces text[] := '{}';
    v_caught_buckets integer[] := '{}';
    v_caught_hashes uuid[] := '{}';
    v_seen uuid[] := '{}';
    v_new_workspaces text[] := p_workspaces;
    v_new_hashes uuid[] := p_hashes;
    v_sources text[] := p_sources;
    v_user_keys text[] := p_user_keys;
    v_message_ids text[] := p_message_ids;
    v_received_at timestamptz[] := p_received_at;
    v_sizes integer[] := p_sizes;
    v_events text[] := p_events;
    v_ids bigint[] := '{}';
    v_dataset integer;
    v_new integer;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(p_ingest_lock);
    PERFORM count(pg_advisory_xact_lock(k))
    FROM (SELECT k FROM unnest(p_lock_keys) AS k ORDER BY k) AS s;

    SELECT array_agg(coalesce(wh.last_id, 0) ORDER BY n.o) INTO v_heads_before
    FROM unnest(p_group_workspaces) WITH ORDINALITY AS n(w, o)
    LEFT JOIN workspace_heads wh ON wh.workspace_id = n.w;

    IF p_oldest IS NOT NULL AND p_known_heads IS DISTINCT FROM v_heads_before THEN
        IF EXISTS (SELECT 1 FROM unnest(p_known_heads, v_heads_before) AS k(known, before)
                   WHERE k.known > k.before) THEN
            RETURN QUERY SELECT false, true, NULL::uuid[], NULL::bigint[], NULL::integer,
                NULL::bigint[], NULL::text[], NULL::integer[], NULL::uuid[];
            RETURN;
        END IF;
        -- The catch-up: what other writers recorded since the host's memory heads.
        SELECT coalesce(array_agg(g.workspace_id), '{}'), coalesce(array_agg(g.bucket), '{}'),
               coalesce(array_agg(x.h), '{}')
        INTO v_caught_workspaces, v_caught_buckets, v_caught_hashes
        FROM unnest(p_group_workspaces, p_known_heads, v_heads_before) AS k(w, known, before)
        JOIN dedup_groups g ON g.workspace_id = k.w AND g.head_after > k.known
                           AND g.bucket >= p_oldest
        CROSS JOIN LATERAL unnest(g.hashes) AS x(h)
        WHERE k.known < k.before;
        SELECT coalesce(array_agg(c.h), '{}') INTO v_seen
        FROM unnest(p_hashes) AS c(h)
        WHERE c.h IN (SELECT unnest(v_caught_hashes));
    END IF;
    IF p_oldest IS NOT NULL THEN
        IF NOT p_group_keys
           AND NOT EXISTS (SELECT 1 FROM dedup_buckets WHERE lo <= p_minute AND hi > p_minute) THEN
            RETURN QUERY SELECT true, false, NULL::uuid[], NULL::bigint[], NULL::integer,
                NULL::bigint[], NULL::text[], NULL::integer[], NULL::uuid[];
            RETURN;
        END IF;
        -- Keys kept one by one (recorded before migration 0017, or by a host whose memory was
        -- full): one index lookup per key, only while there are any within the window (the
        -- partitions are dropped whole, so an empty scan is the common case and costs nothing).
        IF EXISTS (SELECT 1 FROM dedup_keys WHERE bucket >= p_oldest) THEN
            SELECT v_seen || coalesce(array_agg(c.h), '{}') INTO v_seen
            FROM unnest(p_workspaces, p_hashes) AS c(w, h),
                LATERAL (SELECT 1 FROM dedup_keys d
                         WHERE d.hash = c.h AND d.workspace_id IN (c.w, '')
                           AND d.bucket >= p_oldest
                         LIMIT 1) x
            WHERE c.h <> ALL (v_seen);
        END IF;
        IF cardinality(v_seen) > 0 THEN
            SELECT coalesce(array_agg(c.w ORDER BY c.o), '{}'),
                   coalesce(array_agg(c.h ORDER BY c.o), '{}'),
                   coalesce(array_agg(c.s ORDER BY c.o), '{}'),
                   coalesce(array_agg(c.u ORDER BY c.o), '{}'),
                   coalesce(array_agg(c.m ORDER BY c.o), '{}'),
                   coalesce(array_agg(c.r ORDER BY c.o), '{}'),
                   coalesce(array_agg(c.z ORDER BY c.o), '{}'),
                   coalesce(array_agg(c.e ORDER BY c.o), '{}')
            INTO v_new_workspaces, v_new_hashes, v_sources, v_user_keys, v_message_ids,
                 v_received_at, v_sizes, v_events
            FROM unnest(p_workspaces, p_hashes, p_sources, p_user_keys, p_message_ids,
                        p_received_at, p_sizes, p_events) WITH ORDINALITY
                 AS c(w, h, s, u, m, r, z, e, o)
            WHERE c.h NOT IN (SELECT unnest(v_seen));
        END IF;
        IF NOT p_group_keys THEN
            INSERT INTO dedup_keys (bucket, workspace_id, hash)
            SELECT p_minute, * FROM unnest(v_new_workspaces, v_new_hashes);
        END IF;
    END IF;

    v_new := coalesce(cardinality(v_new_hashes), 0);
    IF v_new > 0 THEN
        -- One nextval per id, in order: a block taken with setval could overlap the ids that
        -- another workspace's transaction takes at the same moment.
        SELECT array_agg(nextval('event_id_seq') ORDER BY n) INTO v_ids
        FROM generate_series(1, v_new) AS n;
        SELECT d.dataset INTO v_dataset FROM datasets d WHERE d.closed_at IS NULL
        ORDER BY d.dataset DESC LIMIT 1;
        IF v_dataset IS NULL THEN
            RAISE EXCEPTION 'sluice: no open dataset to append to';
        END IF;
        INSERT INTO events (dataset, id, workspace_id, source_id, user_key, message_id,
                            received_at, size, event)
        SELECT v_dataset, x.*
        FROM unnest(v_ids, v_new_workspaces, v_sources, v_user_keys, v_message_ids,
                    v_received_at, v_sizes, v_events) AS x;

        -- Each workspace's head moves to the last id it got (the new events take the ids in
        -- group order), and its new keys are recorded as one row under that head.
        IF cardinality(p_group_workspaces) = 1 THEN
            INSERT INTO workspace_heads (workspace_id, last_id)
            VALUES (p_group_workspaces[1], v_ids[v_new])
            ON CONFLICT (workspace_id) DO UPDATE SET last_id = excluded.last_id;
            IF p_oldest IS NOT NULL AND p_group_keys THEN
                INSERT INTO dedup_groups (workspace_id, head_after, bucket, hashes)
                VALUES (p_group_workspaces[1], v_ids[v_new], p_minute, v_new_hashes);
            END IF;
        ELSE
            WITH kept AS (
                SELECT * FROM unnest(v_new_workspaces, v_new_hashes, v_ids) AS k(w, h, id)
            ), heads AS (
                INSERT INTO workspace_heads (workspace_id, last_id)
                SELECT w, max(id) FROM kept GROUP BY w
                ON CONFLICT (workspace_id) DO UPDATE SET last_id = excluded.last_id
            )
            INSERT INTO dedup_groups (workspace_id, head_after, bucket, hashes)
            SELECT w, max(id), p_minute, array_agg(h ORDER BY id) FROM kept
            WHERE p_oldest IS NOT NULL AND p_group_keys
            GROUP BY w;
        END IF;

        IF p_payload IS NOT NULL THEN
            PERFORM pg_notify(p_channel, p_payload);
        END IF;
    END IF;
    RETURN QUERY SELECT false, false, v_seen, v_ids, v_dataset, v_heads_before,
        v_caught_workspaces, v_caught_buckets, v_caught_hashes;
END $$;

-- On Citus the table is distributed like dedup_keys (it stays empty there, but no table is
-- left on the coordinator alone): sluice_distribute() does what it did (migration 0014), then
-- distributes dedup_groups.
ALTER FUNCTION sluice_distribute() RENAME TO sluice_distribute_0014;

CREATE FUNCTION sluice_distribute() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM sluice_distribute_0014();
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition
                   WHERE logicalrelid = 'dedup_groups'::regclass) THEN
        PERFORM create_distributed_table('dedup_groups', 'workspace_id',
                                         colocate_with => 'events');
    END IF;
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM sluice_distribute();
    END IF;
END $$;
