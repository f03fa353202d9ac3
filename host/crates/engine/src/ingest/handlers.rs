//! The ingest handlers: authenticate (from the header, before reading the body, when the key
//! is there) → read → validate all → write (group commit) → 200.
//!
//! The time a request was received (`receivedAt` of its events, and so the minute its
//! messageIds are kept under for dedup) is taken from the state's [`Clock`], once per request:
//! every event of a request carries the same time. Validation and stamping are plain
//! functions of the body and that time ([`batch_events`], [`single_event`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::extract::State;
use axum::http::{Extensions, HeaderMap, StatusCode, Uri};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::auth::basic_auth_key;
use super::body::read_body;
use super::cors;
use super::error::ApiError;
use super::event::{RequestMeta, contains_nul_escape, normalize, rfc3339};
use super::limits::{Limits, client_ip};
use super::{IngestState, Source};
use sluice_core::clock::Clock;
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
    uri: Uri,
    extensions: Extensions,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let header_source = source_from_header(&state, &headers, &uri)?;
    // The budget is held until the answer: the events built from the body take as much again.
    let (bytes, _budget) = read_body(&headers, body, &state.budget).await?;
    let doc: BatchBody = parse(&bytes)?;
    let source = match header_source {
        Some(s) => s,
        None => source_from_body(&state, doc.write_key.as_deref())?,
    };
    cors::check(&headers, &source)?;
    let received = Received::now(state.clock.as_ref());
    let events = batch_events(&doc, &received, &source.limits)?;
    let client = client_ip(peer(&extensions), &headers, &state.trusted_proxies);
    source.limits.admit(client, events.len())?;
    let request = append_request(&source, &received, events);
    store(&state, &source, request).await
}

/// `POST /v1/{track,identify,page,screen,group,alias}`: one event, its type from the path.
pub async fn single(
    State(state): State<Arc<IngestState>>,
    uri: Uri,
    extensions: Extensions,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let last = uri.path().rsplit('/').next().unwrap_or_default();
    let kind = short_kind(last).unwrap_or(last).to_string();
    let header_source = source_from_header(&state, &headers, &uri)?;
    let (bytes, _budget) = read_body(&headers, body, &state.budget).await?;
    let doc: SingleBody = parse(&bytes)?;
    let source = match header_source {
        Some(s) => s,
        None => source_from_body(&state, doc.write_key.as_deref())?,
    };
    cors::check(&headers, &source)?;
    let received = Received::now(state.clock.as_ref());
    let event = single_event(&bytes, &kind, &received, &source.limits)?;
    let client = client_ip(peer(&extensions), &headers, &state.trusted_proxies);
    source.limits.admit(client, 1)?;
    let request = append_request(&source, &received, vec![event]);
    store(&state, &source, request).await
}

/// The event type of one of Segment's short paths (`/v1/t`, the browser SDK's), if it is one.
pub fn short_kind(segment: &str) -> Option<&'static str> {
    SHORT_PATHS
        .iter()
        .find(|(short, _)| *short == segment)
        .map(|(_, kind)| *kind)
}

/// Segment's browser SDK posts single events to `/v1/<letter>` (and batches to `/v1/b`).
pub const SHORT_PATHS: [(&str, &str); 6] = [
    ("t", "track"),
    ("i", "identify"),
    ("p", "page"),
    ("s", "screen"),
    ("g", "group"),
    ("a", "alias"),
];

/// The connection's peer, as the listener records it (absent when a test drives the router).
fn peer(extensions: &Extensions) -> Option<SocketAddr> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// When a request was received: the clock's time, and the same as `receivedAt` writes it.
struct Received {
    at: OffsetDateTime,
    text: String,
}

impl Received {
    fn now(clock: &dyn Clock) -> Received {
        let at = clock.now();
        Received {
            at,
            text: rfc3339(at),
        }
    }
}

