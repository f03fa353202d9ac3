//! A prepared transaction left on a worker: a two-phase commit (a dataset rotation, a dedup
//! partition, a reference table's row) whose worker went down between PREPARE and COMMIT
//! PREPARED. When the worker is back, that transaction still holds its locks until the
//! coordinator's recovery resolves it (`citus.recover_2pc_interval`: a minute by default, a
//! few seconds on the clusters Sluice starts). Ingest for a workspace whose shards it locks
//! waits for it; this is what held `worker_outage`'s stopped workspace for ~40 s now and then.
//!
//! The test leaves such a transaction itself (on the worker, as Citus names them, locking the
//! workspace's `workspace_heads` shard) and checks that the workspace's ingest resumes by
//! itself within seconds, that the workspace on the other worker never waits, and that
//! everything acknowledged is delivered.

use std::time::{Duration, Instant};

use sqlx::Connection;

use super::{config, post, spread_workspaces, worker_port_of, workspace_events};
use crate::harness::*;

/// The prepared transaction the test leaves: named as the coordinator (group 0) names its own,
/// with a transaction number it never used.
const LEFTOVER: &str = "citus_0_4242_4242424242_1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_transaction_left_on_a_worker_holds_its_workspace_only_until_recovery() {
    let url = citus::database().await;
    let pool = sqlx::PgPool::connect(&url).await.expect("the coordinator");
    let workspaces = spread_workspaces(&pool).await;
    let held = workspaces[0].clone();
    let held_port = worker_port_of(&pool, &held).await;
    let mut other = None;
    for ws in &workspaces[1..] {
        if worker_port_of(&pool, ws).await != held_port {
            other = Some(ws.clone());
        }
    }
    let other = other.expect("a workspace on the other worker");
    let sink = Sink::ok(SECRET);
    let both = [held.clone(), other.clone()];
    let sluice = Sluice::start_on(&url, &config(&both, &sink, r#"{ min_backoff = "1s" }"#), "");
    let events = |ws: &str| workspace_events(ws, 5, 4);
    post(&sluice, &held, &events(&held)[..10]).await;
    post(&sluice, &other, &events(&other)[..10]).await;

    // On the held workspace's worker: a transaction that locked its `workspace_heads` shard
    // and was prepared under a name of the coordinator's (group 0) that it has no record of,
    // as a crash between PREPARE and the coordinator's commit leaves it; recovery rolls it back.
    let shard: String = sqlx::query_scalar(
        "SELECT shard_name('workspace_heads'::regclass,
                           get_shard_id_for_distribution_column('workspace_heads', $1))",
    )
    .bind(&held)
    .fetch_one(&pool)
    .await
    .expect("the workspace's shard");
    // The same database on that worker: the coordinator's URL with the worker's port.
    let on_worker = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .expect("the coordinator's URL")
        .port(u16::try_from(held_port).expect("a port"));
    let mut worker = sqlx::PgConnection::connect_with(&on_worker)
        .await
        .expect("the held workspace's worker");
    for statement in [
        "BEGIN".to_string(),
        // Citus refuses to touch a shard by hand unless told to.
        "SET LOCAL citus.enable_manual_changes_to_shards = on".to_string(),
        format!("LOCK TABLE {shard} IN ACCESS EXCLUSIVE MODE"),
        format!("PREPARE TRANSACTION '{LEFTOVER}'"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut worker)
            .await
            .expect("a prepared transaction on the worker");
    }
    let left = Instant::now();

    // The other worker's workspace is not held up.
    let started = Instant::now();
    post(&sluice, &other, &events(&other)[10..]).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the other worker's workspace waited {:?}",
        started.elapsed()
    );
    // The held workspace: retried as the SDKs do until it is accepted (503 while held).
    let mut unavailable = 0;
    loop {
        let (status, body) =
            post_batch_as(&sluice, &format!("wk_{held}"), &events(&held)[10..]).await;
        match status {
            200 => break,
            503 => unavailable += 1,
            _ => panic!("{held}: {status} {body}"),
        }
        assert!(
            left.elapsed() < Duration::from_secs(15),
            "{held} still held after {:?} ({unavailable} answers 503)",
            left.elapsed()
        );
    }
    // Only the one left here: `pg_prepared_xacts` shows the whole worker, where the two-phase
    // commits of this host and of the Citus tests running beside it pass for a moment too.
    let prepared: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_prepared_xacts WHERE gid = $1")
        .bind(LEFTOVER)
        .fetch_one(&mut worker)
        .await
        .expect("prepared transactions");
    assert_eq!(prepared, 0, "recovery resolved the prepared transaction");
    eprintln!(
        "prepared transaction left on a worker: ingest resumed after {:?} ({unavailable} 503s)",
        left.elapsed()
    );

    wait_until(Duration::from_secs(60), "every event delivered", || async {
        (sink.accepted().len() >= 40).then_some(())
    })
    .await;
    assert_in_order_exactly_once(&sink.received(), 10, 4);
}
