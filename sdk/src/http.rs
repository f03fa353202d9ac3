//! Outbound HTTP for plugins.
//!
//! Contract: [`send`] executes one request and returns the response or an [`HttpError`]. In a
//! WebAssembly build it calls the host's `http.send` import (the host enforces the manifest's
//! `allowed_hosts`, pooling and deadlines). In a native build (`cargo test`) it calls the mock
//! installed with [`crate::testing::MockHttp`], so plugins are unit-tested without a host.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// An outbound HTTP request. Build one with [`HttpRequest::post`] and the chained setters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method, e.g. `POST`.
    pub method: String,
    /// The absolute `http://` or `https://` URL.
    pub url: String,
    /// Header names and values, sent in this order (a name may repeat).
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: Vec<u8>,
    /// Overall deadline for this request; the host's default applies when `None`.
    pub timeout: Option<Duration>,
}

impl HttpRequest {
    /// A request with this method and URL, no headers and an empty body.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            url: url.into(),
            ..HttpRequest::default()
        }
    }

    /// A `POST` request to `url`.
    pub fn post(url: impl Into<String>) -> HttpRequest {
        HttpRequest::new("POST", url)
    }

    /// A `GET` request to `url`.
    pub fn get(url: impl Into<String>) -> HttpRequest {
        HttpRequest::new("GET", url)
    }

    /// Append a header (existing headers of the same name are kept).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> HttpRequest {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Set the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> HttpRequest {
        self.body = body.into();
        self
    }

    /// Set the body to `value` as JSON, and `content-type: application/json` unless a
    /// content type is already set. Fails only if `value` cannot be represented as JSON.
    pub fn json<T: Serialize + ?Sized>(
        mut self,
        value: &T,
    ) -> Result<HttpRequest, serde_json::Error> {
        self.body = serde_json::to_vec(value)?;
        if self.header_value("content-type").is_none() {
            self = self.header("content-type", "application/json");
        }
        Ok(self)
    }

    /// Set the overall deadline; `None` (e.g. from an optional config field) keeps the
    /// host's default.
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> HttpRequest {
        self.timeout = timeout.into();
        self
    }

    /// The first value of header `name`, compared case-insensitively.
    pub fn header_value(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A response from the destination (any status: mapping statuses to outcomes is
/// [`Outcome::from_response`](crate::Outcome::from_response)'s job).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpResponse {
    /// The HTTP status code.
    pub status: u16,
    /// Header names and values as received.
    pub headers: Vec<(String, String)>,
    /// The response body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response with this status, no headers and an empty body (handy in tests).
    pub fn new(status: u16) -> HttpResponse {
        HttpResponse {
            status,
            ..HttpResponse::default()
        }
    }

    /// Add a header.
    pub fn with_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> HttpResponse {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Set the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> HttpResponse {
        self.body = body.into();
        self
    }

    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a request produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host is not in the manifest's `allowed_hosts`; the message names the host.
    Denied(String),
    /// The host resolved to an address plugins may not reach (loopback, private, link-local,
    /// ...) unless the operator allows that network; the message names the address.
    DeniedAddress(String),
    /// No response within the deadline.
    Timeout,
    /// Connection refused, reset, DNS failure and the like.
    Connect(String),
    /// The request itself was malformed (bad URL, method or header).
    InvalidRequest(String),
    /// Anything else, e.g. a response larger than the host accepts.
    Other(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Denied(msg) => write!(f, "request denied by the host: {msg}"),
            HttpError::DeniedAddress(msg) => write!(f, "address denied by the host: {msg}"),
            HttpError::Timeout => f.write_str("no response within the deadline"),
            HttpError::Connect(msg) => write!(f, "connection failed: {msg}"),
            HttpError::InvalidRequest(msg) => write!(f, "invalid request: {msg}"),
            HttpError::Other(msg) => write!(f, "HTTP error: {msg}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Execute `req` and wait for the response.
pub fn send(req: &HttpRequest) -> Result<HttpResponse, HttpError> {
    #[cfg(target_arch = "wasm32")]
    {
        host::send(req)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::dispatch(req)
    }
}

/// Execute all `reqs` concurrently (the host bounds how many are in flight) and wait for all
/// of them; one result per request, in order. Prefer this over a loop of [`send`] when a
/// batch's payloads are independent of each other.
pub fn send_batch(reqs: &[HttpRequest]) -> Vec<Result<HttpResponse, HttpError>> {
    #[cfg(target_arch = "wasm32")]
    {
        host::send_batch(reqs)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        reqs.iter().map(crate::testing::dispatch).collect()
    }
}

/// One JSON array holding `payloads`, in order: `[p0,p1,…]`, for APIs that take a batch of
/// records in one body.
///
/// The payload bytes are spliced in as they are, not parsed or re-encoded, so this costs one
/// copy; each payload must therefore be one complete JSON value, as `transform` produces
/// them (a payload that is not JSON makes the whole body invalid). Accepts any list of byte
/// slices: `&[&[u8]]`, `&[Vec<u8>]`, or `requests.iter().map(|r| &r.body)`.
///
/// ```
/// use sluice_sdk::http::json_array;
///
/// let payloads: [&[u8]; 2] = [br#"{"a":1}"#, b"2"];
/// assert_eq!(json_array(payloads), br#"[{"a":1},2]"#);
/// assert_eq!(json_array(Vec::<Vec<u8>>::new()), b"[]");
/// ```
pub fn json_array<I>(payloads: I) -> Vec<u8>
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    // Collect the (borrowed) payloads first so the body is allocated once, at its size.
    let payloads: Vec<I::Item> = payloads.into_iter().collect();
    let size = payloads.iter().map(|p| p.as_ref().len() + 1).sum::<usize>() + 1;
    let mut body = Vec::with_capacity(size.max(2));
    body.push(b'[');
    for (i, payload) in payloads.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(payload.as_ref());
    }
    body.push(b']');
    body
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// The host import and the conversions to and from its generated types.
#[cfg(target_arch = "wasm32")]
mod host {
    use super::{HttpError, HttpRequest, HttpResponse, timeout_ms};
    use crate::bindings::sluice::destination::http as wire;

    pub(super) fn send(req: &HttpRequest) -> Result<HttpResponse, HttpError> {
        // The generated import borrows everything, so only the header tuples need a new
        // (small) vector; the body is passed without a copy.
        let headers = header_refs(req);
        from_wire(wire::send(to_wire(req, &headers)))
    }

    pub(super) fn send_batch(reqs: &[HttpRequest]) -> Vec<Result<HttpResponse, HttpError>> {
        let headers: Vec<Vec<(&str, &str)>> = reqs.iter().map(header_refs).collect();
        let requests: Vec<wire::HttpRequest<'_>> = reqs
            .iter()
            .zip(&headers)
            .map(|(req, headers)| to_wire(req, headers))
            .collect();
        wire::send_batch(&requests)
            .into_iter()
            .map(from_wire)
            .collect()
    }

    fn header_refs(req: &HttpRequest) -> Vec<(&str, &str)> {
        req.headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect()
    }

    fn to_wire<'a>(
        req: &'a HttpRequest,
        headers: &'a [(&'a str, &'a str)],
    ) -> wire::HttpRequest<'a> {
        wire::HttpRequest {
            method: &req.method,
            url: &req.url,
            headers,
            body: &req.body,
            timeout_ms: req.timeout.map(timeout_ms),
        }
    }

    fn from_wire(
        result: Result<wire::HttpResponse, wire::HttpError>,
    ) -> Result<HttpResponse, HttpError> {
        match result {
            Ok(resp) => Ok(HttpResponse {
                status: resp.status,
                headers: resp.headers,
                body: resp.body,
            }),
            Err(err) => Err(match err {
                wire::HttpError::Denied(msg) => HttpError::Denied(msg),
                wire::HttpError::DeniedAddress(msg) => HttpError::DeniedAddress(msg),
                wire::HttpError::Timeout => HttpError::Timeout,
                wire::HttpError::Connect(msg) => HttpError::Connect(msg),
                wire::HttpError::InvalidRequest(msg) => HttpError::InvalidRequest(msg),
                wire::HttpError::Other(msg) => HttpError::Other(msg),
            }),
        }
    }
}

/// The WIT `timeout-ms` for `timeout`: whole milliseconds rounded up, so a sub-millisecond
/// timeout is not sent as "0 ms", and saturated at `u32::MAX` (~49 days) rather than wrapped.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn timeout_ms(timeout: Duration) -> u32 {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_sets_fields() {
        let req = HttpRequest::post("https://example.com/hook")
            .header("X-One", "1")
            .json(&serde_json::json!({"a": 1}))
            .expect("json")
            .timeout(Duration::from_millis(250));
        assert_eq!(req.method, "POST");
        assert_eq!(req.header_value("x-one"), Some("1"));
        assert_eq!(req.header_value("Content-Type"), Some("application/json"));
        assert_eq!(req.body, br#"{"a":1}"#);
        assert_eq!(req.timeout, Some(Duration::from_millis(250)));
        assert_eq!(
            req.timeout(None).timeout,
            None,
            "None keeps the host's default"
        );

        let keeps = HttpRequest::get("http://x")
            .header("content-type", "application/x-ndjson")
            .json(&1)
            .expect("json");
        let types: Vec<_> = keeps
            .headers
            .iter()
            .filter(|(k, _)| k == "content-type")
            .collect();
        assert_eq!(types.len(), 1, "an explicit content type is not duplicated");
    }

    #[test]
    fn json_array_splices_payloads_without_reencoding() {
        let payloads: Vec<Vec<u8>> = vec![
            br#"{"b":1, "a":[1,2]}"#.to_vec(),
            b"123456789012345678901234567890".to_vec(),
            br#""text""#.to_vec(),
        ];
        let body = json_array(&payloads);
        assert_eq!(
            body,
            br#"[{"b":1, "a":[1,2]},123456789012345678901234567890,"text"]"#
        );
        let parsed: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(parsed.as_array().map(Vec::len), Some(3));

        let slices: &[&[u8]] = &[b"{}", b"[]"];
        assert_eq!(json_array(slices), b"[{},[]]");
        let requests = [crate::Request {
            body: b"null".to_vec(),
            ..crate::Request::default()
        }];
        assert_eq!(json_array(requests.iter().map(|r| &r.body)), b"[null]");
        assert_eq!(json_array(Vec::<&[u8]>::new()), b"[]");
    }

    #[test]
    fn timeouts_round_up_and_saturate() {
        assert_eq!(timeout_ms(Duration::from_micros(1)), 1);
        assert_eq!(timeout_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(timeout_ms(Duration::from_secs(u64::MAX)), u32::MAX);
    }

    #[test]
    fn response_header_lookup_is_case_insensitive() {
        let resp = HttpResponse::new(204)
            .with_header("Retry-After", "3")
            .with_body("x");
        assert_eq!(resp.header("retry-after"), Some("3"));
        assert_eq!(resp.header("missing"), None);
        assert!(resp.is_success());
        assert!(!HttpResponse::new(302).is_success());
    }
}
