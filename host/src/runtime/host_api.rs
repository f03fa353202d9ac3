//! The host side of the plugin imports (`http`, `log`) and the per-instance store state.
//!
//! Outbound HTTP is executed here, with the host's pooled client, so that the allowlist, the
//! timeouts and the response size cap cannot be bypassed by the guest. WASI is linked only
//! because Rust's std imports it; the context grants no files, env, args or sockets, and stderr
//! goes to a small in-memory pipe whose tail is attached to trap reports (panic messages).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::allowlist::Allowlist;
use super::bindings::sluice::destination::{http, log, types};
use super::bindings::{HttpError, HttpRequest, HttpResponse, Level};
use super::limits::{CallClock, MemoryLimiter};

/// Default and maximum time for one outbound request.
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(120);
/// Response bodies larger than this are refused (the guest would have to hold them in memory).
const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// How many requests of one `send-batch` call are in flight at once.
const MAX_CONCURRENT_REQUESTS: usize = 64;
/// How much of the guest's stderr is kept for trap reports.
const STDERR_CAPACITY: usize = 8 * 1024;

/// Names attached to every log line and span of an instance.
#[derive(Debug, Clone)]
pub struct Labels {
    pub plugin: String,
    pub destination: String,
}

/// Store data of one plugin instance.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    stderr: MemoryOutputPipe,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) clock: CallClock,
    gate: Gate,
    /// Job being transformed, for log lines (`None` during `send`, which spans a batch).
    pub(crate) current_job: Option<i64>,
}

impl HostState {
    pub fn new(
        client: reqwest::Client,
        allowlist: Arc<Allowlist>,
        labels: Arc<Labels>,
        max_memory: usize,
        deadline: Duration,
    ) -> HostState {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            stderr,
            limiter: MemoryLimiter {
                max_bytes: max_memory,
                exceeded: false,
            },
            clock: CallClock::new(deadline),
            gate: Gate {
                client,
                allowlist,
                labels,
            },
            current_job: None,
        }
    }

    /// The last few KB the guest wrote to stderr (e.g. a panic message), lossy UTF-8.
    pub fn stderr_tail(&self) -> String {
        let bytes = self.stderr.contents();
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    async fn log(&mut self, level: Level, message: String) {
        let l = &self.gate.labels;
        let job = self.current_job;
        match level {
            Level::Trace => {
                tracing::trace!(plugin = %l.plugin, destination = %l.destination, job = ?job, "{message}")
            }
            Level::Debug => {
                tracing::debug!(plugin = %l.plugin, destination = %l.destination, job = ?job, "{message}")
            }
            Level::Info => {
                tracing::info!(plugin = %l.plugin, destination = %l.destination, job = ?job, "{message}")
            }
            Level::Warn => {
                tracing::warn!(plugin = %l.plugin, destination = %l.destination, job = ?job, "{message}")
            }
            Level::Error => {
                tracing::error!(plugin = %l.plugin, destination = %l.destination, job = ?job, "{message}")
            }
        }
    }
}

impl http::Host for HostState {
    async fn send(&mut self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let started = Instant::now();
        let result = self.gate.execute(request).await;
        self.clock.add_host_time(started.elapsed());
        result
    }

    async fn send_batch(
        &mut self,
        requests: Vec<HttpRequest>,
    ) -> Vec<Result<HttpResponse, HttpError>> {
        let started = Instant::now();
        let gate = &self.gate;
        let results: Vec<_> = futures_util::stream::iter(requests)
            .map(|r| gate.execute(r))
            .buffered(MAX_CONCURRENT_REQUESTS)
            .collect()
            .await;
        self.clock.add_host_time(started.elapsed());
        results
    }
}

/// What outbound requests of one instance go through: the pooled client and the allowlist.
struct Gate {
    client: reqwest::Client,
    allowlist: Arc<Allowlist>,
    labels: Arc<Labels>,
}

impl Gate {
    async fn execute(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let url = url::Url::parse(&request.url)
            .map_err(|e| HttpError::InvalidRequest(format!("bad url `{}`: {e}", request.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HttpError::InvalidRequest(format!(
                "unsupported scheme `{}`",
                url.scheme()
            )));
        }
        if !self.allowlist.allows(&url) {
            let host = url.host_str().unwrap_or_default();
            let message = format!(
                "host `{host}` is not in the plugin's allowed_hosts (allowed: {})",
                self.allowlist.describe()
            );
            tracing::warn!(plugin = %self.labels.plugin, destination = %self.labels.destination, %url, "outbound request denied");
            return Err(HttpError::Denied(message));
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| HttpError::InvalidRequest(format!("bad method `{}`", request.method)))?;
        let timeout = request
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into()))
            .unwrap_or(DEFAULT_HTTP_TIMEOUT)
            .min(MAX_HTTP_TIMEOUT);
        let mut builder = self.client.request(method, url).timeout(timeout);
        for (name, value) in &request.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::InvalidRequest(format!("bad header name `{name}`")))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| HttpError::InvalidRequest(format!("bad value for header `{name}`")))?;
            builder = builder.header(name, value);
        }
        let mut response = builder.body(request.body).send().await.map_err(classify)?;

        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(HttpError::Other(format!(
                    "response body larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

fn classify(e: reqwest::Error) -> HttpError {
    if e.is_timeout() {
        HttpError::Timeout
    } else if e.is_connect() {
        HttpError::Connect(error_chain(&e))
    } else if e.is_builder() || e.is_request() && e.url().is_none() {
        HttpError::InvalidRequest(error_chain(&e))
    } else {
        HttpError::Other(error_chain(&e))
    }
}

/// reqwest's top-level message is vague ("error sending request"); the causes say what happened.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The shared outbound client: pooled connections, no redirects (the allowlist must see every
/// host), bounded connect time.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    use anyhow::Context;
    // reqwest is built without a bundled crypto provider; install ring's once per process
    // (a second install is a no-op error we can ignore).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the outbound HTTP client")
}
