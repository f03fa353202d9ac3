//! A local stand-in for a vendor's batch API (Amplitude, PostHog, any JSON receiver): records
//! every request's path and JSON body and answers with what the test's handler decides.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

/// One request the mock received, with its answer.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub body: Value,
    pub status: u16,
}

type Handler = dyn Fn(&str, &Value) -> (u16, Value) + Send + Sync;

struct MockState {
    handler: Box<Handler>,
    calls: Mutex<Vec<Call>>,
}

pub struct MockApi {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base: String,
    state: Arc<MockState>,
    _server: super::server::Served,
}

impl MockApi {
    /// Answers each POST with `handler(path, body)` as status and JSON body.
    pub fn start(
        handler: impl Fn(&str, &Value) -> (u16, Value) + Send + Sync + 'static,
    ) -> MockApi {
        let state = Arc::new(MockState {
            handler: Box::new(handler),
            calls: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/{*path}", post(receive))
            .layer(axum::extract::DefaultBodyLimit::max(32 << 20))
            .with_state(state.clone());
        let server = super::server::serve(app, "mock");
        MockApi {
            base: format!("http://{}", server.addr),
            state,
            _server: server,
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }
}

async fn receive(State(state): State<Arc<MockState>>, uri: OriginalUri, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, answer) = (state.handler)(&path, &body);
    state
        .calls
        .lock()
        .unwrap()
        .push(Call { path, body, status });
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(answer)).into_response()
}
