//! CORS on ingest, per source (docs/sources.md): browsers may send only from the origins the
//! source allows (`allowed_origins`).
//!
//! Two checks, because a browser sends some requests without asking first:
//! - The preflight (`OPTIONS`) carries no write key, so it is answered for any origin that
//!   *some* enabled source allows (tower-http's `CorsLayer`, with the methods and the request
//!   headers the SDKs send mirrored, credentials allowed, cached for two hours). Answers to an
//!   allowed origin carry `Access-Control-Allow-Origin` (that origin, never `*`, since the
//!   SDKs may send credentials) and expose `Retry-After`.
//! - Every request that carries an `Origin` is checked against *its* source once the key is
//!   known: another origin gets 403 `origin_not_allowed`, before anything is stored. This also
//!   holds for the requests browsers send without a preflight (`text/plain` bodies, beacons).
//!
//! A request without `Origin` does not come from a browser page (servers, apps) and is not
//! concerned.

use std::sync::Arc;
use std::time::Duration;

use axum::http::header::{ORIGIN, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use super::error::ApiError;
use super::{IngestState, Source};

/// How long a browser may cache a preflight answer (Chromium caps it at two hours).
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(7200);

/// The layer that answers preflights and adds CORS headers for origins some source allows.
pub fn layer(state: Arc<IngestState>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin
                .to_str()
                .is_ok_and(|o| state.sources.load().any_allows(o))
        }))
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .allow_credentials(true)
        .expose_headers([RETRY_AFTER])
        .max_age(PREFLIGHT_MAX_AGE)
}

/// Refuses a browser request whose origin `source` does not allow.
pub fn check(headers: &HeaderMap, source: &Source) -> Result<(), ApiError> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    if source.allowed_origins.iter().any(|o| o.matches(origin)) {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "origin_not_allowed",
        format!(
            "origin `{origin}` may not send to this source (its allowed_origins do not list it)"
        ),
    ))
}
