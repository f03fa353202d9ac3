//! Results of `transform` and `send`, and the standard mapping from HTTP to outcomes.
//!
//! Contract of the mapping ([`Outcome::from_response`], [`Outcome::from_http_error`]):
//! 2xx is delivered; 429 is throttled for `Retry-After` seconds (5 s if absent or not an
//! integer); 408 and 5xx are retried; every other status aborts. Failure codes are
//! `http_<status>` and messages are `HTTP <status>: <first KiB of the response body>`. Transport errors
//! are retried (`host_denied`, `http_timeout`, `http_connect`, `http_error`) except a
//! malformed request, which can never succeed and aborts (`invalid_request`).

use std::fmt;
use std::time::Duration;

use crate::http::{HttpError, HttpResponse};

/// How long to wait after a 429 that carries no usable `Retry-After`.
pub const DEFAULT_THROTTLE: Duration = Duration::from_secs(5);

/// How much of a response body goes into a failure message: enough to show the
/// destination's error, small against the host's 10 KB message cap.
const BODY_EXCERPT: usize = 1024;

/// Why a job did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// A short machine-readable code, e.g. `http_503` or `invalid_event`.
    pub code: String,
    /// Human-readable detail; the host keeps the first 10 KB.
    pub message: String,
}

impl Failure {
    /// A failure with this code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Failure {}

/// A transform that could not produce payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransformError {
    /// Try the job again later (counts as an attempt).
    Retry(Failure),
    /// The event can never be delivered: abort the job now.
    Abort(Failure),
}

impl TransformError {
    /// A [`TransformError::Retry`] with this code and message.
    pub fn retry(code: impl Into<String>, message: impl Into<String>) -> TransformError {
        TransformError::Retry(Failure::new(code, message))
    }

    /// A [`TransformError::Abort`] with this code and message.
    pub fn abort(code: impl Into<String>, message: impl Into<String>) -> TransformError {
        TransformError::Abort(Failure::new(code, message))
    }

    /// The failure inside, whichever the variant.
    pub fn failure(&self) -> &Failure {
        match self {
            TransformError::Retry(failure) | TransformError::Abort(failure) => failure,
        }
    }
}

impl fmt::Display for TransformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransformError::Retry(failure) => write!(f, "retry: {failure}"),
            TransformError::Abort(failure) => write!(f, "abort: {failure}"),
        }
    }
}

impl std::error::Error for TransformError {}

/// What happened to one request of a `send` batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The destination accepted it.
    Delivered,
    /// A transient failure: retry with backoff (counts as an attempt).
    Retry(Failure),
    /// The destination asked to slow down: wait this long, without spending an attempt.
    Throttled(Duration),
    /// A permanent failure: abort the job now.
    Abort(Failure),
}

impl Outcome {
    /// An [`Outcome::Retry`] with this code and message.
    pub fn retry(code: impl Into<String>, message: impl Into<String>) -> Outcome {
        Outcome::Retry(Failure::new(code, message))
    }

    /// An [`Outcome::Abort`] with this code and message.
    pub fn abort(code: impl Into<String>, message: impl Into<String>) -> Outcome {
        Outcome::Abort(Failure::new(code, message))
    }

    /// The standard outcome for an HTTP response (see the module docs).
    pub fn from_response(response: &HttpResponse) -> Outcome {
        let status = response.status;
        match status {
            200..=299 => Outcome::Delivered,
            429 => Outcome::Throttled(retry_after(response).unwrap_or(DEFAULT_THROTTLE)),
            408 | 500..=599 => Outcome::Retry(status_failure(response)),
            _ => Outcome::Abort(status_failure(response)),
        }
    }

    /// The standard outcome for a request that got no response (see the module docs).
    pub fn from_http_error(error: &HttpError) -> Outcome {
        match error {
            HttpError::Denied(msg) => Outcome::retry("host_denied", msg.as_str()),
            HttpError::Timeout => Outcome::retry("http_timeout", error.to_string()),
            HttpError::Connect(msg) => Outcome::retry("http_connect", msg.as_str()),
            HttpError::InvalidRequest(msg) => Outcome::abort("invalid_request", msg.as_str()),
            HttpError::Other(msg) => Outcome::retry("http_error", msg.as_str()),
        }
    }

