//! A typed view of a Segment-spec event, as the host hands it to `transform`.
//!
//! Contract: the well-known Segment fields are lifted into typed fields (camelCase JSON keys,
//! as Segment sends them); everything, including unknown fields, stays available unchanged in
//! [`Event::raw`]. `type` and `messageId` are required (the Segment spec requires them);
//! every other field may be absent or `null`. ID fields also accept JSON numbers, which some
//! Segment libraries send for `userId`, and turn them into strings.
//!
//! Timestamps stay text in their fields; [`Event::parsed_timestamp`] and its siblings read them
//! as RFC 3339 (`2024-01-01T00:00:00.000Z`, `2024-01-01T01:00:00+01:00`) when a destination
//! needs a time. An absent, `null` or empty timestamp is `None`, anything else that is not
//! RFC 3339 is a [`TimestampError`] naming the field. [`Event::occurred_at`] takes the first
//! readable of `timestamp`, `originalTimestamp` and `receivedAt`, passing over unreadable ones.

use std::fmt;

use serde::de::Error as _;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::outcome::TransformError;

/// The Segment call type (`type` key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `track`: a user action, named in [`Event::event`].
    Track,
    /// `identify`: who the user is, with [`Event::traits`].
    Identify,
    /// `page`: a web page view, named in [`Event::name`].
    Page,
    /// `screen`: a mobile screen view, named in [`Event::name`].
    Screen,
    /// `group`: the user joined [`Event::group_id`].
    Group,
    /// `alias`: [`Event::previous_id`] and `userId` are the same user.
    Alias,
    /// Any other type, kept verbatim.
    Other(String),
}

