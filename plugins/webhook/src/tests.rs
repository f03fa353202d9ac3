//! Native tests of the webhook destination against the SDK's mock HTTP host.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use sha2::{Digest, Sha256};
use sluice_sdk::http::{HttpError, HttpRequest, HttpResponse};
use sluice_sdk::testing::{MockHttp, configure, job_context, request};
use sluice_sdk::{Destination, Outcome, Request};

use crate::Webhook;

const SECRET: &str = "whsec_c2x1aWNlLXRlc3Qtc2VjcmV0"; // base64("sluice-test-secret")

fn webhook(extra: serde_json::Value) -> Webhook {
    let mut config = json!({"url": "https://hooks.example.com/in", "secret": SECRET});
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    configure::<Webhook>(&config.to_string()).expect("valid config")
}

/// HMAC-SHA256 written out from RFC 2104, independently of the `hmac` crate the plugin uses.
fn reference_hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> &'a str {
    req.header_value(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
}

fn send_one(webhook: &Webhook, response: HttpResponse) -> Outcome {
    let _mock = MockHttp::always(response);
    let outcomes = webhook.send(vec![request(1, "{}")]);
    assert_eq!(outcomes.len(), 1);
    outcomes.into_iter().next().expect("one outcome")
}

#[test]
fn signature_verifies_with_an_independent_hmac() {
    let webhook = webhook(json!({}));
    let mock = MockHttp::always(HttpResponse::new(204));
    let body = br#"{"type":"track","messageId":"m-1"}"#.to_vec();
    let outcomes = webhook.send(vec![Request {
        context: job_context(1),
        body: body.clone(),
    }]);
    assert_eq!(outcomes, [Outcome::Delivered]);

    let sent = &mock.requests()[0];
    let id = header(sent, "webhook-id");
    let timestamp = header(sent, "webhook-timestamp");
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(&body);
    let expected = STANDARD.encode(reference_hmac(b"sluice-test-secret", &signed));
    assert_eq!(header(sent, "webhook-signature"), format!("v1,{expected}"));
    assert_eq!(sent.body, body, "the body is sent exactly as signed");
}

#[test]
fn a_plain_secret_is_used_as_utf8_key_bytes() {
    let webhook = webhook(json!({"secret": "not-prefixed"}));
    let mock = MockHttp::always(HttpResponse::new(200));
    webhook.send(vec![request(3, "x")]);
    let sent = &mock.requests()[0];
    let signed = format!(
        "{}.{}.x",
        header(sent, "webhook-id"),
        header(sent, "webhook-timestamp")
    );
    let expected = STANDARD.encode(reference_hmac(b"not-prefixed", signed.as_bytes()));
    assert_eq!(header(sent, "webhook-signature"), format!("v1,{expected}"));
}

#[test]
fn requests_carry_the_standard_and_configured_headers() {
    let webhook = webhook(json!({"headers": {"Authorization": "Bearer t"}, "timeout_ms": 750}));
    let mock = MockHttp::always(HttpResponse::new(200));
    let ctx = job_context(42);
    webhook.send(vec![Request {
        context: ctx.clone(),
        body: b"{}".to_vec(),
    }]);

    let sent = &mock.requests()[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.url, "https://hooks.example.com/in");
    assert_eq!(header(sent, "content-type"), "application/json");
    assert_eq!(header(sent, "user-agent"), "sluice-webhook/0.1");
    assert_eq!(header(sent, "webhook-id"), ctx.idempotency_key);
    assert_eq!(header(sent, "authorization"), "Bearer t");
    assert!(header(sent, "webhook-signature").starts_with("v1,"));
    assert_eq!(sent.timeout, Some(Duration::from_millis(750)));

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let sent_at: u64 = header(sent, "webhook-timestamp")
        .parse()
        .expect("integer seconds");
    assert!(
        now.abs_diff(sent_at) <= 5,
        "timestamp {sent_at} is not now ({now})"
    );
}

