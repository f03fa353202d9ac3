//! The real binary on a Citus cluster (a coordinator and two workers; `harness::citus`), with
//! the schema distributed by workspace (migration 0013): three workspaces whose shards are on
//! both workers, delivered in order and signed; `kill -9` of the host mid-delivery.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// Three workspace ids whose `events` shards are on both workers: the test checks it rather
/// than trusting the hash.
async fn spread_workspaces(pool: &sqlx::PgPool) -> Vec<String> {
    let mut chosen: Vec<(String, i32)> = Vec::new();
    for i in 0..50 {
        let ws = format!("ws-{i}");
        let port: i32 = sqlx::query_scalar(
            "SELECT p.nodeport FROM pg_dist_shard_placement p
             WHERE p.shardid = get_shard_id_for_distribution_column('events', $1)",
        )
        .bind(&ws)
        .fetch_one(pool)
        .await
        .expect("the shard placement of a workspace");
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
    (0..per_user)
        .flat_map(|seq| (0..users).map(move |u| track(&format!("{ws}-user-{u}"), seq)))
        .collect()
}

async fn post(sluice: &Sluice, ws: &str, events: &[Value]) {
    for chunk in events.chunks(100) {
        let resp = client()
            .post(sluice.url("/v1/batch"))
            .basic_auth(format!("wk_{ws}"), Some(""))
            .json(&json!({ "batch": chunk }))
            .send()
            .await
            .expect("ingest answers");
        assert_eq!(resp.status(), 200, "{ws}: {:?}", resp.text().await);
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
    assert!(received.iter().all(|r| r.signature_ok), "every delivery signed");
    // Each workspace's events are in its own shard, read back through the coordinator.
    let per_workspace: Vec<(String, i64)> = sqlx::query_as(
        "SELECT workspace_id, count(*) FROM events GROUP BY 1 ORDER BY 1",
    )
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
