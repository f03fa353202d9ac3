//! Results of `transform` and `send`, and the standard mapping from HTTP to outcomes.
//!
//! Contract of the mapping ([`Outcome::from_response`], [`Outcome::from_http_error`]):
//! 2xx is delivered; 413 is too large (the host halves the call and sends again); 429 is
//! throttled for `Retry-After`, given either as delay-seconds or as an
//! HTTP date (RFC 9110 IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`; a date in the past means
//! retry now; 5 s if absent or unreadable); 408 and 5xx are retried; every other status
//! aborts. Failure codes are `http_<status>` and messages are
//! `HTTP <status>: <first KiB of the response body>` (lossy UTF-8), or `HTTP <status> (empty
//! body)` when the body is empty or only whitespace. Transport errors are retried
//! (`host_denied`, `http_timeout`, `http_connect`, `http_response_too_large`, `http_error`)
//! except a malformed request,
//! which can never succeed and aborts (`invalid_request`), and an address
//! the host's network policy refuses, which aborts (`host_denied_address`).

use std::fmt;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use crate::http::{HttpError, HttpResponse};

/// How the host's `other` error for a response larger than the plugin's
/// `limits.response_size` starts.
const RESPONSE_TOO_LARGE: &str = "response_too_large";

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
    /// The request was too large for the destination (HTTP 413). The host sends the job again
    /// in a call of half as many jobs, without spending an attempt; a job that was alone in its
    /// call is aborted with this failure.
    TooLarge(Failure),
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
        Outcome::from_response_at(response, SystemTime::now())
    }

    /// [`Outcome::from_response`] with `now` as the current time (for HTTP-date `Retry-After`).
    fn from_response_at(response: &HttpResponse, now: SystemTime) -> Outcome {
        let status = response.status;
        match status {
            200..=299 => Outcome::Delivered,
            429 => Outcome::Throttled(retry_after(response, now).unwrap_or(DEFAULT_THROTTLE)),
            408 | 500..=599 => Outcome::Retry(status_failure(response)),
            413 => Outcome::TooLarge(status_failure(response)),
            _ => Outcome::Abort(status_failure(response)),
        }
    }

    /// The standard outcome for a request that got no response (see the module docs).
    pub fn from_http_error(error: &HttpError) -> Outcome {
        match error {
            HttpError::Denied(msg) => Outcome::retry("host_denied", msg.as_str()),
            // Retrying cannot help until an operator changes the network policy: abort (the
            // job can be replayed after the change).
            HttpError::DeniedAddress(msg) => Outcome::abort("host_denied_address", msg.as_str()),
            HttpError::Timeout => Outcome::retry("http_timeout", error.to_string()),
            HttpError::Connect(msg) => Outcome::retry("http_connect", msg.as_str()),
            HttpError::InvalidRequest(msg) => Outcome::abort("invalid_request", msg.as_str()),
            // The host's message for a response over the manifest's `limits.response_size`.
            HttpError::Other(msg) if msg.starts_with(RESPONSE_TOO_LARGE) => {
                Outcome::retry("http_response_too_large", msg.as_str())
            }
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

    /// One outcome per item of a call that carried `n` requests in one body (e.g. a JSON array
    /// built with [`crate::http::json_array`]), for an API whose `response` lists the items
    /// it rejected by their index in the call.
    ///
    /// - When `failed` lists no item in range, the whole call is judged by its status: every
    ///   item gets [`Outcome::from_response`] (2xx delivered, 5xx retried, 429 throttled, …).
    /// - Otherwise the listed items get their outcome and every other item is
    ///   [`Outcome::Delivered`], whatever the status: an API that names the bad items (often
    ///   with a 400 or 207) accepted the rest. If the API rejects the whole call because of
    ///   some items, do not use this: it would mark the rest delivered.
    /// - An index listed more than once (a vendor reporting two problems with one item) gets
    ///   the most final of its outcomes, whatever the order of the listing: abort, then too
    ///   large, then retry, then throttled (the longest wait), then delivered. The first
    ///   listed of that kind gives the code; the messages of all its failures are kept, in
    ///   listing order, joined with `"; "` (repeats dropped), so the operator sees every
    ///   reason.
    ///
    /// Indices at or past `n` do not match any request and are ignored, with a warning in the
    /// log.
    ///
    /// ```
    /// use sluice_sdk::Outcome;
    /// use sluice_sdk::http::HttpResponse;
    ///
    /// // {"code": 400, "failed_records": [{"index": 1, "message": "bad time"}]}
    /// let response = HttpResponse::new(400);
    /// let failed = [(1, Outcome::abort("invalid_record", "bad time"))];
    /// let outcomes = Outcome::per_item(3, &response, failed);
    /// assert_eq!(outcomes, [
    ///     Outcome::Delivered,
    ///     Outcome::abort("invalid_record", "bad time"),
    ///     Outcome::Delivered,
    /// ]);
    ///
    /// // Item 0 listed twice: the abort wins over the retry, and both reasons are kept.
    /// let failed = [
    ///     (0, Outcome::retry("busy", "try later")),
    ///     (0, Outcome::abort("invalid_record", "bad time")),
    /// ];
    /// let outcomes = Outcome::per_item(1, &response, failed);
    /// assert_eq!(outcomes, [Outcome::abort("invalid_record", "bad time; try later")]);
    /// ```
    pub fn per_item<I>(n: usize, response: &HttpResponse, failed: I) -> Vec<Outcome>
    where
        I: IntoIterator<Item = (usize, Outcome)>,
    {
        // Every outcome listed for each index, in listing order.
        let mut listed: Vec<Vec<Outcome>> = vec![Vec::new(); n];
        let mut any = false;
        for (index, outcome) in failed {
            match listed.get_mut(index) {
                Some(slot) => {
                    slot.push(outcome);
                    any = true;
                }
                None => crate::log::warn(&format!(
                    "the response names item {index} of a call with {n} items; ignored"
                )),
            }
        }
        if !any {
            return vec![Outcome::from_response(response); n];
        }
        listed.into_iter().map(most_final).collect()
    }

    /// How final an outcome is, for [`Outcome::per_item`]: higher wins. A vendor that calls an
    /// item permanently bad is believed over one that says "try again", since a retry would
    /// only meet the same rejection; the longest throttle is the one that satisfies both.
    fn finality(&self) -> (u8, Duration) {
        match self {
            Outcome::Delivered => (0, Duration::ZERO),
            Outcome::Throttled(wait) => (1, *wait),
            Outcome::Retry(_) => (2, Duration::ZERO),
            Outcome::TooLarge(_) => (3, Duration::ZERO),
            Outcome::Abort(_) => (4, Duration::ZERO),
        }
    }

    fn failure_mut(&mut self) -> Option<&mut Failure> {
        match self {
            Outcome::Retry(f) | Outcome::Abort(f) | Outcome::TooLarge(f) => Some(f),
            Outcome::Delivered | Outcome::Throttled(_) => None,
        }
    }
}

/// One index's outcome from everything listed for it (see [`Outcome::per_item`]); delivered
/// when nothing is.
fn most_final(mut outcomes: Vec<Outcome>) -> Outcome {
    if outcomes.len() <= 1 {
        return outcomes.pop().unwrap_or(Outcome::Delivered);
    }
    // `max_by_key` keeps the last of equals; the first listed should give the code.
    let Some(winner) = outcomes
        .iter()
        .rev()
        .max_by_key(|outcome| outcome.finality())
    else {
        return Outcome::Delivered;
    };
    let mut winner = winner.clone();
    if let Some(failure) = winner.failure_mut() {
        let mut messages: Vec<&str> = vec![failure.message.as_str()];
        for outcome in &outcomes {
            if let Outcome::Retry(f) | Outcome::Abort(f) | Outcome::TooLarge(f) = outcome
                && !messages.contains(&f.message.as_str())
            {
                messages.push(&f.message);
            }
        }
        failure.message = messages.join("; ");
    }
    winner
}

/// `Retry-After` as delay-seconds or as an HTTP date, measured from `now`; a date in the past
/// is no wait at all. `None` when absent or unreadable.
fn retry_after(response: &HttpResponse, now: SystemTime) -> Option<Duration> {
    let value = response.header("retry-after")?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // IMF-fixdate is a subset of RFC 2822's date-time, whose obsolete zone names include
    // `GMT`. The wait relies on the destination's clock agreeing with ours, as the sender of
    // a date intends.
    let at = OffsetDateTime::parse(value, &Rfc2822).ok()?;
    Some(Duration::try_from(at - OffsetDateTime::from(now)).unwrap_or(Duration::ZERO))
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
mod tests;
