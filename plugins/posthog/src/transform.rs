//! Segment event → PostHog capture event.
//!
//! Contract (one PostHog event per Segment event):
//! - `distinct_id` = `userId`, else `anonymousId` (an event with neither is aborted with
//!   `missing_user`).
//! - `event`: track → its `event` (required, else `missing_event_name`); page → `$pageview`
//!   (with `$current_url` from `properties.url`); screen → `$screen` (with `$screen_name`);
//!   identify → `$identify` with `$set` = traits, and `$anon_distinct_id` = `anonymousId` when
//!   both ids are set, which links the anonymous history to the user; alias →
//!   `$create_alias` with `alias` = `previousId` (required, else `missing_previous_id`). Other
//!   types (group, …) are skipped (no payload: counted as delivered).
//! - `properties` = the Segment `properties` (track, page, screen) plus `$lib: "sluice"` and
//!   `$ip` from `context.ip`; `timestamp` = when the event happened (the first readable of
//!   `timestamp`, `originalTimestamp` and `receivedAt`: `Event::occurred_at`) in RFC 3339, the
//!   event aborted (`invalid_timestamp`) only when one is present and none is readable;
//!   `uuid` = `messageId` when it is a UUID, which PostHog deduplicates on.

use serde_json::{Map, Value, json};
use sluice_sdk::time::format_description::well_known::Rfc3339;
use sluice_sdk::{Event, EventType, TransformError};

/// The PostHog event for `event`, or `None` when the type has no equivalent.
pub fn posthog_event(event: &Event) -> Result<Option<Value>, TransformError> {
    let Some(distinct_id) = event.user_key() else {
        return Err(TransformError::abort(
            "missing_user",
            "PostHog needs a distinct_id: the event has neither userId nor anonymousId",
        ));
    };
    let mut properties = match (&event.event_type, &event.properties) {
        (EventType::Track | EventType::Page | EventType::Screen, Value::Object(p)) => p.clone(),
        _ => Map::new(),
    };
    let name = match &event.event_type {
        EventType::Track => match event.event.as_deref() {
            Some(name) if !name.trim().is_empty() => name.to_owned(),
            _ => {
                return Err(TransformError::abort(
                    "missing_event_name",
                    "a track event needs an `event` name",
                ));
            }
        },
        EventType::Page => {
            if let Some(url) = event.properties.get("url").and_then(Value::as_str) {
                properties.insert("$current_url".into(), json!(url));
            }
            "$pageview".to_owned()
        }
        EventType::Screen => {
            if let Some(name) = &event.name {
                properties.insert("$screen_name".into(), json!(name));
            }
            "$screen".to_owned()
        }
        EventType::Identify => {
            if event.traits.is_object() {
                properties.insert("$set".into(), event.traits.clone());
            }
            let anonymous = event.anonymous_id.as_deref().filter(|a| !a.is_empty());
            if let Some(anonymous) = anonymous.filter(|a| *a != distinct_id) {
                properties.insert("$anon_distinct_id".into(), json!(anonymous));
            }
            "$identify".to_owned()
        }
        EventType::Alias => {
            let Some(previous) = event.previous_id.as_deref().filter(|p| !p.is_empty()) else {
                return Err(TransformError::abort(
                    "missing_previous_id",
                    "an alias event needs a `previousId`",
                ));
            };
            properties.insert("alias".into(), json!(previous));
            "$create_alias".to_owned()
        }
        _ => return Ok(None),
    };
    properties.insert("$lib".into(), json!("sluice"));
    if let Some(ip) = event.context.get("ip").and_then(Value::as_str) {
        properties.insert("$ip".into(), json!(ip));
    }

    let mut out = Map::new();
    out.insert("event".into(), json!(name));
    out.insert("distinct_id".into(), json!(distinct_id));
    out.insert("properties".into(), Value::Object(properties));
    if let Some(at) = event.occurred_at()? {
        let text = at
            .format(&Rfc3339)
            .map_err(|err| TransformError::abort("invalid_timestamp", err.to_string()))?;
        out.insert("timestamp".into(), json!(text));
    }
    if is_uuid(&event.message_id) {
        out.insert("uuid".into(), json!(event.message_id.to_ascii_lowercase()));
    }
    Ok(Some(Value::Object(out)))
}

