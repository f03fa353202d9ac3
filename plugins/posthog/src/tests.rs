//! Native tests of the PostHog destination against the SDK's mock HTTP host.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_sdk::http::{HttpError, HttpRequest, HttpResponse};
use sluice_sdk::testing::{MockHttp, configure, job_context, request};
use sluice_sdk::{Destination, Outcome, Request};

use crate::Posthog;
use crate::config::BATCH_SIZE;

fn configured(extra: Value) -> Posthog {
    let mut config = json!({"api_key": "phc_test"});
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    configure::<Posthog>(&config.to_string()).expect("valid config")
}

/// Transformed payloads for `n` track events of user-1, numbered from 1.
fn events(posthog: &Posthog, n: i64) -> Vec<Request> {
    (1..=n)
        .map(|i| {
            let event = json!({"type": "track", "messageId": format!("m{i}"), "userId": "user-1",
                               "event": format!("Step {i}"), "timestamp": "2026-11-25T00:00:00Z"});
            let payloads = posthog
                .transform_json(&job_context(i), &event.to_string())
                .expect("transform");
            request(i, payloads[0].clone())
        })
        .collect()
}

fn names(req: &HttpRequest) -> Vec<String> {
    let body: Value = serde_json::from_slice(&req.body).expect("JSON");
    body["batch"]
        .as_array()
        .expect("batch")
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn batch_size_matches_the_manifest() {
    let manifest = include_str!("../Cargo.toml");
    assert!(manifest.contains(&format!("\nbatch_size = {BATCH_SIZE}\n")));
    assert!(manifest.contains("\nordered_batches = true\n"));
}

#[test]
fn a_call_is_one_batch_with_the_api_key() {
    let posthog = configured(json!({"timeout_ms": 700}));
    let mock = MockHttp::always(HttpResponse::new(200).with_body(r#"{"status":1}"#));
    assert_eq!(
        posthog.send(events(&posthog, 2)),
        vec![Outcome::Delivered; 2]
    );
    let sent = mock.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].url, "https://us.i.posthog.com/batch/");
    assert_eq!(
        sent[0].header_value("content-type"),
        Some("application/json")
    );
    assert_eq!(sent[0].timeout, Some(Duration::from_millis(700)));
    let body: Value = serde_json::from_slice(&sent[0].body).expect("JSON");
    assert_eq!(body["api_key"], "phc_test");
    assert_eq!(
        body["batch"][0],
        json!({"event": "Step 1", "distinct_id": "user-1", "properties": {"$lib": "sluice"},
               "timestamp": "2026-11-25T00:00:00Z"})
    );
}

#[test]
fn the_host_sets_the_url() {
    for (host, url) in [
        (
            "https://eu.i.posthog.com",
            "https://eu.i.posthog.com/batch/",
        ),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/batch/"),
    ] {
        let posthog = configured(json!({ "host": host }));
        let mock = MockHttp::always(HttpResponse::new(200));
        posthog.send(events(&posthog, 1));
        assert_eq!(mock.requests()[0].url, url);
    }
}

#[test]
fn large_calls_are_split_in_order_and_a_failure_holds_back_the_rest() {
    let posthog = configured(json!({"max_items": 2}));
    let mock = MockHttp::always(HttpResponse::new(200));
    assert_eq!(
        posthog.send(events(&posthog, 5)),
        vec![Outcome::Delivered; 5]
    );
    let sent: Vec<Vec<String>> = mock.requests().iter().map(names).collect();
    assert_eq!(
        sent,
        [
            vec!["Step 1", "Step 2"],
            vec!["Step 3", "Step 4"],
            vec!["Step 5"]
        ]
    );

    let mut n = 0;
    let mock = MockHttp::install(move |_| {
        n += 1;
        Ok(HttpResponse::new(if n == 1 { 503 } else { 200 }))
    });
    let outcomes = posthog.send(events(&posthog, 5));
    assert_eq!(mock.requests().len(), 1);
    assert!(outcomes[..2].iter().all(|o| matches!(o, Outcome::Retry(_))));
    assert_eq!(outcomes[2..], vec![Outcome::Throttled(Duration::ZERO); 3]);

    let by_bytes = configured(json!({"max_bytes": 1024}));
    let mock = MockHttp::always(HttpResponse::new(200));
    assert_eq!(
        by_bytes.send(events(&by_bytes, 30)),
        vec![Outcome::Delivered; 30]
    );
    assert!(mock.requests().len() > 1);
    assert!(mock.requests().iter().all(|r| r.body.len() <= 1024));
    let all: Vec<String> = mock.requests().iter().flat_map(names).collect();
    assert_eq!(
        all,
        (1..=30).map(|i| format!("Step {i}")).collect::<Vec<_>>()
    );
}

#[test]
fn statuses_map_to_outcomes() {
    let posthog = configured(json!({}));
    let one = |response: Result<HttpResponse, HttpError>| {
        let _mock = MockHttp::install(move |_| response.clone());
        let outcomes = posthog.send(events(&posthog, 2));
        assert_eq!(outcomes[0], outcomes[1], "the status decides for all");
        outcomes[0].clone()
    };
    let unauthorized = HttpResponse::new(401).with_body(r#"{"type":"authentication_error"}"#);
    assert!(
        matches!(one(Ok(unauthorized)), Outcome::Abort(f) if f.code == "posthog_unauthorized"
        && f.message.contains("api_key") && f.message.contains("authentication_error"))
    );
    assert!(matches!(one(Ok(HttpResponse::new(400))), Outcome::Abort(f) if f.code == "http_400"));
    assert!(matches!(
        one(Ok(HttpResponse::new(413))),
        Outcome::TooLarge(_)
    ));
    let throttled = HttpResponse::new(429).with_header("Retry-After", "9");
    assert_eq!(
        one(Ok(throttled)),
        Outcome::Throttled(Duration::from_secs(9))
    );
    assert!(matches!(one(Ok(HttpResponse::new(500))), Outcome::Retry(f) if f.code == "http_500"));
    assert!(matches!(one(Err(HttpError::Timeout)), Outcome::Retry(f) if f.code == "http_timeout"));
}

#[test]
fn config_errors_name_the_field() {
    let cases = [
        (json!({}), "api_key:"),
        (json!({"api_key": ""}), "api_key:"),
        (json!({"api_key": "k", "host": "us.i.posthog.com"}), "host:"),
        (json!({"api_key": "k", "max_items": 501}), "max_items:"),
        (json!({"api_key": "k", "max_bytes": 1}), "max_bytes:"),
        (json!({"api_key": "k", "region": "eu"}), "region:"),
    ];
    for (config, field) in cases {
        let err = configure::<Posthog>(&config.to_string())
            .expect_err("invalid")
            .to_string();
        assert!(err.starts_with(field), "{config}: {err}");
    }
}

#[test]
fn skipped_types_send_nothing() {
    let posthog = configured(json!({}));
    let group = json!({"type": "group", "messageId": "m", "userId": "u", "groupId": "g"});
    assert_eq!(
        posthog.transform_json(&job_context(1), &group.to_string()),
        Ok(Vec::new())
    );
}
