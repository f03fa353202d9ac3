//! A local webhook receiver for the tests: records every request (with its signature checked)
//! and answers with a status chosen by the test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub webhook_id: String,
    pub message_id: String,
    pub user: String,
    /// The event's `properties.seq`, which the tests use to check order.
    pub seq: i64,
    pub signature_ok: bool,
    /// 1 for the first time this messageId arrived, 2 for the second, ...
    pub nth: usize,
    /// What the sink answered.
    pub status: u16,
    /// The delivered event, as the webhook carried it.
    pub event: Value,
    pub at: Instant,
}

type Behaviour = dyn Fn(&Received) -> u16 + Send + Sync;

struct SinkState {
    secret: String,
    behaviour: Box<Behaviour>,
    received: Mutex<Vec<Received>>,
    seen: Mutex<HashMap<String, usize>>,
}

pub struct Sink {
    pub url: String,
    state: Arc<SinkState>,
    _server: super::server::Served,
}

impl Sink {
    /// A sink that accepts everything.
    pub fn ok(secret: &str) -> Sink {
        Sink::with(secret, |_| 200)
    }

    /// A sink that answers `behaviour(request)`.
    pub fn with(
        secret: &str,
        behaviour: impl Fn(&Received) -> u16 + Send + Sync + 'static,
    ) -> Sink {
        let state = Arc::new(SinkState {
            secret: secret.to_string(),
            behaviour: Box::new(behaviour),
            received: Mutex::new(Vec::new()),
            seen: Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .route("/{*path}", post(receive))
            .layer(axum::extract::DefaultBodyLimit::max(16 << 20))
            .with_state(state.clone());
        let server = super::server::serve(app, "sink");
        Sink {
            url: format!("http://{}/hook", server.addr),
            state,
            _server: server,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Requests answered with 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }
}

async fn receive(State(state): State<Arc<SinkState>>, headers: HeaderMap, body: Bytes) -> Response {
    let event: Value = serde_json::from_slice(&body).unwrap_or_default();
    let text = |k: &str| {
        event
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let message_id = text("messageId");
    let nth = {
        let mut seen = state.seen.lock().unwrap();
        let n = seen.entry(message_id.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let user = match text("userId").as_str() {
        "" => text("anonymousId"),
        u => u.to_string(),
    };
    let mut r = Received {
        webhook_id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        message_id,
        user,
        seq: event["properties"]["seq"].as_i64().unwrap_or(-1),
        signature_ok: signature_ok(&state.secret, &headers, &body),
        nth,
        status: 0,
        event: event.clone(),
        at: Instant::now(),
    };
    r.status = (state.behaviour)(&r);
    state.received.lock().unwrap().push(r.clone());
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // A 429 always asks for a one-second pause, as rate-limited APIs do.
    let mut response = status.into_response();
    if r.status == 429 {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
    }
    response
}

/// Whether the Standard Webhooks headers match `secret` (checked by the SDK's code, as
/// `sluice sink` does); an unusable secret or a missing header matches nothing.
fn signature_ok(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    use sluice_sdk::webhooks::{Delivery, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, Secret};
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signature)) =
        (get(HEADER_ID), get(HEADER_TIMESTAMP), get(HEADER_SIGNATURE))
    else {
        return false;
    };
    let delivery = Delivery {
        id,
        timestamp,
        signature,
    };
    Secret::parse(secret).is_ok_and(|s| s.verify(&delivery, body).is_ok())
}