#[test]
fn configured_headers_override_defaults_without_duplicates() {
    let webhook = webhook(json!({"headers": {"Content-Type": "application/cloudevents+json"}}));
    let mock = MockHttp::always(HttpResponse::new(200));
    webhook.send(vec![request(1, "{}")]);
    let sent = &mock.requests()[0];
    let types: Vec<_> = sent
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .collect();
    assert_eq!(types.len(), 1);
    assert_eq!(types[0].1, "application/cloudevents+json");
}

#[test]
fn statuses_map_to_outcomes() {
    let webhook = webhook(json!({}));
    let body = HttpResponse::new(500).with_body("boom");
    assert_eq!(
        send_one(&webhook, body),
        Outcome::retry("http_500", "HTTP 500: boom")
    );
    let bad = HttpResponse::new(400).with_body("bad payload");
    assert_eq!(
        send_one(&webhook, bad),
        Outcome::abort("http_400", "HTTP 400: bad payload")
    );
    let slow_down = HttpResponse::new(429).with_header("Retry-After", "7");
    assert_eq!(
        send_one(&webhook, slow_down),
        Outcome::Throttled(Duration::from_secs(7))
    );
    assert_eq!(
        send_one(&webhook, HttpResponse::new(202)),
        Outcome::Delivered
    );
}

#[test]
fn a_batch_gets_one_outcome_per_request_in_order() {
    let webhook = webhook(json!({}));
    let mock = MockHttp::install(|req| match req.body.as_slice() {
        b"ok" => Ok(HttpResponse::new(200)),
        b"slow" => Err(HttpError::Timeout),
        _ => Ok(HttpResponse::new(422)),
    });
    let outcomes = webhook.send(vec![
        request(1, "ok"),
        request(2, "slow"),
        request(3, "nope"),
    ]);
    assert_eq!(outcomes[0], Outcome::Delivered);
    assert!(matches!(&outcomes[1], Outcome::Retry(f) if f.code == "http_timeout"));
    assert!(matches!(&outcomes[2], Outcome::Abort(f) if f.code == "http_422"));
    let ids: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| header(r, "webhook-id").to_owned())
        .collect();
    assert_eq!(
        ids,
        ["msg-1:dest-test", "msg-2:dest-test", "msg-3:dest-test"]
    );
}

#[test]
fn transform_forwards_the_stored_event_byte_for_byte() {
    let webhook = webhook(json!({}));
    // Key order, spacing and a number beyond 64 bits are kept: nothing is re-encoded.
    let json = r#"{"type":"identify","messageId":"m","traits":{"plan":"pro"},"n": 123456789012345678901234567890}"#;
    let payloads = webhook
        .transform_json(&job_context(1), json)
        .expect("transform");
    assert_eq!(payloads, vec![json.as_bytes().to_vec()]);
}

#[test]
fn config_errors_name_the_field() {
    let cases = [
        (json!({"secret": "s"}), "url:"),
        (json!({"url": "mailto:x@y", "secret": "s"}), "url:"),
        (json!({"url": "https://x"}), "secret:"),
        (json!({"url": "https://x", "secret": 1}), "secret:"),
        (
            json!({"url": "https://x", "secret": "s", "timeout_ms": 0}),
            "timeout_ms:",
        ),
    ];
    for (config, field) in cases {
        let err = configure::<Webhook>(&config.to_string())
            .expect_err("invalid")
            .to_string();
        assert!(err.starts_with(field), "{config}: {err}");
    }
}

#[test]
fn receivers_verify_deliveries_with_the_shared_standard_webhooks_code() {
    use sluice_sdk::webhooks::{Delivery, Secret};

    let webhook = webhook(json!({}));
    let mock = MockHttp::always(HttpResponse::new(200));
    webhook.send(vec![request(7, r#"{"type":"track"}"#)]);
    let sent = &mock.requests()[0];
    let delivery = Delivery {
        id: header(sent, "webhook-id"),
        timestamp: header(sent, "webhook-timestamp"),
        signature: header(sent, "webhook-signature"),
    };
    let secret = Secret::parse(SECRET).expect("valid secret");
    assert_eq!(secret.verify(&delivery, &sent.body), Ok(()));
    let wrong = Secret::parse("whsec_b3RoZXI=").expect("valid secret");
    assert!(wrong.verify(&delivery, &sent.body).is_err());
}
