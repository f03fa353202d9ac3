//! Validating and normalising events as Segment/RudderStack clients send them, without
//! changing what they sent.
//!
//! Rules (a violation rejects the whole request with 400; nothing is stored):
//! - an event is a JSON object whose `type` is track, identify, page, screen, group or alias
//!   (single-event endpoints set it from the path);
//! - it has a non-empty `userId` or `anonymousId` (strings; numbers are accepted and kept);
//! - `track` events name the `event`;
//! - no string anywhere in the request contains `\u0000` (PostgreSQL text cannot hold it, and
//!   storing something else than what was sent is not an option).
//!
//! Normalisation: a missing `messageId` gets a UUID, `receivedAt` is set by the server, a batch's
//! `sentAt` is copied onto events without one, an event with `sentAt` and `originalTimestamp`
//! but no `timestamp` gets one corrected for the device's clock (`clock_skew`), so does one
//! from a Segment device library that sent the device's time as `timestamp` (that value is
//! kept, renamed `originalTimestamp`, as Segment stores it), and a body-level `writeKey` is
//! not stored.
//!
//! The event is rebuilt from its top-level members *as raw text*: every value the server does
//! not manage is copied byte for byte, in the order sent, so numbers keep every digit (even
//! beyond 64 bits) and nothing is re-encoded. Managed members are written after them.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use sluice_core::clock::{Clock, SystemClock};
use sluice_store::NewEvent;

/// One list for ingest and for destination filters, which may only name these types.
pub use sluice_core::filter::EVENT_TYPES;

/// Values shared by every event of one request.
pub struct RequestMeta<'a> {
    /// Server receive time, RFC 3339.
    pub received_at: &'a str,
    /// The batch's `sentAt`, as sent (raw JSON), if any.
    pub sent_at: Option<&'a RawValue>,
}

/// The system clock's time as ingest would stamp it (`receivedAt`), RFC 3339: for tools that
/// normalise an event outside the server (`sluice plugin call`, the bench). The server's
/// handlers take the time from their injected clock instead.
pub fn now_rfc3339() -> String {
    rfc3339(SystemClock.now())
}

pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// An event's top-level members, in order, values unparsed.
pub struct Members<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

/// A member name, borrowed from the request when it has no escapes (the usual case).
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Name<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(12));
                while let Some(Name(key)) = map.next_key::<Name<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    out.push((key, value));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<'a> Members<'a> {
    /// The last value of `name` (JSON parsers let a repeated key's last value win).
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }
}

/// Members the server writes itself; a client's values for them are dropped.
const MANAGED: [&str; 3] = ["receivedAt", "writeKey", "messageId"];

