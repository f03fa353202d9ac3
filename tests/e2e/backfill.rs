//! Backfill (docs/catalog.md): with `[server.datasets] retain`, delivered events stay in the
//! store after their datasets close, and a destination created through the admin API with
//! `start = "earliest"` gets every one of them, in per-user order, then the live ones; with a
//! time it gets those received from then on; with `"now"` only the live ones.

use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::admin::{Api, OPS_TOKEN, admin_section};
use crate::harness::*;

/// Datasets close every 50 events and maintenance runs often, so that without `retain` the
/// delivered ones would be dropped within a second.
const SERVER: &str =
    "maintenance_interval = \"200ms\"\n\n[server.datasets]\nmax_events = 50\nretain = \"1h\"";
const RETRY: &str =
    r#"{ min_backoff = "200ms", max_backoff = "1s", max_attempts = 50, window = "1h" }"#;
const USERS: usize = 20;

async fn scalar(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("a count")
}

/// Events `from..to` of every user, round by round (`harness::rounds`).
fn seqs(from: i64, to: i64) -> Vec<serde_json::Value> {
    rounds("", USERS, from, to)
}

async fn closed_datasets(pool: &sqlx::PgPool) -> i64 {
    scalar(
        pool,
        "SELECT count(*) FROM datasets WHERE closed_at IS NOT NULL",
    )
    .await
}

/// Posts `events` 50 at a time, each batch in a dataset of its own: after each, waits for
/// maintenance to close the dataset it filled (otherwise how many datasets the events spread
/// over would depend on how maintenance ticks fall between the posts).
async fn post_closing(sluice: &Sluice, pool: &sqlx::PgPool, events: &[serde_json::Value]) {
    for chunk in events.chunks(50) {
        let before = closed_datasets(pool).await;
        let (status, body) = post_batch(sluice, chunk).await;
        assert_eq!(status, 200, "{body}");
        wait_until(
            Duration::from_secs(30),
            "the full dataset to close",
            || async { (closed_datasets(pool).await > before).then_some(()) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_created_at_earliest_gets_every_retained_event_in_order_then_the_live_ones() {
    let live = Sink::ok(SECRET);
    let config = format!(
        "{}{}",
        webhook_config(&live.url, RETRY, ""),
        admin_section()
    );
    let sluice = Sluice::start_with_server(&config, SERVER);
    let pool = db(&sluice).await;

    // 30 events per user, delivered to `hook`; the time between the two halves is the
    // `start` of the destination created "since".
    post_closing(&sluice, &pool, &seqs(0, 15)).await;
    let half = OffsetDateTime::now_utc();
    post_closing(&sluice, &pool, &seqs(15, 30)).await;
    wait_all_delivered(&pool, "hook", 30 * USERS as i64).await;
    // The datasets they were in closed; retention keeps them, delivered as they are.
    assert_eq!(closed_datasets(&pool).await, 12);
    let retired = sluice.count_log(|l| l["fields"]["message"] == "dataset retired");
    assert_eq!(retired, 0, "retain keeps every dataset");
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM events").await,
        30 * USERS as i64
    );

    let api = Api::new(&sluice, Some(OPS_TOKEN));
    let create = |id: &str, url: &str, start: &str| {
        json!({
            "id": id, "workspace": "acme", "plugin": "webhook",
            "config": { "url": url, "secret": SECRET },
            "retry": { "min_backoff": "200ms", "max_backoff": "1s" },
            "sources": ["web"], "start": start,
        })
    };
    let earliest = Sink::ok(SECRET);
    let since = Sink::ok(SECRET);
    let now = Sink::ok(SECRET);
    let half = half.format(&Rfc3339).expect("a time");
    for (id, sink, start) in [
        ("earliest", &earliest, "earliest"),
        ("since", &since, half.as_str()),
        ("now", &now, "now"),
    ] {
        let (status, body) = api
            .post(
                "/api/v1/catalog/destinations",
                &create(id, &sink.url, start),
            )
            .await;
        assert_eq!(status, 201, "create {id}: {body}");
    }
    // 10 live events per user, after the destinations exist.
    post_all(&sluice, &seqs(30, 40), 50).await;

    let per_user = 40 * USERS as i64;
    wait_all_delivered(&pool, "earliest", per_user).await;
    wait_all_delivered(&pool, "since", 25 * USERS as i64).await;
    wait_all_delivered(&pool, "now", 10 * USERS as i64).await;
    wait_all_delivered(&pool, "hook", per_user).await;

    assert_in_order_exactly_once(&earliest.received(), USERS, 40);
    let expect = |from: i64| -> Vec<i64> { (from..40).collect() };
    for (name, sink, from) in [("since", &since, 15), ("now", &now, 30)] {
        let by_user = accepted_by_user(&sink.received());
        assert_eq!(by_user.len(), USERS, "{name}: users seen");
        for (user, seqs) in by_user {
            assert_eq!(seqs, expect(from), "{name}: {user}'s deliveries");
        }
    }
    assert_in_order_exactly_once(&live.received(), USERS, 40);
}
