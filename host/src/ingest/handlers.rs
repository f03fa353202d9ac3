//! The ingest handlers: parse → authenticate → validate all → store in one transaction → 200.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{Value, json};

use super::auth::basic_auth_key;
use super::body::read_body;
use super::error::ApiError;
use super::event::{RequestMeta, normalize, now_rfc3339};
use super::{IngestState, Source};
use crate::store::NewEvent;

/// `POST /v1/batch`: `{"batch": [...], "sentAt"?, "writeKey"?}`.
pub async fn batch(
    State(state): State<Arc<IngestState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let (source, mut doc) = parse_and_authenticate(&state, &headers, body).await?;
    let batch = match doc.remove("batch") {
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_batch",
                "`batch` must be an array",
            ));
        }
        None => {
            return Err(ApiError::bad_request(
                "invalid_batch",
                "missing `batch` array",
            ));
        }
    };
    if batch.is_empty() {
        return Err(ApiError::bad_request("empty_batch", "`batch` is empty"));
    }
    let received_at = now_rfc3339();
    let meta = RequestMeta {
        received_at: &received_at,
        sent_at: doc.get("sentAt"),
    };
    let events = batch
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            normalize(e, None, &meta).map_err(|why| invalid_event(format!("batch[{i}]: {why}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    store(&state, &source, events).await
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
    let (source, doc) = parse_and_authenticate(&state, &headers, body).await?;
    let received_at = now_rfc3339();
    let meta = RequestMeta {
        received_at: &received_at,
        sent_at: None,
    };
    let event = normalize(Value::Object(doc), Some(&kind), &meta).map_err(invalid_event)?;
    store(&state, &source, vec![event]).await
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

async fn parse_and_authenticate(
    state: &IngestState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Arc<Source>, serde_json::Map<String, Value>), ApiError> {
    let header_key = basic_auth_key(headers)?;
    let bytes = read_body(headers, body).await?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    let Value::Object(doc) = doc else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body must be a JSON object",
        ));
    };
    let key = match header_key {
        Some(k) => k,
        None => match doc.get("writeKey") {
            Some(Value::String(k)) if !k.is_empty() => k.clone(),
            _ => {
                return Err(ApiError::unauthorized(
                    "no write key: send it as the HTTP Basic username or as `writeKey` in the body",
                ));
            }
        },
    };
    let source = state
        .sources
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::unauthorized("unknown write key"))?;
    Ok((source, doc))
}

async fn store(
    state: &IngestState,
    source: &Source,
    events: Vec<NewEvent>,
) -> Result<Json<Value>, ApiError> {
    let outcome = state
        .store
        .job_insert_many(&source.workspace, &source.id, &source.destinations, events)
        .await?;
    if outcome.jobs > 0 {
        for d in &source.destinations {
            state.wakers.wake(d);
        }
    }
    tracing::debug!(source = %source.id, accepted = outcome.accepted, duplicates = outcome.duplicates, jobs = outcome.jobs, "batch stored");
    Ok(Json(json!({
        "success": true,
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
    })))
}

fn invalid_event(why: String) -> ApiError {
    ApiError::bad_request("invalid_event", why)
}