    /// [`Outcome::from_response`] or [`Outcome::from_http_error`], whichever applies.
    pub fn from_result(result: Result<HttpResponse, HttpError>) -> Outcome {
        match result {
            Ok(response) => Outcome::from_response(&response),
            Err(error) => Outcome::from_http_error(&error),
        }
    }
}

/// `Retry-After` as delta-seconds. The HTTP-date form is not supported (it would need the
/// host's clock to agree with the destination's) and falls back to the default.
fn retry_after(response: &HttpResponse) -> Option<Duration> {
    let seconds = response.header("retry-after")?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(seconds))
}

fn status_failure(response: &HttpResponse) -> Failure {
    let excerpt = &response.body[..response.body.len().min(BODY_EXCERPT)];
    let excerpt = String::from_utf8_lossy(excerpt);
    // Operators read this in the store: say what the destination answered even when its body
    // is empty.
    let message = if excerpt.trim().is_empty() {
        format!("HTTP {} (empty body)", response.status)
    } else {
        format!("HTTP {}: {excerpt}", response.status)
    };
    Failure::new(format!("http_{}", response.status), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Outcome {
        Outcome::from_response(&HttpResponse::new(code).with_body("nope"))
    }

    #[test]
    fn success_statuses_are_delivered() {
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(status(code), Outcome::Delivered, "{code}");
        }
    }

    #[test]
    fn server_errors_and_408_retry() {
        for code in [408, 500, 502, 503, 599] {
            assert_eq!(
                status(code),
                Outcome::retry(format!("http_{code}"), format!("HTTP {code}: nope"))
            );
        }
    }

    #[test]
    fn other_statuses_abort() {
        for code in [100, 301, 304, 400, 401, 403, 404, 409, 422, 600] {
            assert_eq!(
                status(code),
                Outcome::abort(format!("http_{code}"), format!("HTTP {code}: nope"))
            );
        }
    }

    #[test]
    fn throttled_uses_retry_after_seconds() {
        let resp = HttpResponse::new(429).with_header("Retry-After", " 7 ");
        assert_eq!(
            Outcome::from_response(&resp),
            Outcome::Throttled(Duration::from_secs(7))
        );
        for bad in ["soon", "-1", "1.5", "Wed, 21 Oct 2015 07:28:00 GMT"] {
            let resp = HttpResponse::new(429).with_header("retry-after", bad);
            assert_eq!(
                Outcome::from_response(&resp),
                Outcome::Throttled(DEFAULT_THROTTLE)
            );
        }
        assert_eq!(status(429), Outcome::Throttled(DEFAULT_THROTTLE));
    }

    #[test]
    fn failure_message_is_the_first_kib_of_the_body_lossily() {
        let mut body = vec![b'a'; 2000];
        body[0] = 0xff;
        let Outcome::Retry(failure) =
            Outcome::from_response(&HttpResponse::new(503).with_body(body))
        else {
            panic!("503 must retry");
        };
        assert_eq!(failure.code, "http_503");
        let excerpt = failure
            .message
            .strip_prefix("HTTP 503: ")
            .expect("status prefix");
        assert!(excerpt.starts_with('\u{fffd}'));
        assert_eq!(excerpt.chars().count(), BODY_EXCERPT);
        let Outcome::Abort(failure) = Outcome::from_response(&HttpResponse::new(400)) else {
            panic!("400 must abort");
        };
        assert_eq!(failure.message, "HTTP 400 (empty body)");
    }

    #[test]
    fn transport_errors_map_to_codes() {
        let cases = [
            (
                HttpError::Denied("evil.example".into()),
                Outcome::retry("host_denied", "evil.example"),
            ),
            (
                HttpError::Timeout,
                Outcome::retry("http_timeout", "no response within the deadline"),
            ),
            (
                HttpError::Connect("refused".into()),
                Outcome::retry("http_connect", "refused"),
            ),
            (
                HttpError::InvalidRequest("bad url".into()),
                Outcome::abort("invalid_request", "bad url"),
            ),
            (
                HttpError::Other("too big".into()),
                Outcome::retry("http_error", "too big"),
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(Outcome::from_result(Err(error)), expected);
        }
        assert_eq!(
            Outcome::from_result(Ok(HttpResponse::new(200))),
            Outcome::Delivered
        );
    }
}
