//! The browser SDKs of RudderStack (`@rudderstack/analytics-js`) and Segment
//! (`@segment/analytics-next`), from their npm packages, in headless Chromium, against Sluice
//! alone: a page on `http://localhost:<port>` loads an SDK pointed at Sluice on
//! `http://127.0.0.1:<port>` (another origin and site), with no vendor service reachable. What
//! the SDKs send is in docs/sources.md; the page is `tests/browser/page.html`.
//!
//! - The SDK fetches its settings from Sluice; the page sends `identify`, `page` and `track`,
//!   a `track` on `pagehide` by beacon (RudderStack's `useBeacon`; Segment has no beacon and
//!   sends it by `keepalive` fetch), and loads a second page. Every event reaches the
//!   destination with the right `userId` and one `anonymousId` over both loads, in the order
//!   Sluice stored it; the page's clock is 2 h fast and every `timestamp` is still right; the
//!   SDK logs no error.
//! - An origin the source does not allow: the sends fail and nothing is stored.
//! - A client over its rate limit gets 429, the SDK retries and delivers after the window, and
//!   another client is not slowed.

mod page;

use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::harness::browser::Browser;
use crate::harness::*;
use page::Page;

const RUDDERSTACK: &str = "rudderstack";
const SEGMENT: &str = "segment";

/// The page's clock: 2 hours fast.
const SKEW_MS: i64 = 2 * 3600 * 1000;

/// The source `web` (browser pages from `origin` may send) feeding the webhook `hook`, with
/// `limits` (a TOML line) if any.
fn browser_source(sink: &Sink, origin: &str, limits: &str) -> String {
    webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, "").replace(
        "destinations = [\"hook\"]",
        &format!("destinations = [\"hook\"]\nallowed_origins = [\"{origin}\"]\n{limits}"),
    )
}

/// An event's name as the tests list them: the `event` of a track, else its type.
fn name(event: &Value) -> String {
    match event["type"].as_str() {
        Some("track") => event["event"].as_str().unwrap_or_default().to_string(),
        other => other.unwrap_or_default().to_string(),
    }
}

