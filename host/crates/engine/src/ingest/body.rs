//! Reading a request body without letting a client hold the host hostage.
//!
//! - Size: at most [`MAX_BODY_BYTES`] on the wire *and* after gzip, so a small compressed body
//!   cannot inflate past the limit in memory.
//! - Time: a body that stalls for [`CHUNK_STALL`] between two chunks, or takes longer than
//!   [`BODY_DEADLINE`] in all, gets a 408.
//! - Memory: every byte held (on the wire form and after gzip) is taken from a budget shared
//!   by all requests in flight, and given back when the request is answered. What is counted
//!   is the buffers' capacity, not just the bytes in them: a body is read into a buffer of its
//!   declared `Content-Length` (taken from the budget before the first byte is read), and a
//!   body without one grows its buffer by doubling, each step taken from the budget first.
//!   When the budget is spent, the request gets a 503 with `Retry-After` at once: stalled
//!   uploads cannot exhaust the host, and clients retry.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_ENCODING;
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::body_buf::BodyBuf;
use super::error::ApiError;

/// Largest accepted body, compressed or not (RudderStack's and Segment's limit).
pub const MAX_BODY_BYTES: usize = 4000 * 1024;

/// Oversized bodies are still read (and discarded) up to this size before answering 413, so
/// that a client that writes its whole body before reading the response sees the 413 rather
/// than a broken connection. Beyond it the connection is cut.
const MAX_DRAIN_BYTES: usize = 64 << 20;

/// Longest pause between two chunks of a body.
pub const CHUNK_STALL: Duration = Duration::from_secs(10);
/// Longest time to receive a whole body.
pub const BODY_DEADLINE: Duration = Duration::from_secs(60);

/// The budget is counted in KiB (the semaphore's unit).
const UNIT: usize = 1024;

/// Memory for request bodies in flight, shared by every request.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
}

/// Bytes taken from the budget; given back when dropped (when the request is answered).
#[derive(Debug, Default)]
pub struct BudgetGuard {
    permits: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    pub fn new(bytes: usize) -> BodyBudget {
        BodyBudget {
            units: Arc::new(Semaphore::new((bytes / UNIT).max(1))),
        }
    }

    /// Takes `bytes` more for `guard`, or fails at once if the budget is spent.
    fn take(&self, guard: &mut BudgetGuard, bytes: usize) -> Result<(), ApiError> {
        let units = bytes.div_ceil(UNIT).max(1) as u32;
        match self.units.clone().try_acquire_many_owned(units) {
            Ok(p) => {
                match &mut guard.permits {
                    Some(held) => held.merge(p),
                    None => guard.permits = Some(p),
                }
                Ok(())
            }
            Err(_) => Err(ApiError::busy(
                "the host's memory for request bodies in flight is spent; retry later",
            )),
        }
    }
}

/// Reads and, if needed, gunzips the body.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    budget: &BodyBudget,
) -> Result<(Bytes, BudgetGuard), ApiError> {
    let mut guard = BudgetGuard::default();
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let raw = tokio::time::timeout(
        BODY_DEADLINE,
        read_limited(body, declared, budget, &mut guard),
    )
    .await
    .map_err(|_| body_timeout())??;
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let body = match encoding.as_deref() {
        None | Some("") | Some("identity") => raw,
        Some("gzip") | Some("x-gzip") => {
            // The compressed form is no longer needed once inflated.
            let out = gunzip(&raw, budget, &mut guard)?;
            drop(raw);
            out
        }
        Some(other) => {
            return Err(ApiError::bad_request(
                "unsupported_encoding",
                format!("unsupported Content-Encoding `{other}` (use gzip or none)"),
            ));
        }
    };
    Ok((body, guard))
}

fn body_timeout() -> ApiError {
    ApiError::timeout("the request body was not received in time")
}

