//! A receiver that measures how the host sends, for the sandbox-limit tests. By path:
//! - `/slow`: answers 200 after a delay, recording how many requests were in flight at once
//!   and the largest `x-batch-size` header seen (misbehave sends one per call);
//! - `/ok`: answers 200 at once;
//! - `/big`: answers 200 with a body of `big_body` bytes;
//! - `/hang`: never answers;
//! - `/echo`: answers 500 with `echo` as the body (e.g. a secret, as a careless API might).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

pub struct ProbeOptions {
    pub delay: Duration,
    pub big_body: usize,
    pub echo: String,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            delay: Duration::from_millis(200),
            big_body: 1 << 20,
            echo: String::new(),
        }
    }
}

#[derive(Default)]
struct Counters {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    max_batch: AtomicUsize,
    requests: AtomicUsize,
}

struct ProbeState {
    options: ProbeOptions,
    counters: Counters,
}

pub struct Probe {
    /// `http://127.0.0.1:PORT`, without a path.
    pub base: String,
    pub port: u16,
    state: Arc<ProbeState>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Probe {
    pub fn start(options: ProbeOptions) -> Probe {
        let state = Arc::new(ProbeState {
            options,
            counters: Counters::default(),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("probe runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind probe");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                let app = Router::new().route("/{what}", post(receive)).with_state(st);
                // No graceful shutdown: `/hang` requests never finish.
                let _ = tokio::select! {
                    r = axum::serve(listener, app) => r,
                    _ = rx => Ok(()),
                };
            });
        });
        let addr: std::net::SocketAddr = addr_rx.recv().expect("probe address");
        Probe {
            base: format!("http://{addr}"),
            port: addr.port(),
            state,
            _shutdown: tx,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// Most `/slow` requests in flight at once so far.
    pub fn max_in_flight(&self) -> usize {
        self.state.counters.max_in_flight.load(Ordering::SeqCst)
    }

    /// Largest `x-batch-size` seen so far.
    pub fn max_batch(&self) -> usize {
        self.state.counters.max_batch.load(Ordering::SeqCst)
    }

    /// Requests received so far (any path).
    pub fn requests(&self) -> usize {
        self.state.counters.requests.load(Ordering::SeqCst)
    }
}

async fn receive(
    State(state): State<Arc<ProbeState>>,
    Path(what): Path<String>,
    headers: HeaderMap,
) -> Response {
    let c = &state.counters;
    c.requests.fetch_add(1, Ordering::SeqCst);
    match what.as_str() {
        "slow" => {
            let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            c.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let batch = headers
                .get("x-batch-size")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            c.max_batch.fetch_max(batch, Ordering::SeqCst);
            tokio::time::sleep(state.options.delay).await;
            c.in_flight.fetch_sub(1, Ordering::SeqCst);
            StatusCode::OK.into_response()
        }
        "big" => (StatusCode::OK, vec![b'x'; state.options.big_body]).into_response(),
        "hang" => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
        "echo" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            state.options.echo.clone(),
        )
            .into_response(),
        _ => StatusCode::OK.into_response(),
    }
}