fn time_of(event: &Value, field: &str) -> OffsetDateTime {
    let text = event[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` in {event}"));
    OffsetDateTime::parse(text, &Rfc3339).unwrap_or_else(|e| panic!("`{field}` {text}: {e}"))
}

/// The messageIds of the events stored, in the order Sluice stored (and so delivers) them.
async fn stored_order(sluice: &Sluice) -> Vec<String> {
    sqlx::query_scalar("SELECT message_id FROM events ORDER BY id")
        .fetch_all(&db(sluice).await)
        .await
        .expect("the stored events")
}

/// Waits until the sink has accepted `n` events; returns them in the order received.
async fn delivered(sink: &Sink, n: usize, what: &str) -> Vec<Value> {
    wait_until(Duration::from_secs(90), what, || async {
        let accepted = sink.accepted();
        (accepted.len() >= n).then(|| accepted.into_iter().map(|r| r.event).collect())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rudderstacks_sdk_sends_through_sluice_alone_from_a_page_two_hours_fast() {
    sends_through_sluice_alone(RUDDERSTACK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_sdk_sends_through_sluice_alone_from_a_page_two_hours_fast() {
    sends_through_sluice_alone(SEGMENT).await;
}

async fn sends_through_sluice_alone(sdk: &str) {
    let page = Page::start();
    let sink = Sink::ok(SECRET);
    let sluice = Sluice::start(&browser_source(&sink, &page.origin, ""));
    let browser = Browser::start().await;
    let before = OffsetDateTime::now_utc();

    // Unload sends: RudderStack's `useBeacon` (all events by beacon, in batches); Segment's
    // batching strategy with `keepalive`. Segment's default strategy sends each event in a
    // request of its own, and requests made at once race (seen here: `page` stored after the
    // `track` made after it); the batches keep the order the page made its events in. The
    // single-event paths are what the rate-limit tests below use.
    let url = page.url(&[
        ("sdk", sdk),
        ("api", &sluice.url("")),
        ("wk", WRITE_KEY),
        ("step", "1"),
        ("beacon", "1"),
        ("batch", if sdk == SEGMENT { "1" } else { "0" }),
        ("skew", &SKEW_MS.to_string()),
    ]);
    browser.client.goto(&url).await.expect("open the page");
    page.wait_report("the second page to finish", |r| {
        r["kind"] == "done" && r["step"] == 2
    })
    .await;
    let events = delivered(&sink, 5, "the five events at the destination").await;
    let after = OffsetDateTime::now_utc();
    let names: Vec<String> = events.iter().map(name).collect();

    // The order the pages made them in. The `pagehide` track may come after the second page's
    // track: RudderStack may enqueue it after its unload flush has gone, and then the next
    // page load sends it from localStorage (docs/sources.md).
    let mut in_pages = names.clone();
    in_pages.retain(|n| n != "Page Left");
    assert_eq!(
        in_pages,
        ["identify", "page", "Step One", "Second Load"],
        "{events:#?}"
    );
    let left = names.iter().position(|n| n == "Page Left");
    assert!(
        left.is_some_and(|at| at > 2),
        "the pagehide track, after the first page's: {names:?}"
    );
    let ids: Vec<String> = events
        .iter()
        .map(|e| e["messageId"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, stored_order(&sluice).await, "delivered as stored");

    let anonymous_ids: Vec<Value> = page
        .reports()
        .into_iter()
        .filter(|r| r["kind"] == "anonymousId")
        .map(|r| r["anonymousId"].clone())
        .collect();
    assert_eq!(anonymous_ids.len(), 2, "one report per page load");
    assert!(anonymous_ids[0].is_string(), "{anonymous_ids:?}");
    assert_eq!(anonymous_ids[0], anonymous_ids[1], "kept across loads");
    for e in &events {
        assert_eq!(e["userId"], "user-1", "{e}");
        assert_eq!(e["anonymousId"], anonymous_ids[0], "{e}");
        // The device's time is 2 h ahead; the stored `timestamp` is the real one.
        let device = time_of(e, "originalTimestamp");
        let corrected = time_of(e, "timestamp");
        let skew = (device - corrected).whole_seconds();
        assert!((7190..=7210).contains(&skew), "skew {skew} s in {e}");
        assert!(
            corrected >= before - Duration::from_secs(5)
                && corrected <= after + Duration::from_secs(5),
            "timestamp {corrected} not between {before} and {after}: {e}"
        );
    }
    assert_eq!(page.console_errors(sdk), Vec::<Value>::new());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_the_source_does_not_allow_gets_nothing_stored() {
    let page = Page::start();
    let sink = Sink::ok(SECRET);
    let sluice = Sluice::start(&browser_source(&sink, "https://shop.example", ""));
    let browser = Browser::start().await;

    // The settings come with the page, so the SDKs do send. RudderStack's beacons need no
    // preflight: they reach Sluice, which refuses them. Segment's sends carry Authorization:
    // their preflights get no CORS answer and the browser never sends them.
    for (sdk, transport) in [(RUDDERSTACK, "beacon"), (SEGMENT, "fetch")] {
        let url = page.url(&[
            ("sdk", sdk),
            ("api", &sluice.url("")),
            ("wk", WRITE_KEY),
            ("settings", "inline"),
            ("beacon", "1"),
            ("pages", "1"),
        ]);
        browser.client.goto(&url).await.expect("open the page");
        page.wait_report(&format!("{sdk}'s page to finish"), |r| {
            r["sdk"] == sdk && r["kind"] == "done"
        })
        .await;
        let sends = |r: &Value| r["sdk"] == sdk && r["kind"] == transport;
        page.wait_report(&format!("a {transport} from {sdk}"), sends)
            .await;
    }
    // RudderStack's beacon batch reached Sluice and was refused before anything was stored.
    wait_until(Duration::from_secs(30), "the refused beacon", || async {
        (metric_sum(&sluice, "sluice_ingest_refused_total", "origin_not_allowed").await >= 1.0)
            .then_some(())
    })
    .await;
    // Segment's fetches failed in the browser (no CORS answer for this origin).
    let failed = page.wait_report("a failed fetch from Segment", |r| {
        r["sdk"] == SEGMENT && r["kind"] == "fetch" && r["error"].is_string()
    });
    failed.await;
    assert!(
        !page
            .reports()
            .iter()
            .any(|r| r["kind"] == "fetch" && r["status"].is_number()),
        "no send got an answer the page could read: {:#?}",
        page.reports()
    );
    assert_eq!(stored_order(&sluice).await, Vec::<String>::new());
    assert!(sink.received().is_empty());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rudderstacks_sdk_retries_past_a_rate_limit_and_others_are_not_slowed() {
    retries_past_a_rate_limit(RUDDERSTACK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_sdk_retries_past_a_rate_limit_and_others_are_not_slowed() {
    retries_past_a_rate_limit(SEGMENT).await;
}

/// The page sends 8 events at once to a source that lets one client send 3 at once and 1 a
/// second after that.
async fn retries_past_a_rate_limit(sdk: &str) {
    const BURST: usize = 5;
    let page = Page::start();
    let sink = Sink::ok(SECRET);
    let limits = "limits = { client_events_per_second = 1, client_burst = 3 }";
    // The other client comes through a proxy on loopback, so it has an address of its own.
    let sluice = Sluice::start_with_server(
        &browser_source(&sink, &page.origin, limits),
        "trusted_proxies = [\"127.0.0.1/32\"]",
    );
    let browser = Browser::start().await;
    let url = page.url(&[
        ("sdk", sdk),
        ("api", &sluice.url("")),
        ("wk", WRITE_KEY),
        ("burst", &BURST.to_string()),
        ("pages", "1"),
        ("wait", "1000"),
    ]);
    browser.client.goto(&url).await.expect("open the page");
    wait_until(Duration::from_secs(30), "a 429 for the page", || async {
        (metric_sum(&sluice, "sluice_ingest_refused_total", "rate_limited").await >= 1.0)
            .then_some(())
    })
    .await;

    // Meanwhile another client sends at once.
    let started = std::time::Instant::now();
    let other = client()
        .post(sluice.url("/v1/track"))
        .basic_auth(WRITE_KEY, Some(""))
        .header("x-forwarded-for", "198.51.100.7")
        .json(&json!({"userId": "someone-else", "event": "Elsewhere"}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(other.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the other client waited {:?}",
        started.elapsed()
    );

    let mut events = delivered(&sink, 3 + BURST + 1, "every event after the retries").await;
    events.retain(|e| e["userId"] == "user-1");
    let mut names: Vec<String> = events.iter().map(name).collect();
    names.sort();
    let mut sent: Vec<String> = ["identify", "page", "Step One"]
        .into_iter()
        .map(String::from)
        .chain((1..=BURST).map(|i| format!("Burst {i}")))
        .collect();
    sent.sort();
    assert_eq!(names, sent, "each event once: {events:#?}");
    if sdk == SEGMENT {
        // Segment marks a retried event; it waited the Retry-After it was told.
        assert!(
            events
                .iter()
                .any(|e| e["_metadata"]["retryCount"].as_i64() > Some(0)),
            "{events:#?}"
        );
    }
    let ids: Vec<String> = events
        .iter()
        .map(|e| e["messageId"].as_str().unwrap_or_default().to_string())
        .collect();
    let mut stored = stored_order(&sluice).await;
    stored.retain(|id| ids.contains(id));
    assert_eq!(ids, stored, "delivered as stored");
    assert_eq!(page.console_errors(sdk), Vec::<Value>::new());
    browser.close().await;
}
