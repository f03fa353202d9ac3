//! Validating and normalising events as Segment/RudderStack clients send them.
//!
//! Rules (a violation rejects the whole request with 400; nothing is stored):
//! - an event is a JSON object whose `type` is track, identify, page, screen, group or alias
//!   (single-event endpoints set it from the path);
//! - it has a non-empty `userId` or `anonymousId` (strings; numbers are accepted and kept);
//! - `track` events name the `event`.
//!
//! Normalisation: a missing `messageId` gets a UUID, `receivedAt` is set by the server, a batch's
//! `sentAt` is copied onto events without one, and a body-level `writeKey` is not stored.

use serde_json::{Map, Value};

use crate::store::NewEvent;

pub const EVENT_TYPES: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];

/// Values shared by every event of one request.
pub struct RequestMeta<'a> {
    /// Server receive time, RFC 3339.
    pub received_at: &'a str,
    /// The batch's `sentAt`, if any.
    pub sent_at: Option<&'a Value>,
}

/// The server's receive time as ingest stamps it (`receivedAt`), RFC 3339.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Validates and normalises one event; the error is the reason (without position).
pub fn normalize(
    value: Value,
    forced_type: Option<&str>,
    meta: &RequestMeta,
) -> Result<NewEvent, String> {
    let Value::Object(mut event) = value else {
        return Err("an event must be a JSON object".into());
    };
    if let Some(t) = forced_type {
        event.insert("type".into(), Value::String(t.into()));
    }
    match event.get("type") {
        Some(Value::String(t)) if EVENT_TYPES.contains(&t.as_str()) => {}
        Some(Value::String(t)) => {
            return Err(format!(
                "unknown event type `{t}` (expected one of {})",
                EVENT_TYPES.join(", ")
            ));
        }
        Some(_) => return Err("`type` must be a string".into()),
        None => return Err("missing `type`".into()),
    }
    if event.get("type").and_then(Value::as_str) == Some("track")
        && event
            .get("event")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        return Err("a track event needs a non-empty `event` name".into());
    }
    let user_id = id_field(&event, "userId")?;
    let anonymous_id = id_field(&event, "anonymousId")?;
    let ordering_key = match (user_id, anonymous_id) {
        (Some(u), _) => u,
        (None, Some(a)) => a,
        (None, None) => return Err("neither `userId` nor `anonymousId` is set".into()),
    };

    let message_id = match event.get("messageId") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::Number(n)) => n.to_string(),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            let m = uuid::Uuid::new_v4().to_string();
            event.insert("messageId".into(), Value::String(m.clone()));
            m
        }
        Some(_) => return Err("`messageId` must be a string".into()),
    };
    if message_id.len() > 256 {
        return Err("`messageId` is longer than 256 characters".into());
    }
    event.remove("writeKey");
    event.insert("receivedAt".into(), Value::String(meta.received_at.into()));
    if let Some(sent_at) = meta.sent_at
        && !event.contains_key("sentAt")
    {
        event.insert("sentAt".into(), sent_at.clone());
    }
    let event_json =
        serde_json::to_string(&event).map_err(|e| format!("cannot encode event: {e}"))?;
    Ok(NewEvent {
        message_id,
        ordering_key,
        event_json,
    })
}

/// A user id as a non-empty string, if present; numbers count (some SDKs send numeric ids).
fn id_field(event: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match event.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() > 512 => {
            Err(format!("`{name}` is longer than 512 characters"))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(format!("`{name}` must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const META: RequestMeta = RequestMeta {
        received_at: "2026-01-01T00:00:00Z",
        sent_at: None,
    };

    #[test]
    fn user_id_wins_over_anonymous_id() {
        let e = normalize(
            json!({"type":"identify","userId":"u1","anonymousId":"a1"}),
            None,
            &META,
        )
        .unwrap();
        assert_eq!(e.ordering_key, "u1");
        let e = normalize(
            json!({"type":"identify","userId":"","anonymousId":"a1"}),
            None,
            &META,
        )
        .unwrap();
        assert_eq!(e.ordering_key, "a1");
        let e = normalize(json!({"type":"identify","userId":42}), None, &META).unwrap();
        assert_eq!(e.ordering_key, "42");
    }

    #[test]
    fn missing_ids_and_types_are_rejected() {
        assert_eq!(
            normalize(json!({"type":"identify"}), None, &META).unwrap_err(),
            "neither `userId` nor `anonymousId` is set"
        );
        assert!(
            normalize(json!({"type":"bogus","userId":"u"}), None, &META)
                .unwrap_err()
                .contains("unknown event type")
        );
        assert!(
            normalize(json!({"type":"track","userId":"u"}), None, &META)
                .unwrap_err()
                .contains("`event` name")
        );
        assert!(normalize(json!([1]), None, &META).is_err());
    }

    #[test]
    fn message_id_is_generated_and_write_key_dropped() {
        let e = normalize(
            json!({"userId":"u","event":"E","writeKey":"k"}),
            Some("track"),
            &META,
        )
        .unwrap();
        let v: Value = serde_json::from_str(&e.event_json).unwrap();
        assert_eq!(v["messageId"], Value::String(e.message_id.clone()));
        assert_eq!(e.message_id.len(), 36);
        assert_eq!(v["type"], "track");
        assert_eq!(v["receivedAt"], "2026-01-01T00:00:00Z");
        assert!(v.get("writeKey").is_none());
    }

    #[test]
    fn batch_sent_at_is_copied() {
        let sent = json!("2026-01-01T00:00:01Z");
        let meta = RequestMeta {
            received_at: "x",
            sent_at: Some(&sent),
        };
        let e = normalize(
            json!({"type":"page","anonymousId":"a","messageId":"m"}),
            None,
            &meta,
        )
        .unwrap();
        let v: Value = serde_json::from_str(&e.event_json).unwrap();
        assert_eq!(v["sentAt"], sent);
        assert_eq!(e.message_id, "m");
    }
}
