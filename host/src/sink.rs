//! `sluice sink`: a small webhook receiver that verifies Standard Webhooks signatures and
//! prints what it receives, so the demo (and a curious user) can watch deliveries arrive.
//!
//! Verification is `sluice_sdk::webhooks` (the code the webhook plugin signs with): one of the
//! `v1` signatures must match, compared in constant time, and `webhook-timestamp` must be
//! within 5 minutes of now, so a captured delivery cannot be replayed later. A delivery that
//! fails is answered 401 and printed with the reason.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use sluice_sdk::webhooks::{Delivery, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, Secret};
use sluice_sdk::webhooks::{SecretError, VerifyError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Checks a received request's signature headers against `secret`.
pub fn verify_request(
    secret: &Secret,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), VerifyError> {
    let get = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(VerifyError::MissingHeader(name))
    };
    let delivery = Delivery {
        id: get(HEADER_ID)?,
        timestamp: get(HEADER_TIMESTAMP)?,
        signature: get(HEADER_SIGNATURE)?,
    };
    secret.verify(&delivery, body)
}

struct SinkState {
    secret: Secret,
    received: AtomicU64,
}

/// Serves the sink on `listener` until `shutdown`. Fails at once if `secret` is empty.
pub async fn serve(
    listener: TcpListener,
    secret: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let secret =
        Secret::parse(&secret).map_err(|err: SecretError| anyhow::anyhow!("sink secret: {err}"))?;
    let state = Arc::new(SinkState {
        secret,
        received: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/{*path}", post(receive))
        .route("/", post(receive))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

async fn receive(
    axum::extract::State(state): axum::extract::State<Arc<SinkState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let n = state.received.fetch_add(1, Ordering::Relaxed) + 1;
    let verified = verify_request(&state.secret, &headers, &body);
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let text = |k: &str| {
        event
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("-")
            .to_string()
    };
    let user = match text("userId").as_str() {
        "-" => text("anonymousId"),
        u => u.to_string(),
    };
    let signature = match &verified {
        Ok(()) => "valid".to_string(),
        Err(err) => format!("INVALID ({err})"),
    };
    println!(
        "sink #{n}: type={} user={user} event={} messageId={} signature={signature}",
        text("type"),
        text("event"),
        text("messageId"),
    );
    if verified.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    fn headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in [
            (HEADER_ID, id),
            (HEADER_TIMESTAMP, timestamp),
            (HEADER_SIGNATURE, signature),
        ] {
            h.insert(name, value.parse().expect("header value"));
        }
        h
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    }

    #[test]
    fn a_fresh_signed_request_verifies_and_a_changed_body_does_not() {
        let secret = Secret::parse("whsec_dGVzdA==").expect("valid");
        let now = now();
        let sig = secret.sign("msg_1", now, b"{}");
        let h = headers("msg_1", &now.to_string(), &sig);
        assert!(verify_request(&secret, &h, b"{}").is_ok());
        assert!(verify_request(&secret, &h, b"{ }").is_err());
        assert!(
            Secret::parse("").is_err(),
            "an empty secret is refused, so it verifies nothing"
        );
    }

    #[test]
    fn an_old_timestamp_is_a_replay() {
        // Once accepted: `webhook-timestamp: 1` with a valid signature.
        let secret = Secret::parse("whsec_dGVzdA==").expect("valid");
        let sig = secret.sign("msg_1", 1, b"{}");
        let h = headers("msg_1", "1", &sig);
        assert!(matches!(
            verify_request(&secret, &h, b"{}"),
            Err(VerifyError::OutsideTolerance { .. })
        ));
    }

    #[test]
    fn missing_headers_are_named() {
        let secret = Secret::parse("s").expect("valid");
        let mut h = headers("msg_1", "1", "v1,x");
        h.remove(HEADER_SIGNATURE);
        assert_eq!(
            verify_request(&secret, &h, b""),
            Err(VerifyError::MissingHeader("webhook-signature"))
        );
    }
}
