-- Ingest hands what it committed to this host's lanes (store::read_cache::feed): a lane that
-- had read its source up to its workspace's head takes the new events from memory instead of
-- reading back what was just written. That is safe only because the events a group commits
-- are all of the workspace's events between its head before the group and its head after, so
-- the host needs the head before, read under the workspace's ingest lock (where no other
-- transaction can move it).
--
-- sluice_ingest_prepare_with_heads takes the same arguments as sluice_ingest_prepare
-- (migration 0015, whose comment describes them and the steps), takes the same locks first
-- (advisory locks are re-entrant: the inner call's are no-ops), reads the heads of the group's
-- workspaces, and then makes that call. Its row is the inner call's plus, per workspace of
-- the group, its head before this group (0 for a workspace's first events): head_workspaces
-- and heads_before, in the same order. They are NULL when the dedup partition is missing
-- (nothing was written; the host calls again).
CREATE FUNCTION sluice_ingest_prepare_with_heads(
    p_ingest_lock bigint,
    p_lock_keys bigint[],
    p_workspaces text[],
    p_hashes uuid[],
    p_minute integer,
    p_oldest integer,
    p_channel text,
    p_payload text
) RETURNS TABLE (partition_missing boolean, seen uuid[], ids bigint[], dataset integer,
                 head_workspaces text[], heads_before bigint[])
LANGUAGE plpgsql AS $$
DECLARE
    v_head_workspaces text[];
    v_heads_before bigint[];
BEGIN
    PERFORM pg_advisory_xact_lock_shared(p_ingest_lock);
    PERFORM count(pg_advisory_xact_lock(k))
    FROM (SELECT k FROM unnest(p_lock_keys) AS k ORDER BY k) AS s;

    SELECT coalesce(array_agg(n.w ORDER BY n.w), '{}'),
           coalesce(array_agg(coalesce(wh.last_id, 0) ORDER BY n.w), '{}')
    INTO v_head_workspaces, v_heads_before
    FROM (SELECT DISTINCT w FROM unnest(p_workspaces) AS w) AS n
    LEFT JOIN workspace_heads wh ON wh.workspace_id = n.w;

    RETURN QUERY
    SELECT p.partition_missing, p.seen, p.ids, p.dataset,
           CASE WHEN p.partition_missing THEN NULL ELSE v_head_workspaces END,
           CASE WHEN p.partition_missing THEN NULL ELSE v_heads_before END
    FROM sluice_ingest_prepare(p_ingest_lock, p_lock_keys, p_workspaces, p_hashes, p_minute,
                               p_oldest, p_channel, p_payload) AS p;
END $$;