/// Collects at most `MAX_BODY_BYTES`; past that, drains (bounded) and reports 413. The buffer
/// is `declared` bytes when the client says how many (and no more than the limit).
async fn read_limited(
    body: Body,
    declared: Option<usize>,
    budget: &BodyBudget,
    guard: &mut BudgetGuard,
) -> Result<Bytes, ApiError> {
    let mut body = body.into_data_stream();
    let mut buf = BodyBuf::with_capacity(0);
    if let Some(n) = declared.filter(|n| *n <= MAX_BODY_BYTES) {
        budget.take(guard, n)?;
        buf = BodyBuf::with_capacity(n);
    }
    let mut total = 0usize;
    loop {
        let next = tokio::time::timeout(CHUNK_STALL, body.next())
            .await
            .map_err(|_| body_timeout())?;
        let Some(chunk) = next else {
            break;
        };
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(
                "unreadable_body",
                format!("could not read the request body: {e}"),
            )
        })?;
        total += chunk.len();
        if total > MAX_DRAIN_BYTES {
            return Err(ApiError::too_large(MAX_BODY_BYTES));
        }
        if total <= MAX_BODY_BYTES {
            grow(&mut buf, chunk.len(), budget, guard)?;
            buf.extend_from_slice(&chunk);
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(ApiError::too_large(MAX_BODY_BYTES));
    }
    Ok(buf.into_bytes())
}

/// Makes room for `more` bytes, doubling (up to the limit), with the new capacity taken from
/// the budget before it is allocated.
fn grow(
    buf: &mut BodyBuf,
    more: usize,
    budget: &BodyBudget,
    guard: &mut BudgetGuard,
) -> Result<(), ApiError> {
    let needed = buf.len() + more;
    if needed <= buf.capacity() {
        return Ok(());
    }
    let target = needed
        .max(buf.capacity() * 2)
        .min(MAX_BODY_BYTES.max(needed));
    budget.take(guard, target - buf.capacity())?;
    buf.grow_to(target);
    Ok(())
}

/// Inflates `raw` into a buffer that grows like a body's, each step taken from the budget
/// before it is allocated (a small gzip body cannot inflate past the budget, or the limit).
fn gunzip(raw: &[u8], budget: &BodyBudget, guard: &mut BudgetGuard) -> Result<Bytes, ApiError> {
    let invalid = |e: std::io::Error| {
        ApiError::bad_request("invalid_gzip", format!("the gzip body is invalid: {e}"))
    };
    let mut reader = flate2::read::GzDecoder::new(raw).take(MAX_BODY_BYTES as u64 + 1);
    let mut out = BodyBuf::with_capacity(0);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = reader.read(&mut chunk).map_err(invalid)?;
        if n == 0 {
            break;
        }
        if out.len() + n > MAX_BODY_BYTES {
            return Err(ApiError::too_large(MAX_BODY_BYTES));
        }
        grow(&mut out, n, budget, guard)?;
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_gzip_body_inflates_within_the_budget_and_the_limit() {
        let data = vec![b'a'; 1 << 20];
        let budget = BodyBudget::new(8 << 20);
        let mut guard = BudgetGuard::default();
        let out = gunzip(&gzip(&data), &budget, &mut guard).unwrap();
        assert_eq!(out.len(), data.len());
        assert!(out.iter().all(|b| *b == b'a'));
        // What it inflates to is counted: a small budget refuses it (503), not after the fact.
        let small = BodyBudget::new(256 << 10);
        let err = gunzip(&gzip(&data), &small, &mut BudgetGuard::default()).unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        // A bomb stops at the limit.
        let bomb = gzip(&vec![0u8; MAX_BODY_BYTES + 1]);
        let big = BodyBudget::new(64 << 20);
        let err = gunzip(&bomb, &big, &mut BudgetGuard::default()).unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(gunzip(b"not gzip", &big, &mut BudgetGuard::default()).is_err());
    }

    #[test]
    fn the_budget_refuses_at_once_when_spent_and_refills_on_drop() {
        let budget = BodyBudget::new(10 * UNIT);
        let mut a = BudgetGuard::default();
        budget.take(&mut a, 6 * UNIT).unwrap();
        let mut b = BudgetGuard::default();
        let err = budget.take(&mut b, 5 * UNIT).unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        drop(a);
        budget.take(&mut b, 5 * UNIT).unwrap();
    }
}
