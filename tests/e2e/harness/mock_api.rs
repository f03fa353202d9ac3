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
    _shutdown: tokio::sync::oneshot::Sender<()>,
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
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("mock runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind mock");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                let app = Router::new()
                    .route("/{*path}", post(receive))
                    .layer(axum::extract::DefaultBodyLimit::max(32 << 20))
                    .with_state(st);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .expect("mock serve");
            });
        });
        let addr = addr_rx.recv().expect("mock address");
        MockApi {
            base: format!("http://{addr}"),
            state,
            _shutdown: tx,
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