/// The events of a batch body, each validated and stamped; one invalid event rejects all.
fn batch_events(
    doc: &BatchBody,
    received: &Received,
    limits: &Limits,
) -> Result<Vec<NewEvent>, ApiError> {
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
    limits.check_batch(items.len())?;
    for (i, e) in items.iter().enumerate() {
        limits.check_event(e.get().len(), &format!("batch[{i}]"))?;
    }
    let meta = RequestMeta {
        received_at: &received.text,
        sent_at: doc.sent_at,
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            normalize(e, None, &meta).map_err(|why| invalid_event(format!("batch[{i}]: {why}")))
        })
        .collect()
}

/// The event of a single-event body, its type `kind` from the path, validated and stamped.
fn single_event(
    bytes: &[u8],
    kind: &str,
    received: &Received,
    limits: &Limits,
) -> Result<NewEvent, ApiError> {
    limits.check_event(bytes.len(), "the event")?;
    let raw: &RawValue = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    let meta = RequestMeta {
        received_at: &received.text,
        sent_at: None,
    };
    normalize(raw, Some(kind), &meta).map_err(|why| invalid_event(why.to_string()))
}

/// What the writer appends for one request of `source`.
fn append_request(source: &Source, received: &Received, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest {
        workspace_id: source.workspace.clone(),
        source_id: source.id.clone(),
        received_at: received.at,
        events,
    }
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
/// The source of the key sent before the body: the HTTP Basic username, else `writeKey` in
/// the URL's query (beacons and `keepalive` sends on page unload carry no headers of their
/// own, e.g. RudderStack's `/beacon/v1/batch?writeKey=…`).
fn source_from_header(
    state: &IngestState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Option<Arc<Source>>, ApiError> {
    let key = match basic_auth_key(headers)? {
        Some(key) => Some(key),
        None => query_key(uri),
    };
    match key {
        None => Ok(None),
        Some(key) => state
            .source(&key)
            .map(Some)
            .ok_or_else(|| ApiError::unauthorized("unknown write key")),
    }
}

pub(super) fn query_key(uri: &Uri) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == "writeKey")
        .map(|(_, v)| v.into_owned())
        .filter(|k| !k.is_empty())
}

