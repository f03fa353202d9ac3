//! The host side of the plugin imports (`http`, `log`, `signing`) and the per-instance store
//! state. (`compat` serves the 0.1.x imports of older plugins with the same code.)
//!
//! Outbound HTTP is executed here, with the host's pooled client, so that the allowlist, the
//! timeouts and the response size cap cannot be bypassed by the guest. WASI is linked only
//! because Rust's std imports it; the context grants no files, env, args or sockets, and stderr
//! goes to a small in-memory pipe whose tail is attached to trap reports (panic messages).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_util::task::AbortOnDropHandle;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use bytes::Bytes;
use http_body_util::Full;

use super::allowlist::Allowlist;
use super::bindings::sluice::destination::{http, log, signing, types};
use super::bindings::{HttpError, HttpRequest, HttpResponse, Level};
use super::limiter::{Limiter, Signal};
use super::limits::{CallClock, LogBudget, MemoryLimiter};
use super::outbound::{Outbound, OutboundError};
use super::redact::{Scrubber, redact_url};
use super::signing::HmacKey;

/// Where a too-large response's `other` error message starts; the SDK maps it to the failure
/// code `http_response_too_large` (the WIT's `http-error` cannot grow a case in a minor
/// version).
pub const RESPONSE_TOO_LARGE: &str = "response_too_large";
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

/// The sandbox limits of one instance, from its plugin's manifest.
#[derive(Debug, Clone, Copy)]
pub struct InstanceLimits {
    pub max_memory: usize,
    /// Guest time per call.
    pub deadline: Duration,
    /// Longest outbound request; a request's own `timeout-ms` is clamped to it.
    pub http_timeout: Duration,
    /// Largest response body handed to the guest.
    pub max_response: usize,
}

/// Store data of one plugin instance.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    stderr: MemoryOutputPipe,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) clock: CallClock,
    pub(crate) logs: LogBudget,
    /// Masks the destination's secrets in what the plugin logs or reports.
    pub(crate) scrubber: Arc<Scrubber>,
    gate: Arc<Gate>,
    /// Job being transformed, for log lines (`None` during `send`, which spans a batch).
    pub(crate) current_job: Option<i64>,
}

