//! The real binary on a Citus cluster (a coordinator and two workers; `harness::citus`), with
//! the schema distributed by workspace (migration 0013): three workspaces whose shards are on
//! both workers, delivered in order and signed; `kill -9` of the host mid-delivery; operator
//! abort, retry now and replay by SQL; datasets rotated and dropped; a rolling restart of three
//! hosts under load (the same test as on plain PostgreSQL, `hosts.rs`); a worker stopped
//! mid-load (`worker_outage.rs`); a prepared transaction left on a worker
//! (`prepared_leftover.rs`).

mod prepared_leftover;
mod worker_outage;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// The port of the worker holding `ws`'s `events` shard.
async fn worker_port_of(pool: &sqlx::PgPool, ws: &str) -> i32 {
    sqlx::query_scalar(
        "SELECT p.nodeport FROM pg_dist_shard_placement p
         WHERE p.shardid = get_shard_id_for_distribution_column('events', $1)",
    )
    .bind(ws)
    .fetch_one(pool)
    .await
    .expect("the shard placement of a workspace")
}

/// Three workspace ids whose `events` shards are on both workers: the test checks it rather
/// than trusting the hash.
async fn spread_workspaces(pool: &sqlx::PgPool) -> Vec<String> {
    let mut chosen: Vec<(String, i32)> = Vec::new();
    for i in 0..50 {
        let ws = format!("ws-{i}");
        let port = worker_port_of(pool, &ws).await;
        let ports: HashSet<i32> = chosen.iter().map(|(_, p)| *p).collect();
        // The third must add the worker that is missing, if one is.
        if chosen.len() < 2 || ports.len() == 2 || !ports.contains(&port) {
            chosen.push((ws, port));
        }
        if chosen.len() == 3 {
            break;
        }
    }
    let ports: HashSet<i32> = chosen.iter().map(|(_, p)| *p).collect();
    assert_eq!(ports.len(), 2, "workspaces on both workers: {chosen:?}");
    chosen.into_iter().map(|(ws, _)| ws).collect()
}

/// A source and a webhook destination per workspace, all to `sink`.
fn config(workspaces: &[String], sink: &Sink, retry: &str) -> String {
    workspaces
        .iter()
        .map(|ws| {
            format!(
                r#"
[[source]]
id = "web-{ws}"
workspace = "{ws}"
write_key = "wk_{ws}"
destinations = ["hook-{ws}"]

[[destination]]
id = "hook-{ws}"
workspace = "{ws}"
plugin = "webhook"
config = {{ url = "{url}", secret = "{SECRET}" }}
retry = {retry}
"#,
                url = sink.url
            )
        })
        .collect()
}

/// `per_user` events for each of `users` users of `ws` (user ids carry the workspace).
fn workspace_events(ws: &str, users: usize, per_user: i64) -> Vec<Value> {
    rounds(&format!("{ws}-"), users, 0, per_user)
}

