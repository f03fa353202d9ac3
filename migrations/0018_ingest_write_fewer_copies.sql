-- Ingest's write (migration 0017's sluice_ingest_write), the same call doing the same thing
-- with less of PostgreSQL's CPU per event; replaced in place, so hosts of the previous
-- version call it too during a rolling upgrade.
--
-- A profile of PostgreSQL during `sluice bench --scenario ingest` (2026-12-04T20:40Z) had its
-- backends spend 1.87 times the CPU per event of the COPY peer's; apart from the insert itself
-- (PostgreSQL's INSERT writes a row at a time, COPY a page at a time), the function copied the
-- group twice more: once into its variables (each array argument assigned to one, whether or
-- not an event was dropped) and once into the tuplestore a set-returning function in FROM
-- fills before the insert reads a row of it (8% of the backends' samples). Now the arguments
-- are used as they are unless the dedup dropped an event, the arrays are unnested in the
-- select list, which streams, and the statements' plans are kept.

CREATE OR REPLACE FUNCTION sluice_ingest_write(
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
LANGUAGE plpgsql
-- Its statements' plans made once per connection: with its arrays as parameters PostgreSQL
-- kept planning them anew at every call (4% of the backends' samples in that profile).
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_heads_before bigint[];
    v_caught_workspaces text[] := '{}';
    v_caught_buckets integer[] := '{}';
    v_caught_hashes uuid[] := '{}';
    v_seen uuid[] := '{}';
    -- The events left after the probes: the arguments themselves unless one was seen (a copy
    -- of the group's arrays, its events' text among them, costs more than the rest of this
    -- function's steps).
    v_new_workspaces text[];
    v_new_hashes uuid[];
    v_sources text[];
    v_user_keys text[];
    v_message_ids text[];
    v_received_at timestamptz[];
    v_sizes integer[];
    v_events text[];
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
            SELECT p_minute, * FROM unnest(coalesce(v_new_workspaces, p_workspaces),
                                           coalesce(v_new_hashes, p_hashes));
        END IF;
    END IF;

    IF v_new_hashes IS NULL THEN
        v_new := coalesce(cardinality(p_hashes), 0);
    ELSE
        v_new := coalesce(cardinality(v_new_hashes), 0);
    END IF;
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
        -- The arrays unnested in the select list (set-returning functions there run in step),
        -- not in FROM: a function in FROM puts its rows in a tuplestore first, a copy of the
        -- whole group.
        IF v_new_hashes IS NULL THEN
            v_new_hashes := p_hashes;
            INSERT INTO events (dataset, id, workspace_id, source_id, user_key, message_id,
                                received_at, size, event)
            SELECT v_dataset, unnest(v_ids), unnest(p_workspaces), unnest(p_sources),
                   unnest(p_user_keys), unnest(p_message_ids), unnest(p_received_at),
                   unnest(p_sizes), unnest(p_events);
        ELSE
            INSERT INTO events (dataset, id, workspace_id, source_id, user_key, message_id,
                                received_at, size, event)
            SELECT v_dataset, unnest(v_ids), unnest(v_new_workspaces), unnest(v_sources),
                   unnest(v_user_keys), unnest(v_message_ids), unnest(v_received_at),
                   unnest(v_sizes), unnest(v_events);
        END IF;

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
                SELECT * FROM unnest(coalesce(v_new_workspaces, p_workspaces), v_new_hashes, v_ids)
                              AS k(w, h, id)
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
