//! Ordering scope per destination (`ordering = "user" | "source_user" | "none"`), and events
//! too large to share a plugin call.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

const RETRY: &str =
    r#"{ min_backoff = "2s", max_backoff = "2s", max_attempts = 3, window = "1h" }"#;

/// Sources `web` (WRITE_KEY) and `app` (`wk_app`) feed destination `hook` with `ordering`.
fn two_sources(sink: &Sink, ordering: &str) -> String {
    let config = webhook_config(&sink.url, RETRY, &format!("ordering = \"{ordering}\"\n"));
    format!(
        "{config}\n[[source]]\nid = \"app\"\nworkspace = \"acme\"\nwrite_key = \"wk_app\"\ndestinations = [\"hook\"]\n"
    )
}

async fn post_as(sluice: &Sluice, key: &str, events: &[serde_json::Value]) {
    let resp = client()
        .post(sluice.url("/v1/batch"))
        .basic_auth(key, Some(""))
        .json(&json!({ "batch": events }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

/// alice's first event from `web` fails twice; when do alice's `app` events arrive?
async fn app_waits_for_web(ordering: &str) -> bool {
    let sink = Sink::with(SECRET, |r| {
        if r.message_id == "web-alice-0" && r.nth <= 2 {
            500
        } else {
            200
        }
    });
    let sluice = Sluice::start(&two_sources(&sink, ordering));
    let web: Vec<_> = (0..3)
        .map(|i| {
            let mut e = track("alice", i);
            e["messageId"] = json!(format!("web-alice-{i}"));
            e
        })
        .collect();
    post_as(&sluice, WRITE_KEY, &web).await;
    let app: Vec<_> = (10..13)
        .map(|i| {
            let mut e = track("alice", i);
            e["messageId"] = json!(format!("app-alice-{i}"));
            e
        })
        .collect();
    post_as(&sluice, "wk_app", &app).await;
    wait_until(Duration::from_secs(60), "all 6 delivered", || async {
        (sink.accepted().len() >= 6).then_some(())
    })
    .await;
    let received = sink.accepted();
    let head_ok = received
        .iter()
        .position(|r| r.message_id == "web-alice-0")
        .unwrap();
    let first_app = received
        .iter()
        .position(|r| r.message_id.starts_with("app-"))
        .unwrap();
    // Within each source, order always holds.
    let web_order: Vec<i64> = received
        .iter()
        .filter(|r| r.message_id.starts_with("web-"))
        .map(|r| r.seq)
        .collect();
    let app_order: Vec<i64> = received
        .iter()
        .filter(|r| r.message_id.starts_with("app-"))
        .map(|r| r.seq)
        .collect();
    assert_eq!(web_order, vec![0, 1, 2]);
    assert_eq!(app_order, vec![10, 11, 12]);
    first_app > head_ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_users_failing_event_holds_back_that_user_from_every_source() {
    assert!(app_waits_for_web("user").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_source_user_ordering_another_sources_events_of_that_user_go_on() {
    assert!(!app_waits_for_web("source_user").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_ordering_a_failing_event_holds_back_nothing() {
    let sink = Sink::with(SECRET, |r| {
        if r.message_id == "user-0-0" && r.nth <= 2 {
            500
        } else {
            200
        }
    });
    let sluice = Sluice::start(&webhook_config(&sink.url, RETRY, "ordering = \"none\"\n"));
    post_all(&sluice, &events(1, 5), 5).await;
    wait_until(Duration::from_secs(60), "all 5 delivered", || async {
        (sink.accepted().len() >= 5).then_some(())
    })
    .await;
    let received = sink.accepted();
    let head_ok = received
        .iter()
        .position(|r| r.message_id == "user-0-0")
        .unwrap();
    assert_eq!(
        head_ok, 4,
        "the other four went on while the first one waited for its retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_almost_4_mb_are_delivered_within_the_memory_budget() {
    let sink = Sink::ok(SECRET);
    let sluice = Sluice::start(&webhook_config(&sink.url, RETRY, ""));
    let pid = sluice.pid();
    let pad = "x".repeat(3_900_000);
    // 150 events of ~3.9 MB, one per request (the body limit is 4,000 KB), all pending at once.
    for i in 0..150 {
        let mut e = track(&format!("user-{}", i % 10), i / 10);
        e["properties"]["pad"] = json!(pad);
        let resp = client()
            .post(sluice.url("/v1/batch"))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&json!({ "batch": [e] }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    let peak = std::sync::atomic::AtomicU64::new(0);
    let pool = db(&sluice).await;
    wait_until(Duration::from_secs(300), "150 large deliveries", || async {
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        peak.fetch_max(rss << 10, std::sync::atomic::Ordering::Relaxed);
        (sink.accepted().len() >= 150).then_some(())
    })
    .await;
    let failed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_state WHERE error_code IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(failed, 0, "no call went over the plugin's memory");
    let peak = peak.into_inner();
    assert!(peak < 600 << 20, "peak memory {} MB", peak >> 20);
    assert_in_order_exactly_once(&sink.received(), 10, 15);
}
