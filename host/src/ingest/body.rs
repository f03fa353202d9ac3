//! Reading a request body: size limit on the wire *and* after gzip, so a small compressed body
//! cannot inflate past the limit in memory.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH};

use super::error::ApiError;

/// Largest accepted body, compressed or not (RudderStack's and Segment's limit).
pub const MAX_BODY_BYTES: usize = 4000 * 1024;

/// Reads and, if needed, gunzips the body.
pub async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(ApiError::too_large(MAX_BODY_BYTES));
    }
    let raw = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            if is_length_limit(&e) {
                ApiError::too_large(MAX_BODY_BYTES)
            } else {
                ApiError::bad_request(
                    "unreadable_body",
                    format!("could not read the request body: {e}"),
                )
            }
        })?;
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

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}