impl EventType {
    /// Map a `type` value to an [`EventType`]; known types match case-insensitively.
    pub fn parse(value: &str) -> EventType {
        const KNOWN: [(&str, EventType); 6] = [
            ("track", EventType::Track),
            ("identify", EventType::Identify),
            ("page", EventType::Page),
            ("screen", EventType::Screen),
            ("group", EventType::Group),
            ("alias", EventType::Alias),
        ];
        KNOWN
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(value))
            .map_or_else(|| EventType::Other(value.to_owned()), |(_, kind)| kind)
    }

    /// The lowercase Segment name of this type (`Other` returns its original text).
    pub fn as_str(&self) -> &str {
        match self {
            EventType::Track => "track",
            EventType::Identify => "identify",
            EventType::Page => "page",
            EventType::Screen => "screen",
            EventType::Group => "group",
            EventType::Alias => "alias",
            EventType::Other(other) => other,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Segment-spec event. Object-valued fields are [`Value::Null`] when absent.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `type`.
    pub event_type: EventType,
    /// `messageId`.
    pub message_id: String,
    /// `userId`.
    pub user_id: Option<String>,
    /// `anonymousId`.
    pub anonymous_id: Option<String>,
    /// `event`: the name of a `track` call.
    pub event: Option<String>,
    /// `name`: the name of a `page` or `screen` call.
    pub name: Option<String>,
    /// `properties`.
    pub properties: Value,
    /// `traits`.
    pub traits: Value,
    /// `context`.
    pub context: Value,
    /// `integrations`.
    pub integrations: Value,
    /// `timestamp`.
    pub timestamp: Option<String>,
    /// `originalTimestamp`.
    pub original_timestamp: Option<String>,
    /// `sentAt`.
    pub sent_at: Option<String>,
    /// `receivedAt`.
    pub received_at: Option<String>,
    /// `groupId`.
    pub group_id: Option<String>,
    /// `previousId`.
    pub previous_id: Option<String>,
    /// The whole event as received, unknown fields included.
    pub raw: Value,
}

impl Event {
    /// Parse an event from its JSON text.
    ///
    /// Fails if the text is not JSON, not an object, lacks `type` or `messageId`, or a
    /// well-known field has the wrong JSON type.
    pub fn from_json(json: &str) -> Result<Event, serde_json::Error> {
        Event::from_value(serde_json::from_str(json)?)
    }

    /// Build an event from already-parsed JSON; same rules as [`Event::from_json`].
    pub fn from_value(raw: Value) -> Result<Event, serde_json::Error> {
        let Value::Object(obj) = &raw else {
            return Err(serde_json::Error::custom(format!(
                "an event must be a JSON object, got {}",
                kind(&raw)
            )));
        };
        let event_type = text(obj, "type")?
            .map(|t| EventType::parse(&t))
            .ok_or_else(|| serde_json::Error::missing_field("type"))?;
        let message_id =
            id(obj, "messageId")?.ok_or_else(|| serde_json::Error::missing_field("messageId"))?;
        Ok(Event {
            event_type,
            message_id,
            user_id: id(obj, "userId")?,
            anonymous_id: id(obj, "anonymousId")?,
            event: text(obj, "event")?,
            name: text(obj, "name")?,
            properties: any(obj, "properties"),
            traits: any(obj, "traits"),
            context: any(obj, "context"),
            integrations: any(obj, "integrations"),
            timestamp: text(obj, "timestamp")?,
            original_timestamp: text(obj, "originalTimestamp")?,
            sent_at: text(obj, "sentAt")?,
            received_at: text(obj, "receivedAt")?,
            group_id: id(obj, "groupId")?,
            previous_id: id(obj, "previousId")?,
            raw,
        })
    }

    /// The key identifying the user: `userId` if non-empty, else `anonymousId` if non-empty.
    pub fn user_key(&self) -> Option<&str> {
        [&self.user_id, &self.anonymous_id]
            .into_iter()
            .filter_map(|key| key.as_deref())
            .find(|key| !key.is_empty())
    }

    /// `timestamp` as a time: when the event happened, corrected for the client's clock
    /// where the sender did so. `None` if absent or empty.
    ///
    /// ```
    /// # use sluice_sdk::Event;
    /// let event = Event::from_json(
    ///     r#"{"type":"track","messageId":"m","timestamp":"2024-05-01T12:30:00.250+02:00"}"#,
    /// ).unwrap();
    /// let at = event.parsed_timestamp().unwrap().unwrap();
    /// assert_eq!(at.unix_timestamp(), 1_714_559_400);
    /// assert_eq!(at.millisecond(), 250);
    /// ```
    pub fn parsed_timestamp(&self) -> Result<Option<OffsetDateTime>, TimestampError> {
        parse_time("timestamp", self.timestamp.as_deref())
    }

    /// `originalTimestamp` as a time: the client's own clock when the event happened.
    pub fn parsed_original_timestamp(&self) -> Result<Option<OffsetDateTime>, TimestampError> {
        parse_time("originalTimestamp", self.original_timestamp.as_deref())
    }

    /// `sentAt` as a time: the client's clock when it sent the batch.
    pub fn parsed_sent_at(&self) -> Result<Option<OffsetDateTime>, TimestampError> {
        parse_time("sentAt", self.sent_at.as_deref())
    }

    /// `receivedAt` as a time: when Sluice's ingest received the event (always set on events
    /// that came through ingest).
    pub fn parsed_received_at(&self) -> Result<Option<OffsetDateTime>, TimestampError> {
        parse_time("receivedAt", self.received_at.as_deref())
    }

    /// When the event happened, as well as it is known: the first of `timestamp`,
    /// `originalTimestamp` and `receivedAt`, in that order, that is present and parses.
    ///
    /// A field that is present but not RFC 3339 is passed over for the next one, so one bad
    /// client timestamp does not cost the event its time. Only when none parses is the first
    /// unreadable field's [`TimestampError`] returned (`Ok(None)`: all three are absent or
    /// empty). `sentAt` is never used: it is when the client sent its batch, not when the event
    /// happened. To be strict about one field, use [`Event::parsed_timestamp`] and its
    /// siblings.
    ///
    /// ```
    /// # use sluice_sdk::Event;
    /// let event = Event::from_json(
    ///     r#"{"type":"track","messageId":"m","timestamp":"yesterday",
    ///         "receivedAt":"2024-05-01T10:30:00Z"}"#,
    /// ).unwrap();
    /// assert!(event.parsed_timestamp().is_err());
    /// let at = event.occurred_at().unwrap().unwrap();
    /// assert_eq!(at.unix_timestamp(), 1_714_559_400);
    /// ```
    pub fn occurred_at(&self) -> Result<Option<OffsetDateTime>, TimestampError> {
        let mut first_error = None;
        for parsed in [
            Event::parsed_timestamp,
            Event::parsed_original_timestamp,
            Event::parsed_received_at,
        ] {
            match parsed(self) {
                Ok(Some(time)) => return Ok(Some(time)),
                Ok(None) => {}
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(None), Err)
    }
}

/// A Segment timestamp field that is not an RFC 3339 date-time.
///
/// Converts into [`TransformError::Abort`] with code `invalid_timestamp` (retrying cannot fix
/// the event), so `transform` can use `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampError {
    /// The JSON key, e.g. `sentAt`.
    pub field: &'static str,
    /// The text found there.
    pub value: String,
    /// Why it did not parse.
    pub reason: String,
}

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not an RFC 3339 timestamp ({:?}): {}",
            self.field, self.value, self.reason
        )
    }
}

impl std::error::Error for TimestampError {}

impl From<TimestampError> for TransformError {
    fn from(err: TimestampError) -> TransformError {
        TransformError::abort("invalid_timestamp", err.to_string())
    }
}

