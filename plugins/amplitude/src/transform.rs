//! Segment event → Amplitude HTTP V2 event.
//!
//! Contract (one Amplitude event per Segment event):
//! - `user_id` = `userId`, `device_id` = `anonymousId` (each only when non-empty; Amplitude needs
//!   one of them, so an event with neither is aborted with `missing_user`).
//! - `event_type`: track → its `event` (required, else `missing_event_name`); page →
//!   `Viewed <name> Page` (`Loaded a Page` without a name); screen → `Viewed <name> Screen`
//!   (`Loaded a Screen`); identify → `$identify` with `user_properties: {"$set": traits}`.
//!   Other types (group, alias, …) have no HTTP V2 equivalent and are skipped (no payload:
//!   counted as delivered).
//! - `time` = when the event happened (the first readable of `timestamp`, `originalTimestamp`
//!   and `receivedAt`: `Event::occurred_at`) in Unix milliseconds; the event is aborted
//!   (`invalid_timestamp`) only when one is present and none is readable.
//! - `event_properties` = `properties` (track, page, screen); `insert_id` = `messageId`, which
//!   Amplitude deduplicates on for 7 days, so a retried request creates no duplicates;
//!   `ip` = `context.ip`, `library` = `sluice`.

use serde_json::{Map, Value, json};
use sluice_sdk::{Event, EventType, TransformError};

/// The Amplitude event for `event`, or `None` when the type has no equivalent.
pub fn amplitude_event(event: &Event) -> Result<Option<Value>, TransformError> {
    let nonempty = |id: &Option<String>| id.clone().filter(|id| !id.is_empty());
    let user_id = nonempty(&event.user_id);
    let device_id = nonempty(&event.anonymous_id);
    if user_id.is_none() && device_id.is_none() {
        return Err(TransformError::abort(
            "missing_user",
            "Amplitude needs a user_id or a device_id: the event has neither userId nor anonymousId",
        ));
    }
    let named = |kind: &str, fallback: &str| match event.name.as_deref() {
        Some(name) if !name.trim().is_empty() => format!("Viewed {name} {kind}"),
        _ => fallback.to_owned(),
    };
    let event_type = match &event.event_type {
        EventType::Track => match event.event.as_deref() {
            Some(name) if !name.trim().is_empty() => name.to_owned(),
            _ => {
                return Err(TransformError::abort(
                    "missing_event_name",
                    "a track event needs an `event` name (Amplitude's event_type)",
                ));
            }
        },
        EventType::Page => named("Page", "Loaded a Page"),
        EventType::Screen => named("Screen", "Loaded a Screen"),
        EventType::Identify => "$identify".to_owned(),
        _ => return Ok(None),
    };

    let mut out = Map::new();
    out.insert("event_type".into(), json!(event_type));
    if let Some(user_id) = user_id {
        out.insert("user_id".into(), json!(user_id));
    }
    if let Some(device_id) = device_id {
        out.insert("device_id".into(), json!(device_id));
    }
    if let Some(at) = event.occurred_at()? {
        let ms = at.unix_timestamp_nanos() / 1_000_000;
        out.insert("time".into(), json!(i64::try_from(ms).unwrap_or(i64::MAX)));
    }
    if event.event_type == EventType::Identify {
        if event.traits.is_object() {
            out.insert("user_properties".into(), json!({ "$set": event.traits }));
        }
    } else if event.properties.is_object() {
        out.insert("event_properties".into(), event.properties.clone());
    }
    out.insert("insert_id".into(), json!(event.message_id));
    if let Some(ip) = event.context.get("ip").and_then(Value::as_str) {
        out.insert("ip".into(), json!(ip));
    }
    out.insert("library".into(), json!("sluice"));
    Ok(Some(Value::Object(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transform(event: Value) -> Result<Option<Value>, TransformError> {
        amplitude_event(&Event::from_value(event).expect("a valid event"))
    }

    #[test]
    fn track_maps_to_an_event_with_properties_time_and_insert_id() {
        let out = transform(json!({
            "type": "track", "messageId": "m-1", "userId": "user-1", "anonymousId": "anon-1",
            "event": "Order Completed", "properties": {"total": 30},
            "timestamp": "2026-11-25T00:00:01.250+01:00", "context": {"ip": "203.0.113.9"}
        }));
        assert_eq!(
            out,
            Ok(Some(json!({
                "event_type": "Order Completed", "user_id": "user-1", "device_id": "anon-1",
                "time": 1_795_561_201_250_i64, "event_properties": {"total": 30},
                "insert_id": "m-1", "ip": "203.0.113.9", "library": "sluice"
            })))
        );
    }

    #[test]
    fn identify_sets_user_properties() {
        let out = transform(json!({
            "type": "identify", "messageId": "m-2", "userId": "user-1",
            "traits": {"plan": "pro"}, "receivedAt": "2026-11-25T00:00:00Z"
        }))
        .expect("ok")
        .expect("an event");
        assert_eq!(out["event_type"], "$identify");
        assert_eq!(out["user_properties"], json!({"$set": {"plan": "pro"}}));
        assert_eq!(out["time"], 1_795_564_800_000_i64);
        assert!(out.get("event_properties").is_none());
        assert!(out.get("device_id").is_none());
    }

    #[test]
    fn page_and_screen_names() {
        let name =
            |event: Value| transform(event).expect("ok").expect("an event")["event_type"].clone();
        let page = json!({"type": "page", "messageId": "m", "anonymousId": "a", "name": "Pricing"});
        assert_eq!(name(page), "Viewed Pricing Page");
        let page = json!({"type": "page", "messageId": "m", "anonymousId": "a"});
        assert_eq!(name(page), "Loaded a Page");
        let screen = json!({"type": "screen", "messageId": "m", "userId": "u", "name": "Home"});
        assert_eq!(name(screen), "Viewed Home Screen");
        let screen = json!({"type": "screen", "messageId": "m", "userId": "u", "name": " "});
        assert_eq!(name(screen), "Loaded a Screen");
    }

    #[test]
    fn other_types_are_skipped_and_bad_events_aborted() {
        let group = json!({"type": "group", "messageId": "m", "userId": "u", "groupId": "g"});
        assert_eq!(transform(group), Ok(None));
        let code = |event: Value| match transform(event) {
            Err(TransformError::Abort(f)) => f.code,
            other => panic!("expected an abort, got {other:?}"),
        };
        assert_eq!(
            code(json!({"type": "track", "messageId": "m", "event": "E"})),
            "missing_user"
        );
        assert_eq!(
            code(
                json!({"type": "track", "messageId": "m", "userId": "", "anonymousId": "", "event": "E"})
            ),
            "missing_user"
        );
        assert_eq!(
            code(json!({"type": "track", "messageId": "m", "userId": "u"})),
            "missing_event_name"
        );
        assert_eq!(
            code(
                json!({"type": "track", "messageId": "m", "userId": "u", "event": "E", "timestamp": "yesterday"})
            ),
            "invalid_timestamp"
        );
    }
}
