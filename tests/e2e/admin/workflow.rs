//! An operator at work through the admin API: find failing jobs, read their attempts, retry,
//! abort, replay, pause and resume; every change is audited with the token's name and filter.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use super::*;

/// An hour's backoff: only the operator brings a failed job back during the test.
pub const SLOW_RETRY: &str =
    r#"{ min_backoff = "1h", max_backoff = "2h", max_attempts = 5, window = "3h" }"#;

/// user-1 and user-2 fail until `fixed`; users 0, 3 and 4 are delivered.
pub fn failing_sink(fixed: Arc<AtomicBool>) -> Sink {
    Sink::with(SECRET, move |r| {
        let broken = r.user == "user-1" || r.user == "user-2";
        if broken && !fixed.load(Ordering::SeqCst) {
            500
        } else {
            200
        }
    })
}

pub async fn start_failing() -> (Sluice, Sink, Arc<AtomicBool>) {
    let fixed = Arc::new(AtomicBool::new(false));
    let sink = failing_sink(fixed.clone());
    let config = format!(
        "{}{}",
        webhook_config(&sink.url, SLOW_RETRY, ""),
        admin_section()
    );
    let sluice = Sluice::start_with_server(&config, "stats_interval = \"1s\"");
    post_all(&sluice, &events(5, 50), 50).await;
    wait_until(Duration::from_secs(30), "30 deliveries", || async {
        (sink.accepted().len() >= 30).then_some(())
    })
    .await;
    (sluice, sink, fixed)
}