fn parse_time(
    field: &'static str,
    value: Option<&str>,
) -> Result<Option<OffsetDateTime>, TimestampError> {
    let Some(text) = value.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    OffsetDateTime::parse(text, &Rfc3339)
        .map(Some)
        .map_err(|err| TimestampError {
            field,
            value: text.to_owned(),
            reason: err.to_string(),
        })
}

/// A string field; absent and `null` are `None`.
fn text(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, serde_json::Error> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(key, "a string", other)),
    }
}

/// An ID field: like [`text`], but numbers are accepted and written out as strings.
fn id(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, serde_json::Error> {
    match obj.get(key) {
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other @ (Value::Bool(_) | Value::Array(_) | Value::Object(_))) => {
            Err(wrong_type(key, "a string or number", other))
        }
        _ => text(obj, key),
    }
}

/// Any JSON value, `Null` when absent.
fn any(obj: &Map<String, Value>, key: &str) -> Value {
    obj.get(key).cloned().unwrap_or(Value::Null)
}

fn wrong_type(key: &str, expected: &str, got: &Value) -> serde_json::Error {
    serde_json::Error::custom(format!("`{key}` must be {expected}, got {}", kind(got)))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_track_call() {
        let json = r#"{
            "type": "track", "messageId": "m-1", "userId": "u-1", "anonymousId": "a-1",
            "event": "Order Completed", "properties": {"total": 12.5},
            "context": {"ip": "127.0.0.1"}, "timestamp": "2024-01-01T00:00:00Z",
            "originalTimestamp": "2024-01-01T00:00:00Z", "sentAt": "2024-01-01T00:00:01Z",
            "receivedAt": "2024-01-01T00:00:02Z", "custom": [1, 2]
        }"#;
        let event = Event::from_json(json).expect("valid event");
        assert_eq!(event.event_type, EventType::Track);
        assert_eq!(event.message_id, "m-1");
        assert_eq!(event.user_id.as_deref(), Some("u-1"));
        assert_eq!(event.event.as_deref(), Some("Order Completed"));
        assert_eq!(event.properties, json!({"total": 12.5}));
        assert_eq!(event.traits, Value::Null);
        assert_eq!(event.integrations, Value::Null);
        assert_eq!(event.sent_at.as_deref(), Some("2024-01-01T00:00:01Z"));
        assert_eq!(event.received_at.as_deref(), Some("2024-01-01T00:00:02Z"));
        assert_eq!(
            event.raw["custom"],
            json!([1, 2]),
            "unknown fields stay in raw"
        );
    }

    #[test]
    fn parses_identify_group_alias_and_unknown_types() {
        let identify = Event::from_value(json!({
            "type": "identify", "messageId": "m", "userId": 42, "traits": {"plan": "pro"}
        }))
        .expect("identify");
        assert_eq!(identify.event_type, EventType::Identify);
        assert_eq!(
            identify.user_id.as_deref(),
            Some("42"),
            "numeric ids become strings"
        );
        assert_eq!(identify.traits, json!({"plan": "pro"}));

        let group = Event::from_value(json!({"type": "group", "messageId": "m", "groupId": "g"}))
            .expect("group");
        assert_eq!(group.group_id.as_deref(), Some("g"));

        let alias =
            Event::from_value(json!({"type": "Alias", "messageId": "m", "previousId": "p"}))
                .expect("alias");
        assert_eq!(alias.event_type, EventType::Alias);
        assert_eq!(alias.previous_id.as_deref(), Some("p"));

        let other = Event::from_value(json!({"type": "batch", "messageId": "m"})).expect("other");
        assert_eq!(other.event_type, EventType::Other("batch".into()));
        assert_eq!(other.event_type.to_string(), "batch");
    }

    #[test]
    fn user_key_prefers_a_non_empty_user_id() {
        let mut event = Event::from_value(json!({
            "type": "page", "messageId": "m", "userId": "", "anonymousId": "anon", "name": null
        }))
        .expect("page");
        assert_eq!(event.name, None);
        assert_eq!(event.user_key(), Some("anon"));
        event.user_id = Some("user".into());
        assert_eq!(event.user_key(), Some("user"));
        event.user_id = None;
        event.anonymous_id = None;
        assert_eq!(event.user_key(), None);
    }

    #[test]
    fn timestamps_parse_as_rfc3339() {
        let event = Event::from_value(json!({
            "type": "track", "messageId": "m",
            "timestamp": "2024-01-01T00:00:00.123Z",
            "originalTimestamp": "2024-01-01T01:00:00+01:00",
            "sentAt": "2024-01-01T00:00:01z",
            "receivedAt": "2024-01-01T00:00:02.5-00:30"
        }))
        .expect("event");
        let midnight = 1_704_067_200;
        let at = event
            .parsed_timestamp()
            .expect("rfc 3339")
            .expect("present");
        assert_eq!((at.unix_timestamp(), at.millisecond()), (midnight, 123));
        let original = event
            .parsed_original_timestamp()
            .expect("ok")
            .expect("some");
        assert_eq!(original.unix_timestamp(), midnight, "offsets are applied");
        let sent = event.parsed_sent_at().expect("ok").expect("some");
        assert_eq!(sent.unix_timestamp(), midnight + 1);
        let received = event.parsed_received_at().expect("ok").expect("some");
        assert_eq!(received.unix_timestamp(), midnight + 1802);
        assert_eq!(event.occurred_at(), Ok(Some(at)));
    }

    #[test]
    fn absent_timestamps_are_none_and_occurred_at_falls_back() {
        let mut event =
            Event::from_value(json!({"type": "track", "messageId": "m", "timestamp": null}))
                .expect("event");
        assert_eq!(event.parsed_timestamp(), Ok(None));
        assert_eq!(event.occurred_at(), Ok(None));
        event.timestamp = Some(" ".into());
        event.received_at = Some("2024-01-01T00:00:00Z".into());
        let received = event.parsed_received_at().expect("ok");
        assert!(received.is_some());
        assert_eq!(event.occurred_at(), Ok(received));
        event.original_timestamp = Some("2023-12-31T23:59:59Z".into());
        let original = event.occurred_at().expect("ok").expect("some");
        assert_eq!(original.unix_timestamp(), 1_704_067_199);
    }

    #[test]
    fn malformed_timestamps_name_the_field_and_abort_a_transform() {
        let mut event =
            Event::from_value(json!({"type": "track", "messageId": "m"})).expect("event");
        for bad in [
            "yesterday",
            "2024-01-01",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00+0100",
            "2024-13-01T00:00:00Z",
        ] {
            event.sent_at = Some(bad.into());
            let err = event.parsed_sent_at().expect_err(bad);
            assert_eq!((err.field, err.value.as_str()), ("sentAt", bad));
            assert!(
                err.to_string().starts_with("`sentAt` is not an RFC 3339"),
                "{err}"
            );
        }
        event.sent_at = None;
        event.timestamp = Some("soon".into());
        event.original_timestamp = Some("later".into());
        let err = event.occurred_at().expect_err("none of them parses");
        assert_eq!(
            err.field, "timestamp",
            "the first unreadable one is reported"
        );
        let transform_error = TransformError::from(err);
        assert!(
            matches!(&transform_error, TransformError::Abort(f) if f.code == "invalid_timestamp"),
            "{transform_error}"
        );
    }

    #[test]
    fn occurred_at_falls_through_an_unreadable_timestamp() {
        let mut event = Event::from_value(json!({
            "type": "track", "messageId": "m",
            "timestamp": "soon",
            "originalTimestamp": "2024-01-01T00:00:00Z",
            "sentAt": "2024-01-01T00:00:05Z",
            "receivedAt": "2024-01-01T00:00:10Z"
        }))
        .expect("event");
        let midnight = 1_704_067_200;
        let at = |event: &Event| event.occurred_at().expect("ok").map(|t| t.unix_timestamp());
        assert_eq!(at(&event), Some(midnight), "originalTimestamp");
        event.original_timestamp = Some("2024-01-01".into());
        assert_eq!(at(&event), Some(midnight + 10), "receivedAt, never sentAt");
        event.original_timestamp = None;
        assert_eq!(at(&event), Some(midnight + 10));
        event.timestamp = Some("2024-01-01T00:00:01Z".into());
        assert_eq!(
            at(&event),
            Some(midnight + 1),
            "a readable timestamp comes first"
        );
        event.timestamp = None;
        event.received_at = None;
        assert_eq!(
            event.occurred_at(),
            Ok(None),
            "sentAt alone is no occurrence time"
        );
    }

    #[test]
    fn rejects_malformed_events() {
        for (json, needle) in [
            ("not json", "expected"),
            ("[1]", "must be a JSON object"),
            (r#"{"messageId": "m"}"#, "`type`"),
            (r#"{"type": "track"}"#, "`messageId`"),
            (
                r#"{"type": 1, "messageId": "m"}"#,
                "`type` must be a string",
            ),
            (
                r#"{"type": "track", "messageId": "m", "userId": {}}"#,
                "`userId`",
            ),
            (
                r#"{"type": "track", "messageId": "m", "event": 5}"#,
                "`event`",
            ),
        ] {
            let err = Event::from_json(json).expect_err(json).to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
