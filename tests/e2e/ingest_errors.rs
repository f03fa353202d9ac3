//! Bad input: each gets its status and JSON reason, and nothing is half-written.

use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

async fn post(
    sluice: &Sluice,
    path: &str,
    auth: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = client().post(sluice.url(path)).body(body);
    if let Some(key) = auth {
        req = req.basic_auth(key, Some(""));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("post");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

async fn job_count(sluice: &Sluice) -> i64 {
    let pool = db(sluice).await;
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap()
}

/// A bad request and what it must get back: name, write key, headers, body, status, error code.
type Case<'a> = (
    &'a str,
    Option<&'a str>,
    Vec<(&'a str, &'a str)>,
    Vec<u8>,
    u16,
    &'a str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_and_reason_and_store_nothing() {
    let sink = Sink::ok(SECRET);
    let sluice = Sluice::start(&webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, ""));
    let good = track("u1", 0);
    let batch = |events: Value| serde_json::to_vec(&json!({ "batch": events })).unwrap();

    let cases: Vec<Case> = vec![
        (
            "no write key",
            None,
            vec![],
            batch(json!([good])),
            401,
            "invalid_write_key",
        ),
        (
            "unknown write key",
            Some("nope"),
            vec![],
            batch(json!([good])),
            401,
            "invalid_write_key",
        ),
        (
            "invalid JSON",
            Some(WRITE_KEY),
            vec![],
            b"{\"batch\": [".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "not an object",
            Some(WRITE_KEY),
            vec![],
            b"[1,2]".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "empty batch",
            Some(WRITE_KEY),
            vec![],
            batch(json!([])),
            400,
            "empty_batch",
        ),
        (
            "no batch",
            Some(WRITE_KEY),
            vec![],
            b"{}".to_vec(),
            400,
            "invalid_batch",
        ),
        (
            "one event without ids spoils the batch",
            Some(WRITE_KEY),
            vec![],
            batch(json!([good, {"type": "track", "event": "x"}])),
            400,
            "invalid_event",
        ),
        (
            "unknown type",
            Some(WRITE_KEY),
            vec![],
            batch(json!([{"type": "bogus", "userId": "u"}])),
            400,
            "invalid_event",
        ),
        (
            "bad gzip",
            Some(WRITE_KEY),
            vec![("content-encoding", "gzip")],
            b"not gzip".to_vec(),
            400,
            "invalid_gzip",
        ),
        (
            "body over 4000 KB",
            Some(WRITE_KEY),
            vec![],
            batch(
                json!([{"type": "track", "userId": "u", "event": "e", "properties": {"pad": "x".repeat(4_200_000)}}]),
            ),
            413,
            "payload_too_large",
        ),
        (
            "gzip that inflates past 4000 KB",
            Some(WRITE_KEY),
            vec![("content-encoding", "gzip")],
            gzip(&batch(
                json!([{"type": "track", "userId": "u", "event": "e", "properties": {"pad": "x".repeat(5_000_000)}}]),
            )),
            413,
            "payload_too_large",
        ),
    ];
    for (name, auth, headers, body, status, code) in cases {
        let (got, reason) = post(&sluice, "/v1/batch", auth, &headers, body).await;
        assert_eq!(got, status, "{name}: {reason}");
        assert_eq!(reason["error"], code, "{name}: {reason}");
        assert!(
            reason["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}: {reason}"
        );
    }
    let (got, reason) = post(
        &sluice,
        "/v1/batch",
        Some(WRITE_KEY),
        &[],
        batch(json!([good, {"type":"track","event":"x"}])),
    )
    .await;
    assert_eq!(
        reason["message"], "batch[1]: neither `userId` nor `anonymousId` is set",
        "{got}"
    );
    assert_eq!(
        job_count(&sluice).await,
        0,
        "nothing from a rejected request is stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_forms_gzip_body_key_single_events_and_dedup() {
    let sink = Sink::ok(SECRET);
    let sluice = Sluice::start(&webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, ""));

    // gzip + Basic auth (RudderStack SDKs).
    let body = serde_json::to_vec(&json!({"batch": [track("a", 0), track("a", 1)]})).unwrap();
    let (s, r) = post(
        &sluice,
        "/v1/batch",
        Some(WRITE_KEY),
        &[("content-encoding", "gzip")],
        gzip(&body),
    )
    .await;
    assert_eq!((s, r["accepted"].as_i64()), (200, Some(2)), "{r}");
    // writeKey in the body, no Authorization header (Segment analytics-python).
    let body =
        serde_json::to_vec(&json!({"writeKey": WRITE_KEY, "batch": [track("b", 0)]})).unwrap();
    let (s, r) = post(&sluice, "/v1/batch", None, &[], body).await;
    assert_eq!(s, 200, "{r}");
    // Single-event endpoints, type from the path, messageId generated.
    for (path, event) in [
        (
            "/v1/identify",
            json!({"userId": "c", "traits": {"plan": "pro"}}),
        ),
        (
            "/v1/track",
            json!({"anonymousId": "c-anon", "event": "Clicked"}),
        ),
        ("/v1/page", json!({"userId": "c", "name": "Home"})),
        ("/v1/screen", json!({"userId": "c", "name": "Main"})),
        ("/v1/group", json!({"userId": "c", "groupId": "g1"})),
        ("/v1/alias", json!({"userId": "c", "previousId": "c-anon"})),
    ] {
        let (s, r) = post(
            &sluice,
            path,
            Some(WRITE_KEY),
            &[],
            serde_json::to_vec(&event).unwrap(),
        )
        .await;
        assert_eq!(s, 200, "{path}: {r}");
    }
    // A resent batch creates no second jobs.
    let body = serde_json::to_vec(&json!({"batch": [track("a", 0), track("a", 1), track("a", 2)]}))
        .unwrap();
    let (s, r) = post(&sluice, "/v1/batch", Some(WRITE_KEY), &[], body).await;
    assert_eq!(
        (s, r["accepted"].as_i64(), r["duplicates"].as_i64()),
        (200, Some(1), Some(2)),
        "{r}"
    );

    wait_until(Duration::from_secs(30), "10 deliveries", || async {
        (sink.accepted().len() >= 10).then_some(())
    })
    .await;
    assert_eq!(job_count(&sluice).await, 10);
    let pool = db(&sluice).await;
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event::json->>'type' FROM events WHERE user_key = 'c' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(types, vec!["identify", "page", "screen", "group", "alias"]);
    let generated: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE length(message_id) = 36 AND event::json->>'messageId' = message_id")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(generated, 6, "single events without messageId got a UUID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_answers_503_and_health_says_so() {
    let sink = Sink::ok(SECRET);
    let sluice = Sluice::start(&webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, ""));
    let (s, _) = post_batch(&sluice, &[track("u", 0)]).await;
    assert_eq!(s, 200);

    sluice.stop_postgres();
    let (s, r) = post_batch(&sluice, &[track("u", 1)]).await;
    assert_eq!(s, 503, "{r}");
    assert_eq!(r["error"], "store_unavailable");
    let health = client().get(sluice.url("/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 503);
}
