//! Native tests of the Amplitude destination against the SDK's mock HTTP host.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_sdk::http::{HttpError, HttpRequest, HttpResponse};
use sluice_sdk::testing::{MockHttp, configure, job_context, request};
use sluice_sdk::{Destination, Outcome, Request};

use crate::Amplitude;
use crate::config::BATCH_SIZE;

fn configured(extra: Value) -> Amplitude {
    let mut config = json!({"api_key": "key-123"});
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    configure::<Amplitude>(&config.to_string()).expect("valid config")
}

/// Transformed payloads for `n` track events of user-1, numbered from 1.
fn events(amplitude: &Amplitude, n: i64) -> Vec<Request> {
    (1..=n)
        .map(|i| {
            let event = json!({
                "type": "track", "messageId": format!("m{i}"), "userId": "user-1",
                "event": format!("Step {i}"), "timestamp": "2026-11-25T00:00:00Z"
            });
            let payloads = amplitude
                .transform_json(&job_context(i), &event.to_string())
                .expect("transform");
            assert_eq!(payloads.len(), 1);
            request(i, payloads[0].clone())
        })
        .collect()
}

fn body(req: &HttpRequest) -> Value {
    serde_json::from_slice(&req.body).expect("a JSON body")
}

fn insert_ids(req: &HttpRequest) -> Vec<String> {
    body(req)["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["insert_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn batch_size_matches_the_manifest() {
    let manifest = include_str!("../Cargo.toml");
    assert!(manifest.contains(&format!("\nbatch_size = {BATCH_SIZE}\n")));
    assert!(manifest.contains("\nordered_batches = true\n"));
}

#[test]
fn a_call_is_one_request_with_the_api_key_and_events() {
    let amplitude = configured(json!({"min_id_length": 1, "timeout_ms": 1500}));
    let mock = MockHttp::always(HttpResponse::new(200).with_body(r#"{"code":200}"#));
    let requests = events(&amplitude, 2);
    assert_eq!(amplitude.send(requests), vec![Outcome::Delivered; 2]);
    let sent = mock.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].url, "https://api2.amplitude.com/2/httpapi");
    assert_eq!(
        sent[0].header_value("content-type"),
        Some("application/json")
    );
    assert_eq!(sent[0].timeout, Some(Duration::from_millis(1500)));
    let sent_body = body(&sent[0]);
    assert_eq!(sent_body["api_key"], "key-123");
    assert_eq!(sent_body["options"], json!({"min_id_length": 1}));
    assert_eq!(
        sent_body["events"][1],
        json!({"event_type": "Step 2", "user_id": "user-1", "time": 1_795_564_800_000_i64,
               "insert_id": "m2", "library": "sluice"})
    );
}

#[test]
fn regions_and_endpoint_choose_the_url() {
    let url = |extra: Value| {
        let amplitude = configured(extra);
        let mock = MockHttp::always(HttpResponse::new(200));
        amplitude.send(events(&amplitude, 1));
        mock.requests()[0].url.clone()
    };
    assert_eq!(
        url(json!({"region": "eu"})),
        "https://api.eu.amplitude.com/2/httpapi"
    );
    assert_eq!(
        url(json!({"region": "us"})),
        "https://api2.amplitude.com/2/httpapi"
    );
    assert_eq!(
        url(json!({"endpoint": "http://127.0.0.1:9/2/httpapi"})),
        "http://127.0.0.1:9/2/httpapi"
    );
    let no_options = configured(json!({}));
    let mock = MockHttp::always(HttpResponse::new(200));
    no_options.send(events(&no_options, 1));
    assert!(body(&mock.requests()[0]).get("options").is_none());
}

#[test]
fn invalid_events_are_aborted_and_the_rest_sent_again() {
    let amplitude = configured(json!({}));
    let mock = MockHttp::install(|req| {
        let ids = insert_ids(req);
        // Amplitude rejects the whole request while it holds m2 or m4.
        let bad: Vec<usize> = ids
            .iter()
            .enumerate()
            .filter(|(_, id)| *id == "m2" || *id == "m4")
            .map(|(i, _)| i)
            .collect();
        if bad.is_empty() {
            return Ok(HttpResponse::new(200));
        }
        let body = json!({"code": 400, "error": "Invalid field values on some events",
                          "events_with_invalid_fields": {"time": [bad[0]]},
                          "silenced_events": bad[1..]});
        Ok(HttpResponse::new(400).with_body(body.to_string()))
    });
    let outcomes = amplitude.send(events(&amplitude, 5));
    assert_eq!(outcomes[0], Outcome::Delivered);
    assert!(
        matches!(&outcomes[1], Outcome::Abort(f) if f.code == "amplitude_invalid_field"
        && f.message.contains("`time` is invalid"))
    );
    assert_eq!(outcomes[2], Outcome::Delivered);
    assert!(matches!(&outcomes[3], Outcome::Abort(f) if f.code == "amplitude_silenced"));
    assert_eq!(outcomes[4], Outcome::Delivered);
    let sent: Vec<Vec<String>> = mock.requests().iter().map(insert_ids).collect();
    assert_eq!(
        sent,
        [vec!["m1", "m2", "m3", "m4", "m5"], vec!["m1", "m3", "m5"]]
    );
}

#[test]
fn resends_are_bounded() {
    let amplitude = configured(json!({}));
    // Always rejects the first event of whatever it gets.
    let mock = MockHttp::always(
        HttpResponse::new(400).with_body(r#"{"events_with_missing_fields":{"event_type":[0]}}"#),
    );
    let outcomes = amplitude.send(events(&amplitude, 5));
    assert_eq!(mock.requests().len(), crate::MAX_ROUNDS);
    for outcome in &outcomes[..3] {
        assert!(matches!(outcome, Outcome::Abort(f) if f.code == "amplitude_missing_field"));
    }
    for outcome in &outcomes[3..] {
        assert!(matches!(outcome, Outcome::Retry(f) if f.code == "amplitude_rejected"));
    }
}

#[test]
fn statuses_map_to_outcomes() {
    let amplitude = configured(json!({}));
    let one = |response: Result<HttpResponse, HttpError>| {
        let _mock = MockHttp::install(move |_| response.clone());
        let outcomes = amplitude.send(events(&amplitude, 2));
        assert_eq!(outcomes[0], outcomes[1], "the status decides for all");
        outcomes[0].clone()
    };
    let invalid_key =
        HttpResponse::new(400).with_body(r#"{"code":400,"error":"Invalid API key: key-123"}"#);
    assert!(
        matches!(one(Ok(invalid_key)), Outcome::Abort(f) if f.code == "http_400"
        && f.message.contains("Invalid API key"))
    );
    assert!(matches!(
        one(Ok(HttpResponse::new(413))),
        Outcome::TooLarge(_)
    ));
    assert_eq!(
        one(Ok(HttpResponse::new(429))),
        Outcome::Throttled(Duration::from_secs(30))
    );
    let told = HttpResponse::new(429).with_header("retry-after", "4");
    assert_eq!(one(Ok(told)), Outcome::Throttled(Duration::from_secs(4)));
    assert!(matches!(one(Ok(HttpResponse::new(503))), Outcome::Retry(f) if f.code == "http_503"));
    assert!(matches!(
        one(Err(HttpError::Connect("refused".into()))),
        Outcome::Retry(_)
    ));
}

#[test]
fn large_calls_are_split_in_order() {
    let amplitude = configured(json!({"max_items": 2}));
    let mock = MockHttp::always(HttpResponse::new(200));
    assert_eq!(
        amplitude.send(events(&amplitude, 5)),
        vec![Outcome::Delivered; 5]
    );
    let sent: Vec<Vec<String>> = mock.requests().iter().map(insert_ids).collect();
    assert_eq!(sent, [vec!["m1", "m2"], vec!["m3", "m4"], vec!["m5"]]);

    let by_bytes = amplitude_with_bytes(1024);
    let mock = MockHttp::always(HttpResponse::new(200));
    assert_eq!(
        by_bytes.send(events(&by_bytes, 30)),
        vec![Outcome::Delivered; 30]
    );
    let sent = mock.requests();
    assert!(sent.len() > 1);
    assert!(sent.iter().all(|r| r.body.len() <= 1024), "every body fits");
    let all: Vec<String> = sent.iter().flat_map(insert_ids).collect();
    let want: Vec<String> = (1..=30).map(|i| format!("m{i}")).collect();
    assert_eq!(all, want);
}

fn amplitude_with_bytes(max_bytes: usize) -> Amplitude {
    configured(json!({ "max_bytes": max_bytes, "min_id_length": 1 }))
}

#[test]
fn config_errors_name_the_field() {
    let cases = [
        (json!({}), "api_key:"),
        (json!({"api_key": " "}), "api_key:"),
        (json!({"api_key": "k", "region": "asia"}), "region:"),
        (
            json!({"api_key": "k", "region": "eu", "endpoint": "https://x"}),
            "endpoint:",
        ),
        (json!({"api_key": "k", "endpoint": "x"}), "endpoint:"),
        (json!({"api_key": "k", "max_items": 501}), "max_items:"),
        (json!({"api_key": "k", "max_bytes": 10}), "max_bytes:"),
        (
            json!({"api_key": "k", "min_id_length": 0}),
            "min_id_length:",
        ),
        (json!({"api_key": "k", "apikey": "k"}), "apikey:"),
    ];
    for (config, field) in cases {
        let err = configure::<Amplitude>(&config.to_string())
            .expect_err("invalid")
            .to_string();
        assert!(err.starts_with(field), "{config}: {err}");
    }
}

#[test]
fn skipped_types_send_nothing() {
    let amplitude = configured(json!({}));
    let alias = json!({"type": "alias", "messageId": "m", "userId": "u", "previousId": "p"});
    assert_eq!(
        amplitude.transform_json(&job_context(1), &alias.to_string()),
        Ok(Vec::new())
    );
}
