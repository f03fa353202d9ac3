//! The Citus test cluster itself (a coordinator and two workers, started by the harness): a
//! test database there is a working Citus database of its own, and the migrations distribute
//! the schema by workspace (migration 0013). Every other store trial also runs there
//! (`citus::…`, main.rs).

use libtest_mimic::Trial;
use sqlx::Row;

use crate::harness::{self, Db, trial};

pub fn tests() -> Vec<Trial> {
    harness::on_citus(|| {
        vec![
            trial(
                "distributed_and_reference_tables_round_trip",
                distributed_and_reference_tables_round_trip,
            ),
            trial(
                "test_databases_do_not_see_each_other",
                test_databases_do_not_see_each_other,
            ),
            trial(
                "the_migrations_distribute_workspace_tables_by_workspace_and_the_rest_as_reference_tables",
                the_schema_is_distributed,
            ),
            trial(
                "a_workspaces_ingest_and_lane_statements_need_only_the_worker_that_holds_it",
                hot_path_needs_one_worker,
            ),
        ]
    })
}

async fn exec(db: &Db, sql: &'static str) {
    sqlx::raw_sql(sql)
        .execute(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A table distributed by workspace (shards on both workers) and a reference table: rows go in
/// through the coordinator and come back, joined.
async fn distributed_and_reference_tables_round_trip(db: Db) {
    exec(
        &db,
        "CREATE TABLE t_events (workspace_id text, id bigint, body text, \
             PRIMARY KEY (workspace_id, id));
         SELECT create_distributed_table('t_events', 'workspace_id');
         CREATE TABLE t_workspaces (id text PRIMARY KEY, name text);
         SELECT create_reference_table('t_workspaces');
         INSERT INTO t_workspaces SELECT 'ws' || i, 'workspace ' || i FROM generate_series(0, 9) i;
         INSERT INTO t_events SELECT 'ws' || (i % 10), i, 'e' || i FROM generate_series(1, 1000) i;",
    )
    .await;

    let workers: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT nodeport) FROM pg_dist_shard_placement
         JOIN pg_dist_shard USING (shardid) WHERE logicalrelid = 't_events'::regclass",
    )
    .fetch_one(&db.pool)
    .await
    .expect("placements");
    assert_eq!(workers, 2, "the shards are spread over both workers");

    let rows = sqlx::query(
        "SELECT w.name, count(*) AS n, min(e.id) AS first FROM t_events e
         JOIN t_workspaces w ON w.id = e.workspace_id
         GROUP BY w.name ORDER BY w.name",
    )
    .fetch_all(&db.pool)
    .await
    .expect("a join of the distributed and the reference table");
    assert_eq!(rows.len(), 10);
    assert_eq!(rows[0].get::<String, _>("name"), "workspace 0");
    assert_eq!(rows[0].get::<i64, _>("n"), 100);
    assert_eq!(rows[0].get::<i64, _>("first"), 10);

    // A statement filtered on the distribution column goes to one shard.
    let body: String =
        sqlx::query_scalar("SELECT body FROM t_events WHERE workspace_id = $1 AND id = $2")
            .bind("ws7")
            .bind(17_i64)
            .fetch_one(&db.pool)
            .await
            .expect("a router query");
    assert_eq!(body, "e17");
}

/// Two test databases on the one cluster: the same distributed table in both, each sees only
/// its own rows (the workers hold a copy of each database).
async fn test_databases_do_not_see_each_other(db: Db) {
    let other = harness::citus_db().await;
    assert_ne!(db.name, other.name);
    for (d, tag) in [(&db, "mine"), (&other, "theirs")] {
        exec(
            d,
            "CREATE TABLE t_items (workspace_id text, id int, tag text, PRIMARY KEY (workspace_id, id));
             SELECT create_distributed_table('t_items', 'workspace_id');",
        )
        .await;
        sqlx::query(
            "INSERT INTO t_items SELECT 'ws' || (i % 4), i, $1 FROM generate_series(1, 40) i",
        )
        .bind(tag)
        .execute(&d.pool)
        .await
        .expect("insert");
    }
    sqlx::query("DELETE FROM t_items WHERE id > 20")
        .execute(&other.pool)
        .await
        .expect("delete in the other database");

    for (d, tag, n) in [(&db, "mine", 40_i64), (&other, "theirs", 20)] {
        let (count, tags): (i64, Vec<String>) =
            sqlx::query_as("SELECT count(*), array_agg(DISTINCT tag) FROM t_items")
                .fetch_one(&d.pool)
                .await
                .expect("count");
        assert_eq!(
            (count, tags),
            (n, vec![tag.to_string()]),
            "database {}",
            d.name
        );
    }
}