/// Waits until the API lists `n` jobs for `query`.
async fn wait_listed(api: &Api, query: &[(&str, &str)], n: usize, what: &str) -> Vec<Value> {
    wait_until(Duration::from_secs(30), what, || async {
        let v = api.ok("/api/v1/jobs", query).await;
        let found = jobs(&v);
        (found.len() == n).then_some(found)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_failing_jobs_reads_attempts_and_retries_aborts_replays_and_pauses() {
    let (sluice, sink, fixed) = start_failing().await;
    let ops = Api::new(&sluice, Some(OPS_TOKEN));
    let read = Api::new(&sluice, Some(READ_TOKEN));

    // Failing jobs, found by state and error code; each is the head of its user's key.
    let failed = [
        ("workspace", "acme"),
        ("destination", "hook"),
        ("state", "failed"),
    ];
    let heads = wait_listed(&read, &failed, 2, "two failed heads").await;
    let head_ids: Vec<i64> = heads.iter().map(|j| j["event_id"].as_i64().unwrap()).collect();
    assert_eq!(
        heads.iter().map(|j| j["user"].as_str().unwrap()).collect::<Vec<_>>(),
        vec!["user-1", "user-2"]
    );
    assert!(heads.iter().all(|j| j["error_code"] == "http_500"), "{heads:?}");
    let by_code = read
        .ok("/api/v1/jobs", &[("error_code", "http_500"), ("destination", "hook")])
        .await;
    assert_eq!(jobs(&by_code).len(), 2);

    // One user's ten jobs, three per page: every job once, in order, on stable pages.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let mut q = vec![("user", "user-1"), ("destination", "hook"), ("limit", "3")];
        if !cursor.is_empty() {
            q.push(("cursor", cursor.as_str()));
        }
        let page = read.ok("/api/v1/jobs", &q).await;
        pages += 1;
        seen.extend(jobs(&page).iter().map(|j| j["event_id"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(seen.len(), 10);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let parked = [("user", "user-1"), ("state", "pending")];
    wait_listed(&read, &parked, 9, "nine jobs parked behind the failed head").await;

    // The blocked keys name the job that blocks each.
    let keys = wait_until(Duration::from_secs(30), "two blocked keys", || async {
        let v = read.ok("/api/v1/destinations/acme/hook/blocked", &[]).await;
        let keys = v["keys"].as_array().cloned().unwrap_or_default();
        (keys.len() == 2 && keys.iter().all(|k| k["waiting"] == 10)).then_some(keys)
    })
    .await;
    for k in &keys {
        assert!(head_ids.contains(&k["head_event_id"].as_i64().unwrap()), "{k}");
        assert_eq!(k["head_error_code"], "http_500", "{k}");
    }

    // Retry now while still broken: a second failed attempt is recorded.
    let user1_head = head_ids[0];
    let n = ops
        .act(
            "/api/v1/jobs/retry",
            json!({ "workspace": "acme", "destination": "hook", "event_ids": [user1_head] }),
        )
        .await;
    assert_eq!(n, 1);
    let detail_path = format!("/api/v1/jobs/acme/hook/{user1_head}");
    wait_until(Duration::from_secs(30), "a second attempt", || async {
        let d = read.ok(&detail_path, &[]).await;
        (d["attempts"].as_array().map(Vec::len) == Some(2)).then_some(())
    })
    .await;

    // user-2 is given up on, by filter.
    let aborted = ops
        .act(
            "/api/v1/jobs/abort",
            json!({ "workspace": "acme", "destination": "hook", "filter": { "user": "user-2" } }),
        )
        .await;
    assert_eq!(aborted, 10);

    // Fixed: retry what failed with a 500 (user-1's head); user-1 catches up in order.
    fixed.store(true, Ordering::SeqCst);
    let n = ops
        .act(
            "/api/v1/jobs/retry",
            json!({ "workspace": "acme", "destination": "hook",
                    "filter": { "error_code": "http_500" } }),
        )
        .await;
    assert_eq!(n, 1);
    wait_until(Duration::from_secs(30), "user-1 delivered", || async {
        let n = sink.accepted().iter().filter(|r| r.user == "user-1").count();
        (n == 10).then_some(())
    })
    .await;

    // The job shows each attempt with its code and error body, and its event.
    let detail = wait_until(Duration::from_secs(30), "the delivery recorded", || async {
        let d = read.ok(&detail_path, &[]).await;
        (d["state"] == "delivered").then_some(d)
    })
    .await;
    let attempts = detail["attempts"].as_array().unwrap();
    let outcomes: Vec<(&str, Option<&str>)> = attempts
        .iter()
        .map(|a| (a["outcome"].as_str().unwrap(), a["error_code"].as_str()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("retry", Some("http_500")),
            ("retry", Some("http_500")),
            ("delivered", None)
        ],
        "{detail}"
    );
    assert!(
        attempts[..2]
            .iter()
            .all(|a| !a["error_text"].as_str().unwrap_or("").is_empty()),
        "{detail}"
    );
    assert_eq!(detail["attempt"], 3);
    assert_eq!(detail["event"]["messageId"], "user-1-0");

    // A job delivered at the first try shows one implied attempt.
    let first_try = read
        .ok("/api/v1/jobs", &[("user", "user-0"), ("limit", "1")])
        .await;
    let id = jobs(&first_try)[0]["event_id"].as_i64().unwrap();
    let d = read.ok(&format!("/api/v1/jobs/acme/hook/{id}"), &[]).await;
    assert_eq!(d["attempts"][0]["implied"], true, "{d}");
    assert_eq!(d["attempts"][0]["outcome"], "delivered");

    // Replay user-2's aborted jobs: delivered, in order, once each.
    let replayed = ops
        .act(
            "/api/v1/jobs/replay",
            json!({ "workspace": "acme", "destination": "hook", "filter": { "user": "user-2" } }),
        )
        .await;
    assert_eq!(replayed, 10);
    wait_until(Duration::from_secs(30), "every job delivered", || async {
        (sink.accepted().len() >= 50).then_some(())
    })
    .await;
    assert_in_order_exactly_once(&sink.received(), 5, 10);

    // Pause and resume: the lane says so.
    let (status, _) = ops.post("/api/v1/destinations/acme/hook/pause", &json!({})).await;
    assert_eq!(status, 200);
    let lanes = read.ok("/api/v1/destinations", &[]).await;
    assert_eq!(lanes["destinations"][0]["paused"], true, "{lanes}");
    let (status, _) = ops.post("/api/v1/destinations/acme/hook/resume", &json!({})).await;
    assert_eq!(status, 200);

    // Rates come from lane_stats, written by the host's flusher.
    let lane = wait_until(Duration::from_secs(30), "lane stats", || async {
        let v = read.ok("/api/v1/destinations", &[]).await;
        let l = v["destinations"][0].clone();
        (l["delivered_5m"].as_i64() >= Some(50) && l["failed_5m"].as_i64() >= Some(3))
            .then_some(l)
    })
    .await;
    assert_eq!(lane["paused"], false);
    assert!(lane["rate_per_minute"].as_f64().unwrap() >= 10.0, "{lane}");
    assert!(lane["failure_rate"].as_f64().unwrap() > 0.0, "{lane}");
    assert!(lane["concurrency_limit"].as_i64().unwrap() >= 1, "{lane}");
    let series = read
        .ok("/api/v1/destinations/acme/hook/stats", &[("minutes", "60")])
        .await;
    let minutes = series["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    let delivered: i64 = minutes.iter().map(|m| m["delivered"].as_i64().unwrap()).sum();
    assert!(delivered >= 50, "{series}");

    // Plugins: the webhook plugin this host loaded.
    let plugins = read.ok("/api/v1/plugins", &[]).await;
    let loaded = plugins["hosts"].as_array().unwrap();
    assert!(
        loaded.iter().any(|p| p["plugin"] == "webhook" && p["sha256"].is_string()),
        "{plugins}"
    );
    assert!(plugins["destinations"][0]["error"].is_null(), "{plugins}");

    // The audit log: token name, filter and number of jobs of every change.
    let audit = read.ok("/api/v1/audit", &[("destination", "hook")]).await;
    let rows: Vec<(String, String, Value, i64)> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|a| {
            (
                a["actor"].as_str().unwrap().to_string(),
                a["action"].as_str().unwrap().to_string(),
                a["filter"].clone(),
                a["jobs"].as_i64().unwrap(),
            )
        })
        .collect();
    let ops_name = || "ops".to_string();
    assert_eq!(
        rows,
        vec![
            (ops_name(), "retry_now".into(), Value::Null, 1),
            (ops_name(), "abort".into(), json!({ "user": "user-2" }), 10),
            (ops_name(), "retry_now".into(), json!({ "error_code": "http_500" }), 1),
            (ops_name(), "replay".into(), json!({ "user": "user-2" }), 10),
            (ops_name(), "pause".into(), Value::Null, 0),
            (ops_name(), "resume".into(), Value::Null, 0),
        ],
        "{audit}"
    );
    let with_ids = &audit["audit"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(with_ids["event_ids"], json!([user1_head]));
    let unique: HashSet<i64> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(unique.len(), 6);
}
