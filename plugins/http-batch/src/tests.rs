//! Native tests of the http-batch destination against the SDK's mock HTTP host.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_sdk::http::{HttpError, HttpResponse};
use sluice_sdk::testing::{MockHttp, configure, job_context, request};
use sluice_sdk::{Destination, Outcome, Request};

use crate::HttpBatch;
use crate::config::BATCH_SIZE;

fn configured(extra: Value) -> HttpBatch {
    let mut config = json!({"url": "https://collect.example.com/events"});
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    configure::<HttpBatch>(&config.to_string()).expect("valid config")
}

fn events(n: i64) -> Vec<Request> {
    (1..=n)
        .map(|i| {
            request(
                i,
                json!({"type": "track", "messageId": format!("m{i}")}).to_string(),
            )
        })
        .collect()
}

fn sent_ids(mock: &MockHttp) -> Vec<Vec<String>> {
    mock.requests()
        .iter()
        .map(|r| {
            let items: Vec<Value> = serde_json::from_slice(&r.body).expect("a JSON array");
            items
                .iter()
                .map(|e| e["messageId"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn batch_size_matches_the_manifest() {
    let manifest = include_str!("../Cargo.toml");
    assert!(manifest.contains(&format!("\nbatch_size = {BATCH_SIZE}\n")));
    assert!(manifest.contains("\nordered_batches = true\n"));
}

#[test]
fn a_call_is_one_array_with_the_configured_headers() {
    let batch = configured(json!({"headers": {"Authorization": "Bearer t"}, "timeout_ms": 900}));
    let mock = MockHttp::always(HttpResponse::new(200));
    let outcomes = batch.send(events(3));
    assert_eq!(outcomes, vec![Outcome::Delivered; 3]);
    let sent = mock.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].url, "https://collect.example.com/events");
    assert_eq!(
        sent[0].header_value("content-type"),
        Some("application/json")
    );
    assert_eq!(
        sent[0].header_value("user-agent"),
        Some("sluice-http-batch/0.1")
    );
    assert_eq!(sent[0].header_value("authorization"), Some("Bearer t"));
    assert_eq!(sent[0].timeout, Some(Duration::from_millis(900)));
    assert_eq!(sent_ids(&mock), [vec!["m1", "m2", "m3"]]);
}

#[test]
fn transform_forwards_the_event_unchanged() {
    let json = r#"{"type":"track", "messageId":"m","n":123456789012345678901234567890}"#;
    let payloads = configured(json!({})).transform_json(&job_context(1), json);
    assert_eq!(payloads, Ok(vec![json.as_bytes().to_vec()]));
}

#[test]
fn calls_split_by_item_count_and_bytes_in_order() {
    let by_items = configured(json!({"max_items": 2}));
    let mock = MockHttp::always(HttpResponse::new(204));
    assert_eq!(by_items.send(events(5)), vec![Outcome::Delivered; 5]);
    assert_eq!(
        sent_ids(&mock),
        [vec!["m1", "m2"], vec!["m3", "m4"], vec!["m5"]]
    );

    // Each event is about 34 bytes: 40 of them need two requests of at most 1024 bytes.
    let by_bytes = configured(json!({"max_bytes": 1024}));
    let mock = MockHttp::always(HttpResponse::new(200));
    assert_eq!(by_bytes.send(events(40)), vec![Outcome::Delivered; 40]);
    let sent = mock.requests();
    assert!(sent.len() >= 2);
    assert!(sent.iter().all(|r| r.body.len() <= 1024));
    let ids: Vec<String> = sent_ids(&mock).concat();
    let want: Vec<String> = (1..=40).map(|i| format!("m{i}")).collect();
    assert_eq!(ids, want, "every event once, in order");
}

#[test]
fn a_failed_request_holds_back_the_rest_of_the_call() {
    let batch = configured(json!({"max_items": 2}));
    let mut n = 0;
    let mock = MockHttp::install(move |_| {
        n += 1;
        Ok(HttpResponse::new(if n == 2 { 503 } else { 200 }))
    });
    let outcomes = batch.send(events(5));
    assert_eq!(sent_ids(&mock).len(), 2, "the third request is not sent");
    assert_eq!(outcomes[..2], [Outcome::Delivered, Outcome::Delivered]);
    assert!(matches!(&outcomes[2], Outcome::Retry(f) if f.code == "http_503"));
    assert!(matches!(&outcomes[3], Outcome::Retry(f) if f.code == "http_503"));
    assert_eq!(outcomes[4], Outcome::Throttled(Duration::ZERO));
}

#[test]
fn an_event_over_max_bytes_is_aborted_unsent() {
    let batch = configured(json!({"max_bytes": 1024}));
    let mock = MockHttp::always(HttpResponse::new(200));
    let big = request(
        2,
        json!({"messageId": "big", "pad": "x".repeat(2000)}).to_string(),
    );
    let outcomes = batch.send(vec![request(1, "{}"), big, request(3, "{}")]);
    assert_eq!(outcomes[0], Outcome::Delivered);
    assert!(matches!(&outcomes[1], Outcome::Abort(f) if f.code == "payload_too_large"));
    assert_eq!(outcomes[2], Outcome::Delivered);
    assert!(mock.requests().iter().all(|r| r.body.len() < 1024));
}

#[test]
fn statuses_map_through_the_sdk() {
    let batch = configured(json!({}));
    let one = |response: Result<HttpResponse, HttpError>| {
        let _mock = MockHttp::install(move |_| response.clone());
        let outcomes = batch.send(events(2));
        assert_eq!(outcomes[0], outcomes[1], "the status decides for all");
        outcomes[0].clone()
    };
    assert_eq!(one(Ok(HttpResponse::new(202))), Outcome::Delivered);
    assert!(matches!(one(Ok(HttpResponse::new(500))), Outcome::Retry(f) if f.code == "http_500"));
    assert!(matches!(one(Ok(HttpResponse::new(408))), Outcome::Retry(f) if f.code == "http_408"));
    let throttled = HttpResponse::new(429).with_header("Retry-After", "12");
    assert_eq!(
        one(Ok(throttled)),
        Outcome::Throttled(Duration::from_secs(12))
    );
    assert!(
        matches!(one(Ok(HttpResponse::new(413))), Outcome::TooLarge(f) if f.code == "http_413")
    );
    assert!(matches!(one(Ok(HttpResponse::new(403))), Outcome::Abort(f) if f.code == "http_403"));
    assert!(matches!(one(Err(HttpError::Timeout)), Outcome::Retry(f) if f.code == "http_timeout"));
}

#[test]
fn item_errors_are_used_only_when_configured() {
    let body = r#"{"errors":[{"index":1,"message":"bad","retryable":false}]}"#;
    let _mock = MockHttp::always(HttpResponse::new(200).with_body(body));
    assert_eq!(
        configured(json!({})).send(events(3)),
        vec![Outcome::Delivered; 3]
    );
    let outcomes = configured(json!({"item_errors": "errors"})).send(events(3));
    assert_eq!(
        outcomes,
        [
            Outcome::Delivered,
            Outcome::abort("item_rejected", "bad"),
            Outcome::Delivered
        ]
    );
}

#[test]
fn config_errors_name_the_field() {
    let cases = [
        (json!({}), "url:"),
        (json!({"url": "ftp://x"}), "url:"),
        (json!({"url": "https://x", "max_items": 101}), "max_items:"),
        (json!({"url": "https://x", "max_items": 0}), "max_items:"),
        (json!({"url": "https://x", "max_bytes": 100}), "max_bytes:"),
        (
            json!({"url": "https://x", "item_errors": "maybe"}),
            "item_errors:",
        ),
        (
            json!({"url": "https://x", "headers": {"Content-Type": "x"}}),
            "headers.Content-Type:",
        ),
        (json!({"url": "https://x", "batch": 5}), "batch:"),
    ];
    for (config, field) in cases {
        let err = configure::<HttpBatch>(&config.to_string())
            .expect_err("invalid")
            .to_string();
        assert!(err.starts_with(field), "{config}: {err}");
    }
}
