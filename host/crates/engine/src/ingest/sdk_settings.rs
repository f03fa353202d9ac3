//! The settings the browser SDKs fetch when a page loads them (docs/sources.md), so that a page
//! can load either SDK against Sluice alone, with no vendor service:
//! - RudderStack: `GET <configUrl>/sourceConfig/?writeKey=<key>` (and Basic auth): the source,
//!   with no device-mode destination (delivery is Sluice's job). An unknown key gets 404; a
//!   disabled source `enabled: false`: the SDK handles both as "not configured" and sends
//!   nothing.
//! - Segment: `GET <cdnURL>/v1/projects/<key>/settings`: `Segment.io` as the only integration,
//!   pointing at this host (the page's own `apiHost` wins), with the SDK's own metrics off.
//!   An unknown or disabled key gets 404.
//!
//! A page from an origin its source does not allow gets 403, like its sends would.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::HOST;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{Value, json};

use super::auth::basic_auth_key;
use super::error::ApiError;
use super::{IngestState, cors};

fn unknown() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "invalid_write_key",
        message: "no enabled source has this write key".into(),
        retry_after: None,
    }
}

/// `GET /sourceConfig`: RudderStack's source config.
pub async fn rudderstack(
    State(state): State<Arc<IngestState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let key = match basic_auth_key(&headers)? {
        Some(k) => k,
        None => super::handlers::query_key(&uri).ok_or_else(unknown)?,
    };
    let keys = state.sources.load();
    let now = sluice_core::clock::Clock::now(state.clock.as_ref());
    let (source, enabled) = match keys.find(&key, now) {
        Some(s) => (s, true),
        None => (keys.find_disabled(&key, now).ok_or_else(unknown)?, false),
    };
    cors::check(&headers, &source)?;
    Ok(Json(json!({
        "isHosted": false,
        "source": {
            "id": &*source.id,
            "name": &*source.id,
            "writeKey": key,
            "workspaceId": &*source.workspace,
            "enabled": enabled,
            "config": {},
            "destinations": [],
        }
    })))
}

/// `GET /v1/projects/{key}/settings`: Segment's project settings.
pub async fn segment(
    State(state): State<Arc<IngestState>>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let source = state.source(&key).ok_or_else(unknown)?;
    cors::check(&headers, &source)?;
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    Ok(Json(json!({
        "integrations": {
            "Segment.io": { "apiKey": key, "apiHost": format!("{host}/v1"), "protocol": "http" }
        },
        "plan": {},
        "metrics": { "sampleRate": 0 },
        "remotePlugins": [],
    })))
}