/// Sends `events` to `ws`'s source (`wk_<ws>`) in batches of 100, each accepted.
async fn post(sluice: &Sluice, ws: &str, events: &[Value]) {
    for chunk in events.chunks(100) {
        let (status, body) = post_batch_as(sluice, &format!("wk_{ws}"), chunk).await;
        assert_eq!(status, 200, "{ws}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workspaces_on_two_workers_are_delivered_in_order_and_signed() {
    let url = citus::database().await;
    let pool = sqlx::PgPool::connect(&url).await.expect("the coordinator");
    let workspaces = spread_workspaces(&pool).await;
    let sink = Sink::ok(SECRET);
    let sluice = Sluice::start_on(
        &url,
        &config(&workspaces, &sink, r#"{ min_backoff = "1s" }"#),
        "",
    );
    for ws in &workspaces {
        post(&sluice, ws, &workspace_events(ws, 10, 20)).await;
    }
    wait_until(Duration::from_secs(120), "600 deliveries", || async {
        (sink.accepted().len() >= 600).then_some(())
    })
    .await;
    let received = sink.received();
    assert_in_order_exactly_once(&received, 30, 20);
    assert!(
        received.iter().all(|r| r.signature_ok),
        "every delivery signed"
    );
    // Each workspace's events are in its own shard, read back through the coordinator.
    let per_workspace: Vec<(String, i64)> =
        sqlx::query_as("SELECT workspace_id, count(*) FROM events GROUP BY 1 ORDER BY 1")
            .fetch_all(&pool)
            .await
            .expect("counts");
    let mut expected: Vec<(String, i64)> = workspaces.iter().map(|w| (w.clone(), 200)).collect();
    expected.sort();
    assert_eq!(per_workspace, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_delivery_on_citus_loses_nothing_and_keeps_order() {
    let url = citus::database().await;
    let pool = sqlx::PgPool::connect(&url).await.expect("the coordinator");
    let workspaces = spread_workspaces(&pool).await;
    // A slightly slow sink, so that the kill lands in the middle of the run.
    let sink = Sink::with(SECRET, |_| {
        std::thread::sleep(Duration::from_micros(500));
        200
    });
    let retry = r#"{ min_backoff = "1s", max_backoff = "5s", max_attempts = 3, window = "1h" }"#;
    let body = config(&workspaces, &sink, retry);
    let mut sluice = Sluice::start_on(&url, &body, "");
    for ws in &workspaces {
        post(&sluice, ws, &workspace_events(ws, 20, 50)).await;
    }
    let total = 3 * 20 * 50;
    wait_until(
        Duration::from_secs(120),
        "some deliveries before the kill",
        || async { (sink.accepted().len() >= 600).then_some(()) },
    )
    .await;
    sluice.kill9();
    assert!(
        sink.accepted().len() < total,
        "the kill must land mid-delivery"
    );
    sluice.restart();
    wait_until(
        Duration::from_secs(180),
        "every event delivered",
        || async {
            let unique: HashSet<String> =
                sink.accepted().into_iter().map(|r| r.message_id).collect();
            (unique.len() >= total).then_some(())
        },
    )
    .await;
    // In order per user: a redelivery after the restart may step a user back once, to the
    // jobs the dead host had in flight, then goes on in order.
    let mut by_user: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in sink.accepted() {
        by_user.entry(r.user).or_default().push(r.seq);
    }
    assert_eq!(by_user.len(), 3 * 20);
    for (user, seqs) in by_user {
        let mut next = 0;
        for s in seqs {
            assert!(s <= next, "{user}: {s} came before {next}");
            if s == next {
                next += 1;
            }
        }
        assert_eq!(next, 50, "{user}: every event");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_retry_now_abort_and_replay_by_sql_on_citus() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let url = citus::database().await;
    let pool = sqlx::PgPool::connect(&url).await.expect("the coordinator");
    let ws = spread_workspaces(&pool).await.remove(0);
    // user-1's and user-2's first events are refused until fixed.
    let fixed = Arc::new(AtomicBool::new(false));
    let f = fixed.clone();
    let (one, two) = (format!("{ws}-user-1-0"), format!("{ws}-user-2-0"));
    let sink = Sink::with(SECRET, move |r| {
        let refused = r.message_id == one || r.message_id == two;
        if refused && !f.load(Ordering::SeqCst) {
            500
        } else {
            200
        }
    });
    // An hour's backoff: only an operator brings the jobs back.
    let retry = r#"{ min_backoff = "1h", max_backoff = "2h", max_attempts = 5, window = "3h" }"#;
    let sluice = Sluice::start_on(&url, &config(std::slice::from_ref(&ws), &sink, retry), "");
    post(&sluice, &ws, &workspace_events(&ws, 5, 10)).await;
    let hook = format!("hook-{ws}");
    wait_until(Duration::from_secs(60), "two failed jobs", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM failed_jobs")
            .fetch_one(&pool)
            .await
            .expect("failed jobs");
        (n == 2 && sink.accepted().len() >= 30).then_some(())
    })
    .await;

    // user-1: aborted (with the jobs parked behind it), then replayed once the receiver is
    // fixed. user-2: retried now.
    let aborted: i32 =
        sqlx::query_scalar("SELECT sluice_abort($1, $2, ARRAY(SELECT event_id FROM failed_jobs WHERE message_id = $3), 'test')")
            .bind(&ws)
            .bind(&hook)
            .bind(format!("{ws}-user-1-0"))
            .fetch_one(&pool)
            .await
            .expect("abort");
    assert!(aborted >= 1, "aborted {aborted}");
    fixed.store(true, Ordering::SeqCst);
    let retried: i32 = sqlx::query_scalar("SELECT sluice_retry_now($1, $2, NULL, 'test')")
        .bind(&ws)
        .bind(&hook)
        .fetch_one(&pool)
        .await
        .expect("retry now");
    assert_eq!(retried, 1);
    // The abort released user-1's parked events: the replay comes after the lane delivered
    // them (a replay the lane sees first puts the event back at the head of its key, and the
    // user's events then go in id order, which is not what this test asks for).
    let user_1 = format!("{ws}-user-1");
    wait_until(Duration::from_secs(60), "user-1's later events", || async {
        let by_user = accepted_by_user(&sink.received());
        (by_user.get(&user_1).map_or(0, Vec::len) >= 9).then_some(())
    })
    .await;
    let replayed: i32 = sqlx::query_scalar("SELECT sluice_replay($1, $2, NULL, 'test')")
        .bind(&ws)
        .bind(&hook)
        .fetch_one(&pool)
        .await
        .expect("replay");
    assert!(replayed >= 1, "replayed {replayed}");
    // Polled by hand rather than with `wait_until`, to say what is missing if it times out.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while sink.accepted().len() < 50 {
        if std::time::Instant::now() > deadline {
            let rows: Vec<(i64, String, String)> = sqlx::query_as(
                "SELECT event_id, order_key, state::text FROM job_state ORDER BY event_id",
            )
            .fetch_all(&pool)
            .await
            .expect("job rows");
            let blocked: Vec<(String, String)> = sqlx::query_as(
                "SELECT order_key, next_attempt_at::text FROM blocked_keys ORDER BY order_key",
            )
            .fetch_all(&pool)
            .await
            .expect("blocked keys");
            panic!(
                "after the replay, {} of 50 events delivered: by user {:?}; job rows {rows:?}; \
                 blocked keys {blocked:?}",
                sink.accepted().len(),
                accepted_by_user(&sink.received())
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // user-1's first event was aborted, so its later ones went on; the replay then delivered
    // it. Everyone else in order.
    let by_user = accepted_by_user(&sink.received());
    for (user, seqs) in &by_user {
        let expected: Vec<i64> = if user.ends_with("-user-1") {
            (1..10).chain([0]).collect()
        } else {
            (0..10).collect()
        };
        assert_eq!(seqs, &expected, "{user}");
    }
    assert_eq!(by_user.len(), 5);
    let audit: Vec<String> =
        sqlx::query_scalar("SELECT action FROM operator_audit ORDER BY at, id")
            .fetch_all(&pool)
            .await
            .expect("the audit");
    assert_eq!(audit, ["abort", "retry_now", "replay"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_rotate_and_are_dropped_on_citus() {
    let url = citus::database().await;
    let pool = sqlx::PgPool::connect(&url).await.expect("the coordinator");
    let ws = spread_workspaces(&pool).await.remove(0);
    let sink = Sink::ok(SECRET);
    let sluice = Sluice::start_on(
        &url,
        &config(
            std::slice::from_ref(&ws),
            &sink,
            r#"{ min_backoff = "1s" }"#,
        ),
        "maintenance_interval = \"200ms\"\n\n[server.datasets]\nmax_events = 50",
    );
    let newest = || async {
        sqlx::query_scalar::<_, i32>("SELECT max(dataset) FROM datasets")
            .fetch_one(&pool)
            .await
            .expect("datasets")
    };
    // 50 events at a time, each batch filling a dataset: maintenance closes it and opens the
    // next (a rotation: partitions created on the distributed tables).
    for (i, chunk) in workspace_events(&ws, 10, 20).chunks(50).enumerate() {
        post(&sluice, &ws, chunk).await;
        let want = i as i32 + 2;
        wait_until(Duration::from_secs(30), "a rotation", || async {
            (newest().await >= want).then_some(())
        })
        .await;
    }
    wait_until(Duration::from_secs(60), "200 deliveries", || async {
        (sink.accepted().len() >= 200).then_some(())
    })
    .await;
    assert_in_order_exactly_once(&sink.received(), 10, 20);
    // Delivered datasets are dropped: their partitions and every shard of them.
    wait_until(
        Duration::from_secs(60),
        "the delivered datasets dropped",
        || async {
            let left: Vec<i32> = sqlx::query_scalar("SELECT dataset FROM datasets")
                .fetch_all(&pool)
                .await
                .expect("datasets");
            (left == [5]).then_some(())
        },
    )
    .await;
    let shards_of_dataset_1: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid::text = 'events_ds_1'",
    )
    .fetch_one(&pool)
    .await
    .expect("shards");
    assert_eq!(shards_of_dataset_1, 0);
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('events_ds_1')::text")
        .fetch_one(&pool)
        .await
        .expect("the partition");
    assert_eq!(table, None);
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .expect("events left"),
        0,
        "every delivered event went with its dataset"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_three_hosts_on_citus_loses_nothing_and_interleaves_nobody() {
    crate::hosts::rolling_restart_under_load(&citus::database().await).await;
}