/// A table, and how Citus distributes it: method (`h` hash, `n` reference), column, colocation.
/// The method is `n` for a Citus local table too (on the coordinator alone); a reference
/// table is also replicated (`repmodel` `t`), so the query reports it as `n` only then.
type Distribution = (String, Option<String>, Option<String>, Option<i32>);

/// Every table that holds a workspace's data is distributed by `workspace_id`, all colocated
/// with `events` (a lane's statements join them on one worker); the global ones are reference
/// tables; no table is left on the coordinator alone.
async fn the_schema_is_distributed(db: Db) {
    let tables: Vec<Distribution> = sqlx::query_as(
        "SELECT c.relname::text,
                CASE WHEN p.partmethod = 'n' AND p.repmodel <> 't' THEN 'local'
                     ELSE p.partmethod::text END,
                column_to_column_name(p.logicalrelid, p.partkey), p.colocationid
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND c.relname <> '_sqlx_migrations'
         ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .expect("list tables");
    let events_group = tables
        .iter()
        .find(|t| t.0 == "events")
        .and_then(|t| t.3)
        .expect("events is distributed");
    assert!(tables.len() > 15, "{tables:?}");
    for (table, method, column, group) in &tables {
        if crate::schema::GLOBAL.contains(&table.as_str()) {
            assert_eq!(method.as_deref(), Some("n"), "{table} is a reference table");
        } else {
            assert_eq!(method.as_deref(), Some("h"), "{table} is hash-distributed");
            assert_eq!(column.as_deref(), Some("workspace_id"), "{table}'s column");
            assert_eq!(
                *group,
                Some(events_group),
                "{table} is colocated with events"
            );
        }
    }
    // Running it again changes nothing (a database that got Citus later runs it by hand).
    exec(&db, "SELECT sluice_distribute()").await;
}

/// The worker (its index in the cluster) that holds `workspace`'s shards.
async fn worker_of(own: &sluice_store::testing::OwnCluster, workspace: &str) -> usize {
    let port: i32 = sqlx::query_scalar(
        "SELECT nodeport FROM pg_dist_shard_placement
         WHERE shardid = get_shard_id_for_distribution_column('events', $1)",
    )
    .bind(workspace)
    .fetch_one(&own.db.pool)
    .await
    .expect("the placement of the workspace's shard");
    own.cluster
        .worker_ports()
        .iter()
        .position(|p| i32::from(*p) == port)
        .expect("a worker of the cluster")
}

/// The first name `ws<i>` whose shards are on worker `worker`.
async fn workspace_on(own: &sluice_store::testing::OwnCluster, worker: usize) -> String {
    for i in 0..1000 {
        let name = format!("ws{i}");
        if worker_of(own, &name).await == worker {
            return name;
        }
    }
    panic!("no workspace name lands on worker {worker}");
}

/// Every statement ingest and a lane runner issue for one workspace is a router query (or a
/// coordinator-local one): with the *other* worker stopped, a workspace appends, dedups,
/// acquires its lane, reads, records outcomes (a failure blocks its key), fetches the blocked
/// key's jobs, renews and releases. A workspace on the stopped worker cannot append (the check
/// that the worker really is down). A statement that went to every worker fails here.
///
/// The stopped worker is the one with the shard of workspace `''` (dedup keys written before
/// they carried a workspace): the dedup probe must not look there when there are none.
async fn hot_path_needs_one_worker(_shared: Db) {
    use sluice_store::testing::fixtures::*;
    use sluice_store::{
        FetchLimits, JobState, LaneCommit, LaneId, LaneSpec, OrderingScope, ReadLimits, StoreError,
    };

    let mut own = harness::citus_own_cluster().await;
    let store = own.db.store.clone();
    let down = worker_of(&own, "").await;
    let ws = workspace_on(&own, 1 - down).await;
    let elsewhere = workspace_on(&own, down).await;
    let lane = LaneId {
        workspace_id: ws.clone(),
        destination_id: "hook".into(),
    };
    let append = |events: Vec<sluice_store::NewEvent>| {
        let mut r = request("web", t0(), events);
        r.workspace_id = ws.as_str().into();
        r
    };
    // Lanes are set up while every worker is up (lanes_sync spans workspaces).
    store
        .lanes_sync(&[LaneSpec {
            lane: lane.clone(),
            ordering: OrderingScope::User,
            sources: vec!["web".into()],
        }])
        .await
        .expect("lanes sync");
    store
        .event_append(&[&append(vec![event("u1", "m1", 5)])], Some(DEDUP), None)
        .await
        .expect("append while every worker is up");
    own.cluster.stop_worker(down).await.expect("stop a worker");

    // Ingest, with dedup: a resend is found.
    let out = store
        .event_append(
            &[&append(vec![
                event("u1", "m2", 5),
                event("u2", "m3", 5),
                event("u1", "m1", 5),
            ])],
            Some(DEDUP),
            None,
        )
        .await
        .expect("append with a worker down")
        .remove(0);
    assert_eq!((out.accepted, out.duplicates), (2, 1));

    // The lane: acquire, read, record a failure (which blocks u1), fetch it when due.
    let acquired = store
        .lane_acquire(&lane, uuid::Uuid::new_v4(), t0(), TTL)
        .await
        .expect("acquire")
        .expect("the lane is free");
    let read = store
        .log_read(
            &lane,
            &links(&["web"]),
            acquired.cursor,
            acquired.claimed_to,
            ReadLimits {
                max_events: 100,
                max_bytes: 1 << 20,
            },
        )
        .await
        .expect("read the log");
    let ids: Vec<i64> = read.events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let mut failed = job_row(ids[1], "web", "u1", JobState::Failed, 1);
    failed.next_attempt_at = t0() + secs(60);
    store
        .lane_commit(&LaneCommit {
            lease: acquired.lease.clone(),
            now: t0() + secs(1),
            lease_ttl: TTL,
            cursor: ids[2],
            claimed_to: ids[2],
            new_rows: vec![failed],
            row_updates: vec![],
            block_keys: vec![("u1".into(), t0() + secs(60))],
            ensure_keys: vec![],
            check_keys: vec![],
        })
        .await
        .expect("record the outcomes");
    let due = store
        .blocked_fetch(
            &lane,
            t0() + secs(61),
            &[],
            FetchLimits {
                max_keys: 10,
                max_jobs_per_key: 10,
                max_bytes: 1 << 20,
            },
        )
        .await
        .expect("fetch the blocked key's jobs");
    assert_eq!(due.jobs.len(), 1, "{:?}", due.jobs);
    let renewed = store
        .lane_renew(&acquired.lease, t0() + secs(62), TTL)
        .await;
    assert!(renewed.expect("renew"));
    assert!(!store.lane_paused(&lane).await.expect("paused?"));
    let released = store
        .lane_release(&acquired.lease, Some(t0() + secs(120)))
        .await;
    assert!(released.expect("release"));

    // The stopped worker is down indeed: a workspace there cannot ingest.
    let mut theirs = request("web", t0(), vec![event("u1", "x1", 5)]);
    theirs.workspace_id = elsewhere.as_str().into();
    let refused = store.event_append(&[&theirs], Some(DEDUP), None).await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable(_))),
        "{elsewhere} is on the stopped worker: {refused:?}"
    );
}
