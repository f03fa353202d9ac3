//! Ordered batches (`ordered_batches = true` in the manifest; `http-batch` declares it): one call
//! carries runs of a user's consecutive events, in order, and when one of them does not go
//! through, the user's later events of that call go again after it.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::harness::*;

fn config(url: &str) -> String {
    let config = format!(r#"{{ url = "{url}", item_errors = "errors" }}"#);
    let retry = r#"{ min_backoff = "1s", max_backoff = "2s" }"#;
    source_config(
        &["batch"],
        &destination_table("batch", "http-batch", &config, retry),
    )
}

/// Pauses the destination (by the documented SQL function), so that a backlog builds up.
async fn paused(pool: &PgPool, yes: bool) {
    let sql = if yes {
        "SELECT sluice_pause('acme', 'batch')"
    } else {
        "SELECT sluice_resume('acme', 'batch')"
    };
    sqlx::query(sql).execute(pool).await.unwrap();
}

fn user_and_seq(e: &Value) -> (String, i64) {
    (
        e["userId"].as_str().unwrap_or_default().to_string(),
        e["properties"]["seq"].as_i64().unwrap_or(-1),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_goes_out_in_few_requests_each_users_events_in_order() {
    let applied: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let log = applied.clone();
    let api = MockApi::start(move |_, body| {
        let mut log = log.lock().unwrap();
        log.extend(body.as_array().into_iter().flatten().map(user_and_seq));
        (200, json!({ "errors": [] }))
    });
    let sluice = Sluice::start(&config(&format!("{}/import", api.base)));
    let pool = db(&sluice).await;
    paused(&pool, true).await;
    // 20 users × 25 events, as a batch import would see them.
    post_all(&sluice, &events(20, 500), 100).await;
    paused(&pool, false).await;
    wait_all_delivered(&pool, "batch", 500).await;

    let mut by_user: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (user, seq) in applied.lock().unwrap().iter() {
        by_user.entry(user.clone()).or_default().push(*seq);
    }
    assert_eq!(by_user.len(), 20);
    for (user, seqs) in &by_user {
        assert_eq!(*seqs, (0..25).collect::<Vec<_>>(), "{user}: in order, once");
    }
    // A call holds 100 jobs (the plugin's batch size): with one job per user per call, 500
    // events of 20 users need at least 25 requests; runs of each user's events need 5.
    let requests = api.calls().len();
    assert!(requests <= 10, "{requests} requests for 500 events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_an_event_must_go_again_the_users_later_events_of_the_call_go_again_after_it() {
    // The receiver refuses user-0's event 3 once, as retryable, and (as such an API does)
    // applies nothing of user-0 after it in that array; everything else is applied.
    let applied: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let refused = Arc::new(Mutex::new(false));
    let (log, once) = (applied.clone(), refused.clone());
    let api = MockApi::start(move |_, body| {
        let mut errors = Vec::new();
        let mut stopped: HashSet<String> = HashSet::new();
        let mut log = log.lock().unwrap();
        for (i, e) in body.as_array().into_iter().flatten().enumerate() {
            let (user, seq) = user_and_seq(e);
            if stopped.contains(&user) {
                continue;
            }
            let mut once = once.lock().unwrap();
            if user == "user-0" && seq == 3 && !*once {
                *once = true;
                stopped.insert(user);
                errors.push(
                    json!({"index": i, "message": "busy", "retryable": true, "code": "busy"}),
                );
                continue;
            }
            log.push((user, seq));
        }
        (200, json!({ "errors": errors }))
    });
    let sluice = Sluice::start(&config(&format!("{}/import", api.base)));
    let pool = db(&sluice).await;
    paused(&pool, true).await;
    post_all(&sluice, &events(4, 40), 40).await;
    paused(&pool, false).await;
    wait_all_delivered(&pool, "batch", 40).await;
    assert!(*refused.lock().unwrap(), "the refusal happened");

    // user-0's 3 and everything after it in that request went again, in order, after it: the
    // receiver applied each event of each user once, in order.
    let mut by_user: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (user, seq) in applied.lock().unwrap().iter() {
        by_user.entry(user.clone()).or_default().push(*seq);
    }
    for (user, seqs) in &by_user {
        assert_eq!(*seqs, (0..10).collect::<Vec<_>>(), "{user}");
    }
    // user-0's 3 and 4 were in the same request (its run of 10 fits a call).
    let first = api
        .calls()
        .into_iter()
        .find(|c| {
            c.body
                .as_array()
                .is_some_and(|a| a.iter().any(|e| user_and_seq(e) == ("user-0".into(), 3)))
        })
        .expect("a request with user-0's 3");
    let seqs: Vec<i64> = first
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(user_and_seq)
        .filter(|(u, _)| u == "user-0")
        .map(|(_, s)| s)
        .collect();
    assert!(
        seqs.contains(&4),
        "user-0's run went in one request: {seqs:?}"
    );

    // The store: the refused job spent an attempt and keeps its code; the one parked behind
    // it spent none before going through.
    let row = |m: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String, i32, Option<String>)>(
                "SELECT state::text, attempt, error_code FROM job_overview
                 WHERE destination_id = 'batch' AND message_id = $1",
            )
            .bind(m)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        row("user-0-3").await,
        ("delivered".into(), 2, Some("busy".into()))
    );
    assert_eq!(row("user-0-4").await, ("delivered".into(), 1, None));
}