/// Whether `text` is a UUID in its hyphenated form (8-4-4-4-12 hex digits).
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transform(event: Value) -> Result<Option<Value>, TransformError> {
        posthog_event(&Event::from_value(event).expect("a valid event"))
    }

    fn code(event: Value) -> String {
        match transform(event) {
            Err(TransformError::Abort(f)) => f.code,
            other => panic!("expected an abort, got {other:?}"),
        }
    }

    #[test]
    fn track_maps_to_a_capture_event() {
        let out = transform(json!({
            "type": "track", "messageId": "0190B2C4-1C2D-7E3F-8A9B-0C1D2E3F4A5B",
            "userId": "user-1", "anonymousId": "anon-1", "event": "Order Completed",
            "properties": {"total": 30}, "timestamp": "2026-11-25T01:00:00+01:00",
            "context": {"ip": "203.0.113.9"}
        }));
        assert_eq!(
            out,
            Ok(Some(json!({
                "event": "Order Completed", "distinct_id": "user-1",
                "properties": {"total": 30, "$lib": "sluice", "$ip": "203.0.113.9"},
                "timestamp": "2026-11-25T01:00:00+01:00",
                "uuid": "0190b2c4-1c2d-7e3f-8a9b-0c1d2e3f4a5b"
            })))
        );
    }

    #[test]
    fn identify_sets_person_properties_and_links_the_anonymous_id() {
        let out = transform(json!({
            "type": "identify", "messageId": "m-2", "userId": "user-1", "anonymousId": "anon-1",
            "traits": {"plan": "pro"}
        }))
        .expect("ok")
        .expect("an event");
        assert_eq!(out["event"], "$identify");
        assert_eq!(out["distinct_id"], "user-1");
        assert_eq!(out["properties"]["$set"], json!({"plan": "pro"}));
        assert_eq!(out["properties"]["$anon_distinct_id"], "anon-1");
        assert!(out.get("uuid").is_none(), "m-2 is not a UUID");
        assert!(out.get("timestamp").is_none());
    }

    #[test]
    fn page_screen_and_alias() {
        let page = transform(json!({"type": "page", "messageId": "m", "anonymousId": "a",
            "properties": {"url": "https://example.com/pricing"}}))
        .expect("ok")
        .expect("an event");
        assert_eq!(page["event"], "$pageview");
        assert_eq!(page["distinct_id"], "a");
        assert_eq!(
            page["properties"]["$current_url"],
            "https://example.com/pricing"
        );
        let screen =
            transform(json!({"type": "screen", "messageId": "m", "userId": "u", "name": "Home"}))
                .expect("ok")
                .expect("an event");
        assert_eq!(
            (
                screen["event"].as_str(),
                screen["properties"]["$screen_name"].as_str()
            ),
            (Some("$screen"), Some("Home"))
        );
        let alias =
            transform(json!({"type": "alias", "messageId": "m", "userId": "u", "previousId": "p"}))
                .expect("ok")
                .expect("an event");
        assert_eq!(alias["event"], "$create_alias");
        assert_eq!(alias["properties"]["alias"], "p");
    }

    #[test]
    fn skips_and_aborts() {
        assert_eq!(
            transform(json!({"type": "group", "messageId": "m", "userId": "u", "groupId": "g"})),
            Ok(None)
        );
        assert_eq!(
            code(json!({"type": "track", "messageId": "m", "event": "E"})),
            "missing_user"
        );
        assert_eq!(
            code(json!({"type": "track", "messageId": "m", "userId": "u"})),
            "missing_event_name"
        );
        assert_eq!(
            code(json!({"type": "alias", "messageId": "m", "userId": "u"})),
            "missing_previous_id"
        );
        assert_eq!(
            code(
                json!({"type": "track", "messageId": "m", "userId": "u", "event": "E", "timestamp": "noon"})
            ),
            "invalid_timestamp"
        );
    }

    #[test]
    fn uuid_shapes() {
        assert!(is_uuid("0190b2c4-1c2d-7e3f-8a9b-0c1d2e3f4a5b"));
        for bad in [
            "",
            "m-1",
            "0190b2c4-1c2d-7e3f-8a9b-0c1d2e3f4a5",
            "0190b2c4x1c2d-7e3f-8a9b-0c1d2e3f4a5b",
            "g190b2c4-1c2d-7e3f-8a9b-0c1d2e3f4a5b",
        ] {
            assert!(!is_uuid(bad), "{bad}");
        }
    }
}
