//! Deleting a destination with `--drain` (docs/catalog.md): it takes no new events, cannot be
//! changed, delivers every unfinished job in per-user order (a failing user's included, once
//! the receiver recovers), and is then deleted by maintenance, with nothing aborted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::admin::{Api, OPS_TOKEN, admin_section, admin_url};
use crate::harness::*;

const SERVER: &str = "maintenance_interval = \"200ms\"";
const RETRY: &str =
    r#"{ min_backoff = "200ms", max_backoff = "500ms", max_attempts = 1000, window = "1h" }"#;
const USERS: usize = 5;

/// Events `from..to` of every user, round by round (`harness::rounds`).
fn seqs(from: i64, to: i64) -> Vec<serde_json::Value> {
    rounds("", USERS, from, to)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_deleted_with_drain_delivers_what_it_had_then_goes() {
    // user-1 is refused until the receiver recovers.
    let recovered = Arc::new(AtomicBool::new(false));
    let r = recovered.clone();
    let sink = Sink::with(SECRET, move |req| {
        if req.user == "user-1" && !r.load(Ordering::SeqCst) {
            500
        } else {
            200
        }
    });
    let config = format!(
        "{}{}",
        webhook_config(&sink.url, RETRY, ""),
        admin_section()
    );
    let sluice = Sluice::start_with_server(&config, SERVER);
    let pool = db(&sluice).await;
    post_all(&sluice, &seqs(0, 10), 25).await;
    wait_until(
        Duration::from_secs(30),
        "the other users' deliveries",
        || async {
            let states = states(&pool, "hook").await;
            (states.get("delivered") == Some(&40)).then_some(())
        },
    )
    .await;

    let out = std::process::Command::new(sluice_bin())
        .args(["destinations", "delete", "acme", "hook", "--drain"])
        .env("SLUICE_ADMIN_URL", admin_url(&sluice))
        .env("SLUICE_ADMIN_TOKEN", OPS_TOKEN)
        .output()
        .expect("the CLI runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("draining"), "{stdout}");

    let api = Api::new(&sluice, Some(OPS_TOKEN));
    let (status, shown) = api.get("/api/v1/catalog/destinations/acme/hook").await;
    assert_eq!(status, 200, "{shown}");
    assert!(
        shown["destination"]["draining_since"].is_string(),
        "{shown}"
    );
    assert_eq!(shown["destination"]["sources"], json!([]), "no live link");
    let (status, body) = api
        .put(
            "/api/v1/catalog/destinations/acme/hook",
            &json!({ "plugin": "webhook", "config": { "url": sink.url, "secret": SECRET } }),
        )
        .await;
    assert_eq!(status, 409, "a draining destination cannot change: {body}");
    // Accepted after the drain: never sent to it.
    post_all(&sluice, &seqs(10, 12), 25).await;

    // It stays while user-1's jobs are unfinished.
    wait_until(Duration::from_secs(10), "user-1's retries", || async {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM job_attempts WHERE destination_id = 'hook' AND outcome <> 'delivered'",
        )
        .fetch_one(&pool)
        .await
        .expect("attempts");
        (n >= 3).then_some(())
    })
    .await;
    let (status, _) = api.get("/api/v1/catalog/destinations/acme/hook").await;
    assert_eq!(status, 200, "still draining");

    recovered.store(true, Ordering::SeqCst);
    wait_until(
        Duration::from_secs(30),
        "the drained destination to go",
        || async {
            let (status, _) = api.get("/api/v1/catalog/destinations/acme/hook").await;
            (status == 404).then_some(())
        },
    )
    .await;
    // The job rows stay after the lane retires (`job_overview` shows live lanes only).
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state::text, count(*) FROM job_state WHERE destination_id = 'hook'
         GROUP BY state ORDER BY state",
    )
    .fetch_all(&pool)
    .await
    .expect("job rows");
    assert_eq!(
        rows,
        vec![("delivered".to_string(), 10)],
        "user-1's jobs, none aborted"
    );
    assert_in_order_exactly_once(&sink.received(), USERS, 10);
    let (_, audit) = api.get("/api/v1/catalog/audit").await;
    let last = &audit["changes"][0];
    assert_eq!(last["action"], "delete", "{last}");
    assert_eq!(last["actor"], "sluice (drained)", "{last}");
}
