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

use bytes::Bytes;
use http_body_util::Full;

use super::allowlist::Allowlist;
use super::bindings::sluice::destination::{http, log, types};
use super::bindings::{HttpError, HttpRequest, HttpResponse, Level};
use super::limiter::{Limiter, Signal};
use super::limits::{CallClock, MemoryLimiter};
use super::outbound::{Outbound, OutboundError};

/// Default and maximum time for one outbound request.
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(120);
/// Response bodies larger than this are refused (the guest would have to hold them in memory).
const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// How many requests of one `send-batch` call wait for the destination's limiter at once
/// (the limiter decides how many are actually in flight).
const MAX_CONCURRENT_REQUESTS: usize = 256;
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
        client: Outbound,
        allowlist: Arc<Allowlist>,
        limiter: Arc<Limiter>,
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
                peak: 0,
            },
            clock: CallClock::new(deadline),
            gate: Gate {
                client,
                allowlist,
                limiter,
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

/// What outbound requests of one instance go through: the shared client, the destination's
/// allowlist and its concurrency limit.
struct Gate {
    client: Outbound,
    allowlist: Arc<Allowlist>,
    limiter: Arc<Limiter>,
    labels: Arc<Labels>,
}

impl Gate {
    async fn execute(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        // WHATWG parsing first: it writes hosts the way browsers (and resolvers) read them,
        // so `2130706433`, `0x7f.1` and `127.1` all become `127.0.0.1` before the allowlist and
        // the network policy look at them.
        let bad_url = |e: &dyn std::fmt::Display| {
            HttpError::InvalidRequest(format!("bad url `{}`: {e}", request.url))
        };
        let normalized = url::Url::parse(&request.url).map_err(|e| bad_url(&e))?;
        let uri: ::http::Uri = normalized.as_str().parse().map_err(|e| bad_url(&e))?;
        let scheme = uri.scheme_str().unwrap_or_default();
        if !matches!(scheme, "http" | "https") {
            return Err(HttpError::InvalidRequest(format!(
                "unsupported scheme `{scheme}` in `{}`",
                request.url
            )));
        }
        if !self.allowlist.allows_uri(&uri) {
            let host = uri.host().unwrap_or_default();
            let message = format!(
                "host `{host}` is not in the plugin's allowed_hosts (allowed: {})",
                self.allowlist.describe()
            );
            tracing::warn!(plugin = %self.labels.plugin, destination = %self.labels.destination, url = %request.url, "outbound request denied");
            return Err(HttpError::Denied(message));
        }
        let method = ::http::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| HttpError::InvalidRequest(format!("bad method `{}`", request.method)))?;
        let timeout = request
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into()))
            .unwrap_or(DEFAULT_HTTP_TIMEOUT)
            .min(MAX_HTTP_TIMEOUT);
        let mut builder = ::http::Request::builder().method(method).uri(uri);
        let mut has_agent = false;
        for (name, value) in &request.headers {
            let name = ::http::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::InvalidRequest(format!("bad header name `{name}`")))?;
            let value = ::http::header::HeaderValue::from_str(value)
                .map_err(|_| HttpError::InvalidRequest(format!("bad value for header `{name}`")))?;
            has_agent |= name == ::http::header::USER_AGENT;
            builder = builder.header(name, value);
        }
        if !has_agent {
            builder = builder.header(::http::header::USER_AGENT, USER_AGENT);
        }
        let outgoing = builder
            .body(Full::new(Bytes::from(request.body)))
            .map_err(|e| HttpError::InvalidRequest(e.to_string()))?;

        // Waiting for room under the destination's limit is not part of the timeout.
        let place = self.limiter.enter().await;
        let started = Instant::now();
        let result = self
            .client
            .send(outgoing, timeout, MAX_RESPONSE_BYTES)
            .await;
        let signal = match &result {
            Ok(r) if r.status == 429 || r.status >= 500 => Signal::Overload,
            Ok(_) | Err(OutboundError::TooLarge(_)) => Signal::Fine,
            Err(OutboundError::DeniedAddress(_)) => Signal::Ignore,
            Err(_) => Signal::Overload,
        };
        place.finish(signal);
        crate::metrics::http_request(
            &self.labels.destination,
            started.elapsed(),
            self.limiter.limit(),
        );
        let response = result.map_err(|e| match e {
            OutboundError::DeniedAddress(denied) => {
                tracing::warn!(plugin = %self.labels.plugin, destination = %self.labels.destination, url = %request.url, %denied, "outbound request refused by the network policy");
                HttpError::DeniedAddress(denied.to_string())
            }
            OutboundError::Timeout(_) => HttpError::Timeout,
            OutboundError::Connect(m) => HttpError::Connect(m),
            other => HttpError::Other(other.to_string()),
        })?;
        let headers = response
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        Ok(HttpResponse {
            status: response.status,
            headers,
            body: response.body.to_vec(),
        })
    }
}

/// Sent when a plugin sets no user agent of its own.
const USER_AGENT: &str = concat!("sluice/", env!("CARGO_PKG_VERSION"));