/// Why an event is rejected (the reason, without its position in the request); the text is
/// the 400 answer's reason.
///
/// The text carries the underlying error's text, so `source()` does not return it too (a
/// reporter that prints the chain would say it twice).
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("an event must be a JSON object")]
    NotAnObject,
    #[error("an event must be a JSON object: {0}")]
    Unreadable(serde_json::Error),
    #[error("missing `type`")]
    MissingType,
    #[error("unknown event type `{0}` (expected one of {expected})", expected = EVENT_TYPES.join(", "))]
    UnknownType(String),
    #[error("a track event needs a non-empty `event` name")]
    MissingEventName,
    #[error("neither `userId` nor `anonymousId` is set")]
    MissingUserId,
    /// The member (`type`, `userId`, `anonymousId`, `messageId`) has another JSON type.
    #[error("`{0}` must be a string")]
    NotAString(&'static str),
    #[error("`{field}` is longer than {max} characters")]
    TooLong { field: &'static str, max: usize },
}

/// Validates and normalises one event; the error is the reason (without position).
pub fn normalize(
    raw: &RawValue,
    forced_type: Option<&str>,
    meta: &RequestMeta,
) -> Result<NewEvent, EventError> {
    if !raw.get().starts_with('{') {
        return Err(EventError::NotAnObject);
    }
    let members: Members = serde_json::from_str(raw.get()).map_err(EventError::Unreadable)?;

    let sent_type = match members.get("type") {
        None => None,
        Some(v) => match serde_json::from_str::<Cow<str>>(v.get()) {
            Ok(t) => Some(t),
            Err(_) => return Err(EventError::NotAString("type")),
        },
    };
    let event_type: Cow<str> = match (forced_type, sent_type) {
        (Some(f), _) => Cow::Borrowed(f),
        (None, Some(t)) => t,
        (None, None) => return Err(EventError::MissingType),
    };
    if !EVENT_TYPES.contains(&&*event_type) {
        return Err(EventError::UnknownType(event_type.into_owned()));
    }
    if event_type == "track" {
        let name = members
            .get("event")
            .and_then(|v| serde_json::from_str::<Cow<str>>(v.get()).ok());
        if name.as_deref().is_none_or(str::is_empty) {
            return Err(EventError::MissingEventName);
        }
    }
    let user_id = id_field(&members, "userId")?;
    let anonymous_id = id_field(&members, "anonymousId")?;
    let user_key = match (user_id, anonymous_id) {
        (Some(u), _) => u,
        (None, Some(a)) => a,
        (None, None) => return Err(EventError::MissingUserId),
    };

    // A messageId the client gave is kept as sent; a missing or empty one is generated.
    let given_message_id = match members.get("messageId") {
        None => None,
        Some(v) if v.get() == "null" => None,
        Some(v) => match serde_json::from_str::<serde_json::Value>(v.get()) {
            Ok(serde_json::Value::String(m)) if m.is_empty() => None,
            Ok(serde_json::Value::String(m)) => Some((m, v)),
            Ok(serde_json::Value::Number(_)) => Some((v.get().to_string(), v)),
            _ => return Err(EventError::NotAString("messageId")),
        },
    };
    if given_message_id
        .as_ref()
        .is_some_and(|(m, _)| m.len() > 256)
    {
        return Err(EventError::TooLong {
            field: "messageId",
            max: 256,
        });
    }

    let mut out = String::with_capacity(raw.get().len() + 96);
    out.push('{');
    let mut first = true;
    let mut put = |out: &mut String, key: &str, value: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        push_json_string(out, key);
        out.push(':');
        out.push_str(value);
    };
    let timestamp = corrected_timestamp(&members, meta);
    let replace_type = forced_type.is_some();
    for (k, v) in &members.0 {
        if MANAGED.contains(&&**k) || (replace_type && k == "type") {
            continue;
        }
        if k == "timestamp" && matches!(timestamp, Some(CorrectedTimestamp::FromDevice(_))) {
            // Segment's device libraries: their `timestamp` is the device's time.
            put(&mut out, "originalTimestamp", v.get());
            continue;
        }
        put(&mut out, k, v.get());
    }
    if replace_type {
        let mut t = String::new();
        push_json_string(&mut t, &event_type);
        put(&mut out, "type", &t);
    }
    let message_id = match given_message_id {
        Some((m, v)) => {
            put(&mut out, "messageId", v.get());
            m
        }
        None => {
            let m = uuid::Uuid::new_v4().to_string();
            put(&mut out, "messageId", &format!("\"{m}\""));
            m
        }
    };
    let mut received = String::new();
    push_json_string(&mut received, meta.received_at);
    put(&mut out, "receivedAt", &received);
    if let Some(sent_at) = meta.sent_at
        && members.get("sentAt").is_none()
    {
        put(&mut out, "sentAt", sent_at.get());
    }
    if let Some(CorrectedTimestamp::Added(t) | CorrectedTimestamp::FromDevice(t)) = timestamp {
        put(&mut out, "timestamp", &t);
    }
    out.push('}');
    Ok(NewEvent {
        message_id,
        user_key,
        json: out,
    })
}

