//! `sluice sink`: a small webhook receiver that verifies Standard Webhooks signatures and
//! prints what it receives, so the demo (and a curious user) can watch deliveries arrive.
//!
//! Signature: `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`;
//! the key is the base64 part of a `whsec_` secret, or the secret's bytes otherwise.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The HMAC key for a webhook secret.
pub fn signing_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `v1,<base64 signature>` for a message.
pub fn sign(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = signing_key(secret);
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(&key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Whether the request's signature headers match `secret`.
pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(ts), Some(sigs)) = (
        get("webhook-id"),
        get("webhook-timestamp"),
        get("webhook-signature"),
    ) else {
        return false;
    };
    let expected = sign(secret, id, ts, body);
    sigs.split(' ').any(|s| s == expected)
}

struct SinkState {
    secret: String,
    received: AtomicU64,
}

/// Serves the sink on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    secret: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
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
    let signed = verify(&state.secret, &headers, &body);
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
    println!(
        "sink #{n}: type={} user={user} event={} messageId={} signature={}",
        text("type"),
        text("event"),
        text("messageId"),
        if signed { "valid" } else { "INVALID" },
    );
    if signed {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whsec_secrets_are_base64_keys() {
        assert_eq!(signing_key("whsec_dGVzdA=="), b"test".to_vec());
        assert_eq!(signing_key("plain"), b"plain".to_vec());
    }

    #[test]
    fn signature_round_trips() {
        let sig = sign("whsec_dGVzdA==", "msg_1", "1700000000", b"{}");
        let mut h = HeaderMap::new();
        h.insert("webhook-id", "msg_1".parse().unwrap());
        h.insert("webhook-timestamp", "1700000000".parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        assert!(verify("whsec_dGVzdA==", &h, b"{}"));
        assert!(!verify("whsec_dGVzdA==", &h, b"{ }"));
    }
}
