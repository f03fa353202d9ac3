//! The ingest handlers: authenticate (from the header, before reading the body, when the key
//! is there) → read → validate all → write (group commit) → 200.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::auth::basic_auth_key;
use super::body::read_body;
use super::error::ApiError;
use super::event::{RequestMeta, contains_nul_escape, normalize, rfc3339};
use super::{IngestState, Source};
use sluice_store::{AppendRequest, NewEvent};

/// The body of `POST /v1/batch`, members unparsed.
#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Option<&'a RawValue>,
    #[serde(borrow, rename = "sentAt")]
    sent_at: Option<&'a RawValue>,
    #[serde(rename = "writeKey")]
    write_key: Option<std::borrow::Cow<'a, str>>,
}

/// The body of a single-event endpoint: only the write key is looked at here.
#[derive(Deserialize)]
struct SingleBody<'a> {
    #[serde(rename = "writeKey")]
    write_key: Option<std::borrow::Cow<'a, str>>,
}

/// `POST /v1/batch`: `{"batch": [...], "sentAt"?, "writeKey"?}`.
pub async fn batch(
    State(state): State<Arc<IngestState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let header_source = source_from_header(&state, &headers)?;
    // The budget is held until the answer: the events built from the body take as much again.
    let (bytes, _budget) = read_body(&headers, body, &state.budget).await?;
    let doc: BatchBody = parse(&bytes)?;
    let source = match header_source {
        Some(s) => s,
        None => source_from_body(&state, doc.write_key.as_deref())?,
    };
    let Some(batch) = doc.batch else {
        return Err(ApiError::bad_request(
            "invalid_batch",
            "missing `batch` array",
        ));
    };
    let items: Vec<&RawValue> = serde_json::from_str(batch.get())
        .map_err(|_| ApiError::bad_request("invalid_batch", "`batch` must be an array"))?;
    if items.is_empty() {
        return Err(ApiError::bad_request("empty_batch", "`batch` is empty"));
    }
    let received_at = time::OffsetDateTime::now_utc();
    let received_text = rfc3339(received_at);
    let meta = RequestMeta {
        received_at: &received_text,
        sent_at: doc.sent_at,
    };
    let events = items
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            normalize(e, None, &meta).map_err(|why| invalid_event(format!("batch[{i}]: {why}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    store(&state, &source, received_at, events).await
}

/// `POST /v1/{track,identify,page,screen,group,alias}`: one event, its type from the path.
pub async fn single(
    State(state): State<Arc<IngestState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let kind = uri
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let header_source = source_from_header(&state, &headers)?;
    let (bytes, _budget) = read_body(&headers, body, &state.budget).await?;
    let doc: SingleBody = parse(&bytes)?;
    let source = match header_source {
        Some(s) => s,
        None => source_from_body(&state, doc.write_key.as_deref())?,
    };
    let raw: &RawValue = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    let received_at = time::OffsetDateTime::now_utc();
    let received_text = rfc3339(received_at);
    let meta = RequestMeta {
        received_at: &received_text,
        sent_at: None,
    };
    let event = normalize(raw, Some(&kind), &meta).map_err(|why| invalid_event(why.to_string()))?;
    store(&state, &source, received_at, vec![event]).await
}

/// `GET /health`: 200 when the store answers, 503 otherwise.
pub async fn health(State(state): State<Arc<IngestState>>) -> (StatusCode, Json<Value>) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Err(e) => {
            tracing::warn!(error = %e, "health check: store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "store_unavailable"})),
            )
        }
    }
}

/// The source named by the Basic credentials, if the request carries them. An unknown key is
/// refused here, before a byte of the body is read.
fn source_from_header(
    state: &IngestState,
    headers: &HeaderMap,
) -> Result<Option<Arc<Source>>, ApiError> {
    match basic_auth_key(headers)? {
        None => Ok(None),
        Some(key) => state
            .sources
            .get(&key)
            .cloned()
            .map(Some)
            .ok_or_else(|| ApiError::unauthorized("unknown write key")),
    }
}

fn source_from_body(state: &IngestState, key: Option<&str>) -> Result<Arc<Source>, ApiError> {
    let key = key.filter(|k| !k.is_empty()).ok_or_else(|| {
        ApiError::unauthorized(
            "no write key: send it as the HTTP Basic username or as `writeKey` in the body",
        )
    })?;
    state
        .sources
        .get(key)
        .cloned()
        .ok_or_else(|| ApiError::unauthorized("unknown write key"))
}

/// Parses the body as a JSON object of type `T`; rejects `\u0000` anywhere.
fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    if contains_nul_escape(bytes) {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body contains \\u0000, which cannot be stored",
        ));
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Tell "not JSON at all" apart from "JSON, but not an object".
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => ApiError::bad_request("invalid_json", "the body must be a JSON object"),
                Err(e) => ApiError::bad_request(
                    "invalid_json",
                    format!("the body is not valid JSON: {e}"),
                ),
            },
        );
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })
}

async fn store(
    state: &IngestState,
    source: &Source,
    received_at: time::OffsetDateTime,
    events: Vec<NewEvent>,
) -> Result<Json<Value>, ApiError> {
    let total = events.len();
    let request = AppendRequest {
        workspace_id: source.workspace.clone(),
        source_id: source.id.clone(),
        received_at,
        events,
    };
    let outcome = state
        .writer
        .append(request, source.destinations.clone())
        .await?;
    tracing::debug!(source = %source.id, accepted = outcome.accepted, duplicates = outcome.duplicates, "batch stored");
    crate::metrics::events_ingested(&source.workspace, &source.id, outcome.accepted as u64);
    debug_assert_eq!(outcome.accepted + outcome.duplicates, total);
    Ok(Json(json!({
        "success": true,
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
    })))
}

fn invalid_event(why: String) -> ApiError {
    ApiError::bad_request("invalid_event", why)
}