impl HostState {
    pub fn new(
        client: Outbound,
        allowlist: Arc<Allowlist>,
        limiter: Arc<Limiter>,
        labels: Arc<Labels>,
        limits: InstanceLimits,
        scrubber: Arc<Scrubber>,
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
                max_bytes: limits.max_memory,
                exceeded: false,
                peak: 0,
            },
            clock: CallClock::new(limits.deadline),
            logs: LogBudget::default(),
            gate: Arc::new(Gate {
                requests_seconds: crate::metrics::http_requests(&labels.destination),
                client,
                allowlist,
                limiter,
                labels,
                timeout: limits.http_timeout,
                max_response: limits.max_response,
                scrubber: scrubber.clone(),
                last_uri: Mutex::new(None),
            }),
            scrubber,
            current_job: None,
        }
    }

    /// The destination's adaptive limit on requests in flight, as it stands now.
    pub fn concurrency_limit(&self) -> usize {
        self.gate.limiter.limit()
    }

    /// Logs one line saying how many guest log lines the call just made went over its budget.
    pub fn report_dropped_logs(&mut self) {
        let dropped = self.logs.take_dropped();
        if dropped > 0 {
            let l = &self.gate.labels;
            tracing::warn!(plugin = %l.plugin, destination = %l.destination, job = ?self.current_job, dropped, "{dropped} log lines dropped (a call may log {} lines, {} KiB)", super::limits::MAX_LOG_LINES, super::limits::MAX_LOG_BYTES >> 10);
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

impl signing::Host for HostState {}

/// An `Err` traps the guest: a handle it does not own means its bindings are broken.
impl signing::HostHmacKey for HostState {
    async fn new(&mut self, key: Vec<u8>) -> wasmtime::Result<Resource<HmacKey>> {
        Ok(self.table.push(HmacKey::new(&key))?)
    }

    async fn sign_webhook(
        &mut self,
        key: Resource<HmacKey>,
        id: String,
        timestamp: u64,
        body: Vec<u8>,
    ) -> wasmtime::Result<String> {
        Ok(self.table.get(&key)?.sign_webhook(&id, timestamp, &body))
    }

    async fn hmac_sha256(
        &mut self,
        key: Resource<HmacKey>,
        parts: Vec<Vec<u8>>,
    ) -> wasmtime::Result<Vec<u8>> {
        Ok(self
            .table
            .get(&key)?
            .hmac_sha256(parts.iter().map(Vec::as_slice)))
    }

    async fn drop(&mut self, key: Resource<HmacKey>) -> wasmtime::Result<()> {
        self.table.delete(key)?;
        Ok(())
    }
}

impl log::Host for HostState {
    async fn enabled(&mut self, level: Level) -> bool {
        // The same callsite target (this module) as `log` below, so the answer matches.
        match level {
            Level::Trace => tracing::enabled!(tracing::Level::TRACE),
            Level::Debug => tracing::enabled!(tracing::Level::DEBUG),
            Level::Info => tracing::enabled!(tracing::Level::INFO),
            Level::Warn => tracing::enabled!(tracing::Level::WARN),
            Level::Error => tracing::enabled!(tracing::Level::ERROR),
        }
    }

    async fn log(&mut self, level: Level, message: String) {
        if !self.logs.admit(message.len()) {
            return;
        }
        let message = self.scrubber.scrub(&message);
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
        let gate = self.gate.clone();
        let count = requests.len();
        // In a task of its own: polled inside the plugin call, every wake-up of a request
        // (its connection readable, its permit free) would resume the guest's fiber first.
        // Aborted when dropped, so a cancelled call takes its requests with it.
        let batch = AbortOnDropHandle::new(tokio::spawn(async move {
            futures_util::stream::iter(requests)
                .map(|r| gate.execute(r))
                .buffered(MAX_CONCURRENT_REQUESTS)
                .collect::<Vec<_>>()
                .await
        }));
        let results = batch.await.unwrap_or_else(|e| {
            tracing::error!(plugin = %self.gate.labels.plugin, destination = %self.gate.labels.destination, error = %e, "the requests of a send-batch call failed in the host");
            (0..count)
                .map(|_| Err(HttpError::Other(format!("host error while sending: {e}"))))
                .collect()
        });
        self.clock.add_host_time(started.elapsed());
        results
    }
}

/// What outbound requests of one instance go through: the shared client, the destination's
/// allowlist, its concurrency limit and the plugin's outbound limits.
struct Gate {
    client: Outbound,
    allowlist: Arc<Allowlist>,
    limiter: Arc<Limiter>,
    labels: Arc<Labels>,
    timeout: Duration,
    max_response: usize,
    /// The instance's scrubber: errors go back to the plugin, which may log or store them.
    scrubber: Arc<Scrubber>,
    /// The last URL the allowlist let through, as sent (see `checked_uri`).
    last_uri: Mutex<Option<(String, ::http::Uri)>>,
    /// `sluice_http_request_seconds` of the destination, looked up once.
    requests_seconds: metrics::Histogram,
}

impl Gate {
    /// One request; an error's text has the destination's secrets masked, since transport
    /// errors quote the URL and the plugin passes them on to logs and the store.
    async fn execute(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.send(request).await.map_err(|e| self.scrub(e))
    }

    fn scrub(&self, error: HttpError) -> HttpError {
        let s = |m: String| self.scrubber.scrub(&m);
        match error {
            HttpError::Denied(m) => HttpError::Denied(s(m)),
            HttpError::DeniedAddress(m) => HttpError::DeniedAddress(s(m)),
            HttpError::Timeout => HttpError::Timeout,
            HttpError::Connect(m) => HttpError::Connect(s(m)),
            HttpError::InvalidRequest(m) => HttpError::InvalidRequest(s(m)),
            HttpError::Other(m) => HttpError::Other(s(m)),
        }
    }

    /// The request's URL as it is sent, once the allowlist has let it through. A plugin sends
    /// to the same URL request after request, so the last one checked is kept: the parse and
    /// the check cost more than the rest of a request's preparation together.
    fn checked_uri(&self, url: &str) -> Result<::http::Uri, HttpError> {
        let mut last = self.last_uri.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((checked, uri)) = &*last
            && checked == url
        {
            return Ok(uri.clone());
        }
        drop(last);
        let uri = self.check_uri(url)?;
        last = self.last_uri.lock().unwrap_or_else(|p| p.into_inner());
        *last = Some((url.to_string(), uri.clone()));
        Ok(uri)
    }

    fn check_uri(&self, url: &str) -> Result<::http::Uri, HttpError> {
        // WHATWG parsing first: it writes hosts the way browsers (and resolvers) read them,
        // so `2130706433`, `0x7f.1` and `127.1` all become `127.0.0.1` before the allowlist and
        // the network policy look at them.
        // URLs are only ever printed redacted: webhook URLs carry tokens.
        let bad_url = |e: &dyn std::fmt::Display| {
            HttpError::InvalidRequest(format!("bad url `{}`: {e}", redact_url(url)))
        };
        let mut normalized = url::Url::parse(url).map_err(|e| bad_url(&e))?;
        strip_userinfo(&mut normalized);
        let uri: ::http::Uri = normalized.as_str().parse().map_err(|e| bad_url(&e))?;
        let scheme = uri.scheme_str().unwrap_or_default();
        if !matches!(scheme, "http" | "https") {
            return Err(HttpError::InvalidRequest(format!(
                "unsupported scheme `{scheme}` in `{}`",
                redact_url(url)
            )));
        }
        if !self.allowlist.allows_uri(&uri) {
            let host = uri.host().unwrap_or_default();
            let message = format!(
                "host `{host}` is not in the plugin's allowed_hosts (allowed: {})",
                self.allowlist.describe()
            );
            tracing::warn!(plugin = %self.labels.plugin, destination = %self.labels.destination, url = %redact_url(url), "outbound request denied");
            return Err(HttpError::Denied(message));
        }
        Ok(uri)
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let uri = self.checked_uri(&request.url)?;
        let method = ::http::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| HttpError::InvalidRequest(format!("bad method `{}`", request.method)))?;
        // The manifest's http_timeout is both the default and the ceiling.
        let timeout = request
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into()))
            .unwrap_or(self.timeout)
            .min(self.timeout);
        let HttpRequest {
            url, headers, body, ..
        } = request;
        // Built in place rather than through `http::request::Builder`, which moves its parts
        // at every header; the lifted strings become the header values without a copy.
        let mut outgoing = ::http::Request::new(Full::new(Bytes::from(body)));
        *outgoing.method_mut() = method;
        *outgoing.uri_mut() = uri;
        let map = outgoing.headers_mut();
        map.reserve(headers.len() + 1);
        for (name, value) in headers {
            let name = ::http::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::InvalidRequest(format!("bad header name `{name}`")))?;
            let value = ::http::header::HeaderValue::from_maybe_shared(Bytes::from(value))
                .map_err(|_| HttpError::InvalidRequest(format!("bad value for header `{name}`")))?;
            map.append(name, value);
        }
        if !map.contains_key(::http::header::USER_AGENT) {
            map.insert(
                ::http::header::USER_AGENT,
                ::http::header::HeaderValue::from_static(USER_AGENT),
            );
        }

        // Waiting for room under the destination's limit is not part of the timeout.
        let place = self.limiter.enter().await;
        let started = Instant::now();
        let result = self.client.send(outgoing, timeout, self.max_response).await;
        let signal = match &result {
            Ok(r) if r.status == 429 || r.status >= 500 => Signal::Overload,
            Ok(_) | Err(OutboundError::TooLarge(_)) => Signal::Fine,
            Err(OutboundError::DeniedAddress(_)) => Signal::Ignore,
            Err(_) => Signal::Overload,
        };
        place.finish(signal);
        self.requests_seconds
            .record(started.elapsed().as_secs_f64());
        let response = result.map_err(|e| match e {
            OutboundError::DeniedAddress(denied) => {
                tracing::warn!(plugin = %self.labels.plugin, destination = %self.labels.destination, url = %redact_url(&url), %denied, "outbound request refused by the network policy");
                HttpError::DeniedAddress(denied.to_string())
            }
            OutboundError::Timeout(_) => HttpError::Timeout,
            OutboundError::TooLarge(max) => HttpError::Other(format!(
                "{RESPONSE_TOO_LARGE}: the response body is larger than the plugin's limits.response_size of {max} bytes"
            )),
            // Transport errors may quote the URL: `execute` scrubs them.
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

/// Removes `user:password@` from `url` before the client sees it. It is never sent (requests
/// go out in origin form, and no `Authorization` is made from it, see
/// `sluice_sdk::validate::http_url`), but the client keys its kept connections and the `Host`
/// header by the URI's authority, which would otherwise carry it.
fn strip_userinfo(url: &mut url::Url) {
    if url.username().is_empty() && url.password().is_none() {
        return;
    }
    // Both fail only for URLs that cannot carry user info at all (no host), so there is
    // nothing left to strip when they do.
    let _ = url.set_password(None);
    let _ = url.set_username("");
}

/// Sent when a plugin sets no user agent of its own.
const USER_AGENT: &str = concat!("sluice/", env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_is_stripped_before_the_request_reaches_the_client() {
        let mut url = url::Url::parse("http://user:PASSW0RD@127.0.0.1:9/hook?token=T#f")
            .expect("a valid url");
        strip_userinfo(&mut url);
        assert_eq!(url.as_str(), "http://127.0.0.1:9/hook?token=T#f");
        let uri: ::http::Uri = url.as_str().parse().expect("a valid uri");
        assert_eq!(uri.authority().map(|a| a.as_str()), Some("127.0.0.1:9"));

        let mut user_only = url::Url::parse("https://user@h.example/").expect("a valid url");
        strip_userinfo(&mut user_only);
        assert_eq!(user_only.as_str(), "https://h.example/");
    }
}
