//! Reading a request body: size limit on the wire *and* after gzip, so a small compressed body
//! cannot inflate past the limit in memory.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_ENCODING;
use bytes::BytesMut;
use futures_util::StreamExt;

use super::error::ApiError;

/// Largest accepted body, compressed or not (RudderStack's and Segment's limit).
pub const MAX_BODY_BYTES: usize = 4000 * 1024;

/// Oversized bodies are still read (and discarded) up to this size before answering 413, so
/// that a client that writes its whole body before reading the response sees the 413 rather
/// than a broken connection. Beyond it the connection is cut.
const MAX_DRAIN_BYTES: usize = 64 << 20;

/// Reads and, if needed, gunzips the body.
pub async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let raw = read_limited(body).await?;
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(raw),
        Some("gzip") | Some("x-gzip") => gunzip(&raw),
        Some(other) => Err(ApiError::bad_request(
            "unsupported_encoding",
            format!("unsupported Content-Encoding `{other}` (use gzip or none)"),
        )),
    }
}

/// Collects at most `MAX_BODY_BYTES`; past that, drains (bounded) and reports 413.
async fn read_limited(body: Body) -> Result<Bytes, ApiError> {
    let mut body = body.into_data_stream();
    let mut buf = BytesMut::new();
    let mut total = 0usize;
    while let Some(chunk) = body.next().await {
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
            buf.extend_from_slice(&chunk);
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(ApiError::too_large(MAX_BODY_BYTES));
    }
    Ok(buf.freeze())
}

fn gunzip(raw: &[u8]) -> Result<Bytes, ApiError> {
    let mut out = Vec::with_capacity(raw.len() * 4);
    let mut reader = flate2::read::GzDecoder::new(raw).take(MAX_BODY_BYTES as u64 + 1);
    reader.read_to_end(&mut out).map_err(|e| {
        ApiError::bad_request("invalid_gzip", format!("the gzip body is invalid: {e}"))
    })?;
    if out.len() > MAX_BODY_BYTES {
        return Err(ApiError::too_large(MAX_BODY_BYTES));
    }
    Ok(Bytes::from(out))
}
