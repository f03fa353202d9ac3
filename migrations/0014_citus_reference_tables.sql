-- Migration 0013 left `sources`, `source_keys` and `destinations` as Citus local tables (on the
-- coordinator only), not reference tables: making `workspaces` a reference table converts the
-- tables whose foreign keys point at it into local tables on the spot, and 0013 then skipped
-- them as already in Citus' metadata. `sluice_distribute()` now makes every global table a
-- reference table unless it is one already, and runs again. On plain PostgreSQL this migration
-- only redefines the function.
CREATE OR REPLACE FUNCTION sluice_distribute() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'the citus extension is not installed in this database';
    END IF;
    FOREACH t IN ARRAY ARRAY['workspaces', 'sources', 'source_keys', 'destinations',
                             'catalog_version', 'catalog_audit', 'datasets', 'dedup_buckets',
                             'hosts', 'host_plugins'] LOOP
        -- partmethod 'n' with repmodel 't' is a reference table; 'n' with 's' a local one.
        IF NOT EXISTS (SELECT 1 FROM pg_dist_partition
                       WHERE logicalrelid = t::regclass AND partmethod = 'n'
                         AND repmodel = 't') THEN
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
