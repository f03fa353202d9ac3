//! Clock skew, corrected as Segment and RudderStack correct it: a device whose clock is wrong
//! stamps `originalTimestamp` and `sentAt` with the same error, so their difference is the
//! true time the event waited on the device. An event that carries both but no `timestamp`
//! gets `timestamp = receivedAt − (sentAt − originalTimestamp)`, which is right whatever the
//! device's clock says. Nothing else of the event changes, and a `timestamp` the client sent
//! is kept as sent.
//!
//! Segment's device libraries (the browser's `analytics.js`, the mobile SDKs) write the
//! device's time into `timestamp` itself, with `sentAt` beside it and no `originalTimestamp`.
//! Segment treats that value as the `originalTimestamp` and stores the corrected `timestamp`;
//! so does Sluice, for the libraries listed in [`DEVICE_LIBRARIES`] only: a server library's
//! `timestamp` (a historical import, say) is the caller's decision and is kept as sent.

use std::borrow::Cow;

use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `context.library.name` of Segment's libraries that run on users' devices, whose clocks are
/// not to be trusted (what their current releases send).
pub const DEVICE_LIBRARIES: [&str; 6] = [
    "analytics.js", // analytics-next (browser), and the classic analytics.js
    "analytics-ios",
    "analytics-android",
    "analytics-swift",
    "analytics-kotlin",
    "@segment/analytics-react-native",
];

/// Whether an event's `context` names one of Segment's [`DEVICE_LIBRARIES`].
pub fn from_device_library(context: &RawValue) -> bool {
    #[derive(serde::Deserialize)]
    struct Context<'a> {
        #[serde(borrow)]
        library: Option<Library<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Library<'a> {
        #[serde(borrow)]
        name: Option<Cow<'a, str>>,
    }
    // Most events are not from these libraries: skip the parse unless a name is in the text.
    let text = context.get();
    if !DEVICE_LIBRARIES.iter().any(|name| text.contains(name)) {
        return false;
    }
    serde_json::from_str::<Context>(text)
        .ok()
        .and_then(|c| c.library?.name)
        .is_some_and(|name| DEVICE_LIBRARIES.contains(&&*name))
}

/// The corrected `timestamp` as a JSON string literal, or `None` when a time is missing or
/// not RFC 3339 (then the event is stored without one, as sent).
pub fn corrected_timestamp(
    received_at: &str,
    sent_at: &RawValue,
    original_timestamp: &RawValue,
) -> Option<String> {
    let time = |raw: &RawValue| -> Option<OffsetDateTime> {
        let text: Cow<str> = serde_json::from_str(raw.get()).ok()?;
        OffsetDateTime::parse(&text, &Rfc3339).ok()
    };
    let received = OffsetDateTime::parse(received_at, &Rfc3339).ok()?;
    let waited = time(sent_at)? - time(original_timestamp)?;
    let t = received
        .checked_sub(waited)?
        .to_offset(time::UtcOffset::UTC);
    // As the SDKs write their own times (JavaScript's `toISOString`): UTC, milliseconds.
    Some(format!(
        "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\"",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(format!("\"{s}\"")).expect("a JSON string")
    }

    #[test]
    fn a_device_two_hours_fast_is_corrected_to_the_server_time_less_the_wait() {
        // The device's clock is 2 h ahead; the event waited 1.5 s on it before the send.
        let ts = corrected_timestamp(
            "2026-12-02T10:00:10.000Z",
            &raw("2026-12-02T12:00:09.000Z"),
            &raw("2026-12-02T12:00:07.500Z"),
        );
        assert_eq!(ts.as_deref(), Some("\"2026-12-02T10:00:08.500Z\""));
    }

    #[test]
    fn offsets_are_honoured_and_the_result_is_in_utc() {
        let ts = corrected_timestamp(
            "2026-12-02T10:00:00Z",
            &raw("2026-12-02T05:00:00-05:00"),
            &raw("2026-12-02T04:59:59+00:00"),
        );
        // sentAt is 10:00:00Z, originalTimestamp 04:59:59Z: it waited 5 h 1 s.
        assert_eq!(ts.as_deref(), Some("\"2026-12-02T04:59:59.000Z\""));
    }

    #[test]
    fn segments_device_libraries_are_recognised_by_their_library_name() {
        let ctx = |s: &str| RawValue::from_string(s.to_string()).expect("json");
        assert!(from_device_library(&ctx(
            r#"{"page":{"title":"analytics-ios"},"library":{"name":"analytics.js","version":"next-1.84.3"}}"#
        )));
        assert!(from_device_library(&ctx(
            r#"{"library":{"name":"analytics-swift"}}"#
        )));
        // A server library, a name only mentioned elsewhere, no library, not an object.
        assert!(!from_device_library(&ctx(
            r#"{"library":{"name":"analytics-python"}}"#
        )));
        assert!(!from_device_library(&ctx(
            r#"{"page":{"title":"analytics.js"},"library":{"name":"analytics-node"}}"#
        )));
        assert!(!from_device_library(&ctx(r#"{"page":"analytics.js"}"#)));
        assert!(!from_device_library(&ctx(r#""analytics.js""#)));
    }

    #[test]
    fn a_time_that_is_not_rfc_3339_gives_no_timestamp() {
        let sent = raw("2026-12-02T10:00:00Z");
        assert_eq!(
            corrected_timestamp("2026-12-02T10:00:00Z", &sent, &raw("yesterday")),
            None
        );
        let number = RawValue::from_string("1700000000".into()).expect("json");
        assert_eq!(
            corrected_timestamp("2026-12-02T10:00:00Z", &sent, &number),
            None
        );
    }
}
