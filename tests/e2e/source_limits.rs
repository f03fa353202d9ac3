//! A source's limits for public keys (docs/sources.md): a client over its bucket gets 429 with
//! `Retry-After` and nothing of that request is stored, while other clients are not slowed;
//! the client is the `X-Forwarded-For` address only behind a trusted proxy; batches and events
//! over the source's sizes get 413 naming the limit.

use serde_json::{Value, json};

use crate::harness::*;

const LIMITS: &str = r#"allowed_origins = ["*"]
limits = { client_events_per_second = 0.01, client_burst = 5, max_batch = 10, max_event_size = "2KiB" }"#;

async fn send(sluice: &Sluice, events: Vec<Value>, client: &str) -> (u16, Option<String>, Value) {
    let resp = client_with_forwarded(client)
        .post(sluice.url("/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&json!({ "batch": events }))
        .send()
        .await
        .expect("ingest answers");
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

fn client_with_forwarded(ip: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-forwarded-for", ip.parse().expect("a header value"));
    let _ = client(); // installs the crypto provider
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("a client")
}

fn user_events(user: &str, from: i64, n: i64) -> Vec<Value> {
    (from..from + n).map(|s| track(user, s)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_their_limits_get_429_or_413_and_nothing_of_it_is_stored() {
    let sink = Sink::ok(SECRET);
    let body = webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, "").replace(
        "destinations = [\"hook\"]",
        &format!("destinations = [\"hook\"]\n{LIMITS}"),
    );
    // The test client connects from loopback: it is the proxy.
    let sluice = Sluice::start_with_server(&body, "trusted_proxies = [\"127.0.0.0/8\"]");
    let pool = db(&sluice).await;

    let (status, _, body) = send(&sluice, user_events("a", 0, 5), "203.0.113.1").await;
    assert_eq!(status, 200, "{body}");
    let (status, retry, body) = send(&sluice, user_events("a", 5, 1), "203.0.113.1").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "rate_limited");
    let retry: u64 = retry.expect("Retry-After").parse().expect("seconds");
    assert!((1..=100).contains(&retry), "Retry-After {retry}");
    // Another client is not slowed, however busy the first one is.
    let (status, _, body) = send(&sluice, user_events("b", 0, 5), "203.0.113.2").await;
    assert_eq!(status, 200, "{body}");

    let (status, _, body) = send(&sluice, user_events("c", 0, 11), "203.0.113.3").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("batch_too_large")),
        "{body}"
    );
    let mut big = track("d", 0);
    big["properties"]["pad"] = json!("x".repeat(3000));
    let (status, _, body) = send(&sluice, vec![big], "203.0.113.4").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("event_too_large")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("batch[0]"),
        "{body}"
    );

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .expect("a count");
    assert_eq!(stored, 10, "only the two admitted batches");
}