/// A `timestamp` corrected for the device's clock (`clock_skew`), as a JSON string literal.
enum CorrectedTimestamp {
    /// The event had `originalTimestamp` and no `timestamp` (RudderStack's SDKs).
    Added(String),
    /// The event came from a Segment device library, whose `timestamp` is the device's time:
    /// that value becomes `originalTimestamp`.
    FromDevice(String),
}

fn corrected_timestamp(members: &Members, meta: &RequestMeta) -> Option<CorrectedTimestamp> {
    use super::clock_skew;
    let sent_at = members.get("sentAt").or(meta.sent_at)?;
    let original = members.get("originalTimestamp");
    match members.get("timestamp") {
        None => clock_skew::corrected_timestamp(meta.received_at, sent_at, original?)
            .map(CorrectedTimestamp::Added),
        Some(device_time)
            if original.is_none()
                && members
                    .get("context")
                    .is_some_and(clock_skew::from_device_library) =>
        {
            clock_skew::corrected_timestamp(meta.received_at, sent_at, device_time)
                .map(CorrectedTimestamp::FromDevice)
        }
        Some(_) => None,
    }
}

/// A user id as a non-empty string, if present; numbers count (some SDKs send numeric ids)
/// and are kept as written.
fn id_field(members: &Members, name: &'static str) -> Result<Option<String>, EventError> {
    let Some(v) = members.get(name) else {
        return Ok(None);
    };
    match serde_json::from_str::<serde_json::Value>(v.get()) {
        Ok(serde_json::Value::Null) => Ok(None),
        Ok(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Ok(serde_json::Value::String(s)) if s.len() > 512 => Err(EventError::TooLong {
            field: name,
            max: 512,
        }),
        Ok(serde_json::Value::String(s)) => Ok(Some(s)),
        Ok(serde_json::Value::Number(_)) => Ok(Some(v.get().to_string())),
        _ => Err(EventError::NotAString(name)),
    }
}

/// Appends `s` as a JSON string literal.
fn push_json_string(out: &mut String, s: &str) {
    // serde_json's escaping, without building a Value.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// Whether the JSON text contains the escape `\u0000` (a NUL character) inside a string.
/// A backslash that is itself escaped (`\\u0000`) is text, not an escape.
pub fn contains_nul_escape(json: &[u8]) -> bool {
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'\\' {
            if json.len() >= i + 6
                && json[i + 1] == b'u'
                && json[i + 2..i + 6].iter().all(|b| *b == b'0')
            {
                return true;
            }
            i += 2; // skip the escaped character, whatever it is
        } else {
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: RequestMeta = RequestMeta {
        received_at: "2026-01-01T00:00:00Z",
        sent_at: None,
    };

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    fn norm(s: &str, forced: Option<&str>) -> Result<NewEvent, EventError> {
        normalize(&raw(s), forced, &META)
    }

    #[test]
    fn user_id_wins_over_anonymous_id() {
        let e = norm(
            r#"{"type":"identify","userId":"u1","anonymousId":"a1"}"#,
            None,
        )
        .unwrap();
        assert_eq!(e.user_key, "u1");
        let e = norm(
            r#"{"type":"identify","userId":"","anonymousId":"a1"}"#,
            None,
        )
        .unwrap();
        assert_eq!(e.user_key, "a1");
        let e = norm(r#"{"type":"identify","userId":42}"#, None).unwrap();
        assert_eq!(e.user_key, "42");
    }

    #[test]
    fn missing_ids_and_types_are_rejected() {
        let reason = |s: &str| norm(s, None).unwrap_err().to_string();
        assert_eq!(
            reason(r#"{"type":"identify"}"#),
            "neither `userId` nor `anonymousId` is set"
        );
        assert_eq!(
            reason(r#"{"type":"bogus","userId":"u"}"#),
            "unknown event type `bogus` (expected one of track, identify, page, screen, group, alias)"
        );
        assert_eq!(
            reason(r#"{"type":"track","userId":"u"}"#),
            "a track event needs a non-empty `event` name"
        );
        assert_eq!(reason("[1]"), "an event must be a JSON object");
        assert_eq!(reason(r#"{"userId":"u"}"#), "missing `type`");
        assert_eq!(
            reason(r#"{"type":7,"userId":"u"}"#),
            "`type` must be a string"
        );
        assert_eq!(
            reason(r#"{"type":"page","userId":[1]}"#),
            "`userId` must be a string"
        );
        let long = "x".repeat(513);
        assert_eq!(
            reason(&format!(r#"{{"type":"page","anonymousId":"{long}"}}"#)),
            "`anonymousId` is longer than 512 characters"
        );
        assert_eq!(
            reason(r#"{"type":"page","userId":"u","messageId":true}"#),
            "`messageId` must be a string"
        );
        assert_eq!(
            reason(&format!(
                r#"{{"type":"page","userId":"u","messageId":"{}"}}"#,
                "m".repeat(257)
            )),
            "`messageId` is longer than 256 characters"
        );
    }

    #[test]
    fn message_id_is_generated_and_write_key_dropped() {
        let e = norm(
            r#"{"userId":"u","event":"E","writeKey":"k"}"#,
            Some("track"),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
        assert_eq!(
            v["messageId"],
            serde_json::Value::String(e.message_id.clone())
        );
        assert_eq!(e.message_id.len(), 36);
        assert_eq!(v["type"], "track");
        assert_eq!(v["receivedAt"], "2026-01-01T00:00:00Z");
        assert!(v.get("writeKey").is_none());
    }

    #[test]
    fn batch_sent_at_is_copied_unless_the_event_has_one() {
        let sent = raw(r#""2026-01-01T00:00:01Z""#);
        let meta = RequestMeta {
            received_at: "x",
            sent_at: Some(&sent),
        };
        let e = normalize(
            &raw(r#"{"type":"page","anonymousId":"a","messageId":"m"}"#),
            None,
            &meta,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
        assert_eq!(v["sentAt"], "2026-01-01T00:00:01Z");
        assert_eq!(e.message_id, "m");
        let e = normalize(
            &raw(r#"{"type":"page","anonymousId":"a","sentAt":"mine"}"#),
            None,
            &meta,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
        assert_eq!(v["sentAt"], "mine");
    }

    #[test]
    fn a_skewed_device_clock_gets_a_corrected_timestamp_and_a_sent_one_is_kept() {
        // The device is an hour slow; the event waited 2 s on it.
        let sent = raw(r#""2026-01-01T09:00:03.000Z""#);
        let meta = RequestMeta {
            received_at: "2026-01-01T10:00:04Z",
            sent_at: Some(&sent),
        };
        let skewed = r#"{"type":"track","event":"E","anonymousId":"a","originalTimestamp":"2026-01-01T09:00:01.000Z"}"#;
        let e = normalize(&raw(skewed), None, &meta).unwrap();
        let v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
        assert_eq!(v["timestamp"], "2026-01-01T10:00:02.000Z");
        assert_eq!(v["originalTimestamp"], "2026-01-01T09:00:01.000Z");
        assert!(
            e.json.starts_with(&skewed[..skewed.len() - 1]),
            "the rest as sent"
        );
        let mine = r#"{"type":"track","event":"E","anonymousId":"a","originalTimestamp":"2026-01-01T09:00:01.000Z","timestamp":"mine"}"#;
        let e = normalize(&raw(mine), None, &meta).unwrap();
        assert_eq!(e.json.matches("\"timestamp\"").count(), 1);
        assert!(e.json.contains(r#""timestamp":"mine""#));
    }

    #[test]
    fn a_segment_device_librarys_timestamp_becomes_original_timestamp_and_is_corrected() {
        // analytics.js in a browser whose clock is 2 h fast; the event waited 40 ms on it.
        let meta = RequestMeta {
            received_at: "2026-01-01T10:00:00.100Z",
            sent_at: None,
        };
        let sent = r#"{"type":"track","event":"E","anonymousId":"a","timestamp":"2026-01-01T12:00:00.000Z","sentAt":"2026-01-01T12:00:00.040Z","context":{"library":{"name":"analytics.js","version":"next-1.84.3"}},"writeKey":"wk"}"#;
        let e = normalize(&raw(sent), None, &meta).unwrap();
        assert!(
            e.json.starts_with(r#"{"type":"track","event":"E","anonymousId":"a","originalTimestamp":"2026-01-01T12:00:00.000Z","sentAt":"2026-01-01T12:00:00.040Z","context":{"library":{"name":"analytics.js","version":"next-1.84.3"}},"messageId":"#),
            "the device's time kept in place as originalTimestamp: {}",
            e.json
        );
        assert!(
            e.json
                .ends_with(r#""timestamp":"2026-01-01T10:00:00.060Z"}"#),
            "{}",
            e.json
        );
        assert_eq!(e.json.matches("\"timestamp\"").count(), 1);

        // A server library's timestamp (a historical import) is the caller's: kept as sent.
        let server = sent.replace("analytics.js", "analytics-python");
        let e = normalize(&raw(&server), None, &meta).unwrap();
        assert!(e.json.contains(r#""timestamp":"2026-01-01T12:00:00.000Z""#));
        assert!(!e.json.contains("originalTimestamp"));
        // A device library's event that already has both times is kept as sent.
        let both = sent.replace(
            r#""timestamp""#,
            r#""originalTimestamp":"2026-01-01T11:59:59.000Z","timestamp""#,
        );
        let e = normalize(&raw(&both), None, &meta).unwrap();
        assert!(e.json.contains(r#""timestamp":"2026-01-01T12:00:00.000Z""#));
        // Without sentAt there is nothing to correct with.
        let unsent = sent.replace(r#""sentAt":"2026-01-01T12:00:00.040Z","#, "");
        let e = normalize(&raw(&unsent), None, &meta).unwrap();
        assert!(e.json.contains(r#""timestamp":"2026-01-01T12:00:00.000Z""#));
        assert!(!e.json.contains("originalTimestamp"));
    }

    #[test]
    fn values_are_kept_byte_for_byte_in_order() {
        let sent = r#"{"type":"track","event":"E","userId":"u","properties":{"big":123456789012345678901234567890,"f":1.50,"z":1e400,"s":"é\n"},"context":{ "a" : [1, 2] }}"#;
        let e = norm(sent, None).unwrap();
        assert!(
            e.json.starts_with(r#"{"type":"track","event":"E","userId":"u","properties":{"big":123456789012345678901234567890,"f":1.50,"z":1e400,"s":"é\n"},"context":{ "a" : [1, 2] },"messageId":""#),
            "{}",
            e.json
        );
        assert!(
            e.json.ends_with(r#","receivedAt":"2026-01-01T00:00:00Z"}"#),
            "{}",
            e.json
        );
    }

    #[test]
    fn a_received_at_sent_by_the_client_is_replaced() {
        let e = norm(
            r#"{"type":"identify","userId":"u","receivedAt":"client"}"#,
            None,
        )
        .unwrap();
        assert_eq!(e.json.matches("receivedAt").count(), 1);
        assert!(e.json.contains(r#""receivedAt":"2026-01-01T00:00:00Z""#));
    }

    #[test]
    fn nul_escapes_are_found_but_escaped_backslashes_are_not() {
        assert!(contains_nul_escape(br#"{"a":"x\u0000y"}"#));
        assert!(!contains_nul_escape(br#"{"a":"x\\u0000y"}"#));
        assert!(contains_nul_escape(br#"{"a":"x\\\u0000"}"#));
        assert!(!contains_nul_escape(br#"{"a":"\u0001"}"#));
    }
}