fn source_from_body(state: &IngestState, key: Option<&str>) -> Result<Arc<Source>, ApiError> {
    let key = key.filter(|k| !k.is_empty()).ok_or_else(|| {
        ApiError::unauthorized(
            "no write key: send it as the HTTP Basic username, as `writeKey` in the body, or as \
             `?writeKey=` in the URL",
        )
    })?;
    state
        .source(key)
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
    request: AppendRequest,
) -> Result<Json<Value>, ApiError> {
    let total = request.events.len();
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use sluice_core::clock::{Clock, ManualClock};
    use sluice_store::dedup::minute_of;
    use time::format_description::well_known::Rfc3339;

    use super::*;

    fn at(rfc3339: &str) -> OffsetDateTime {
        OffsetDateTime::parse(rfc3339, &Rfc3339).unwrap()
    }

    fn no_limits() -> Limits {
        Limits::new(&Default::default())
    }

    fn source() -> Source {
        Source {
            id: "web".into(),
            workspace: "acme".into(),
            destinations: Arc::from(vec!["hook".to_string()]),
            allowed_origins: Arc::from(vec![]),
            limits: Arc::new(no_limits()),
        }
    }

    fn received_at_of(e: &NewEvent) -> String {
        let v: Value = serde_json::from_str(&e.json).unwrap();
        v["receivedAt"].as_str().unwrap().to_string()
    }

    const BATCH: &str = r#"{"batch":[
        {"type":"track","event":"A","userId":"u1","messageId":"m1"},
        {"type":"identify","userId":"u2","messageId":"m2","receivedAt":"1999-01-01T00:00:00Z"}
    ],"sentAt":"2026-03-01T11:00:00Z"}"#;

    #[test]
    fn a_batch_is_stamped_with_the_clock_time_once_for_all_its_events() {
        let clock = ManualClock::new(at("2026-03-01T12:00:00.25Z"));
        let doc: BatchBody = parse(BATCH.as_bytes()).unwrap();
        let received = Received::now(&clock);
        let events = batch_events(&doc, &received, &no_limits()).unwrap();
        let stamps: Vec<String> = events.iter().map(received_at_of).collect();
        assert_eq!(
            stamps,
            ["2026-03-01T12:00:00.25Z", "2026-03-01T12:00:00.25Z"],
            "the client's own receivedAt is replaced too"
        );
        let request = append_request(&source(), &received, events);
        assert_eq!(request.received_at, at("2026-03-01T12:00:00.25Z"));
        assert_eq!(
            (&*request.source_id, &*request.workspace_id),
            ("web", "acme")
        );
    }

    #[test]
    fn the_next_request_takes_the_time_the_clock_moved_to() {
        let clock = ManualClock::new(at("2026-03-01T12:00:00Z"));
        let doc: BatchBody = parse(BATCH.as_bytes()).unwrap();
        let first = Received::now(&clock);
        clock.advance(Duration::from_millis(1500));
        let second = Received::now(&clock);
        assert_eq!(second.at - first.at, time::Duration::milliseconds(1500));
        let events = batch_events(&doc, &second, &no_limits()).unwrap();
        assert_eq!(received_at_of(&events[0]), "2026-03-01T12:00:01.5Z");
        // Setting the clock back is obeyed too: ingest keeps no time of its own.
        clock.set(at("2025-12-31T23:59:59Z"));
        let e = single_event(
            br#"{"userId":"u","name":"Home"}"#,
            "page",
            &Received::now(&clock),
            &no_limits(),
        )
        .unwrap();
        assert_eq!(received_at_of(&e), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn the_dedup_minute_of_a_request_follows_the_clock() {
        // The store files a request's messageIds under the minute of its `received_at`.
        let clock = ManualClock::new(at("2026-03-01T12:00:59.9Z"));
        let doc: BatchBody = parse(BATCH.as_bytes()).unwrap();
        let stamp = |clock: &ManualClock| {
            let received = Received::now(clock);
            let events = batch_events(&doc, &received, &no_limits()).unwrap();
            minute_of(append_request(&source(), &received, events).received_at)
        };
        let before = stamp(&clock);
        assert_eq!(
            i64::from(before),
            at("2026-03-01T12:00:00Z").unix_timestamp() / 60
        );
        clock.advance(Duration::from_millis(100));
        assert_eq!(
            stamp(&clock),
            before + 1,
            "the next minute, to the millisecond"
        );
        clock.advance(Duration::from_secs(3600));
        assert_eq!(stamp(&clock), before + 61);
    }

    #[test]
    fn a_single_event_takes_its_type_from_the_path_and_its_time_from_the_clock() {
        let clock = ManualClock::new(at("2026-03-01T12:00:00Z"));
        let e = single_event(
            br#"{"type":"track","userId":"u","event":"E","writeKey":"k"}"#,
            "identify",
            &Received::now(&clock),
            &no_limits(),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&e.json).unwrap();
        assert_eq!(v["type"], "identify");
        assert_eq!(v["receivedAt"], "2026-03-01T12:00:00Z");
        assert!(v.get("writeKey").is_none());
        assert_eq!(
            clock.now(),
            at("2026-03-01T12:00:00Z"),
            "reading does not move it"
        );
    }

    #[test]
    fn an_invalid_event_rejects_the_batch_and_names_its_position() {
        let clock = ManualClock::new(at("2026-03-01T12:00:00Z"));
        let doc: BatchBody =
            parse(br#"{"batch":[{"type":"page","userId":"u"},{"type":"page"}]}"#).unwrap();
        let err = batch_events(&doc, &Received::now(&clock), &no_limits()).unwrap_err();
        assert_eq!(err.code, "invalid_event");
        assert_eq!(
            err.message,
            "batch[1]: neither `userId` nor `anonymousId` is set"
        );
        let doc: BatchBody = parse(br#"{"batch":[]}"#).unwrap();
        let err = batch_events(&doc, &Received::now(&clock), &no_limits()).unwrap_err();
        assert_eq!(err.code, "empty_batch");
    }
}
