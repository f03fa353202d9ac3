//! What an HTTP V2 API response says about the events of a request.
//!
//! Contract: Amplitude answers a request that holds invalid events with 400 and the indices
//! of the events it rejected (`events_with_invalid_fields`, `events_with_missing_fields`,
//! `events_with_invalid_id_lengths`: field → indices; `silenced_events`: indices of events
//! from devices Amplitude silenced), and ingests none of the request: its documented remedy
//! is to drop those events and send the rest again. [`rejected`] lists those events with a
//! failure naming why; an empty list means the 400 is about the request as a whole (e.g. an
//! invalid API key). Every other status is judged by [`status_outcome`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use sluice_sdk::http::HttpResponse;
use sluice_sdk::{Failure, Outcome};

/// How long to back off after a 429 without `Retry-After`: Amplitude measures per-user and
/// per-device rates over 30 seconds and says to pause sending for 30 seconds.
pub const THROTTLE_WITHOUT_RETRY_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Deserialize)]
struct Rejection {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    events_with_invalid_fields: BTreeMap<String, Vec<usize>>,
    #[serde(default)]
    events_with_missing_fields: BTreeMap<String, Vec<usize>>,
    #[serde(default)]
    events_with_invalid_id_lengths: BTreeMap<String, Vec<usize>>,
    #[serde(default)]
    silenced_events: Vec<usize>,
}

/// The events a 400 `response` rejected, by index in the request, each with its failure; the
/// first reason listed for an index wins. Empty when the body names no event.
pub fn rejected(response: &HttpResponse) -> BTreeMap<usize, Failure> {
    let Ok(body) = serde_json::from_slice::<Rejection>(&response.body) else {
        return BTreeMap::new();
    };
    let error = body.error.unwrap_or_else(|| "rejected".to_owned());
    let mut out = BTreeMap::new();
    let by_field = [
        (
            "amplitude_invalid_field",
            "invalid",
            &body.events_with_invalid_fields,
        ),
        (
            "amplitude_missing_field",
            "missing",
            &body.events_with_missing_fields,
        ),
        (
            "amplitude_invalid_id_length",
            "too short",
            &body.events_with_invalid_id_lengths,
        ),
    ];
    for (code, what, fields) in by_field {
        for (field, indices) in fields {
            for &index in indices {
                out.entry(index).or_insert_with(|| {
                    let message =
                        format!("Amplitude rejected the event: `{field}` is {what} ({error})");
                    Failure::new(code, message)
                });
            }
        }
    }
    for &index in &body.silenced_events {
        out.entry(index).or_insert_with(|| {
            Failure::new(
                "amplitude_silenced",
                format!("Amplitude silenced the event's device ({error})"),
            )
        });
    }
    out
}

/// The outcome of every event of a request answered with `response` (not a 400 naming
/// events): the SDK's standard mapping, except that a 429 without `Retry-After` waits
/// [`THROTTLE_WITHOUT_RETRY_AFTER`].
pub fn status_outcome(response: &HttpResponse) -> Outcome {
    if response.status == 429 && response.header("retry-after").is_none() {
        return Outcome::Throttled(THROTTLE_WITHOUT_RETRY_AFTER);
    }
    Outcome::from_response(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_read_per_index() {
        let body = r#"{"code":400,"error":"Request missing required field",
            "events_with_invalid_fields":{"time":[3],"event_properties":[0]},
            "events_with_missing_fields":{"event_type":[1,3]},
            "events_with_invalid_id_lengths":{"user_id":[4]},
            "silenced_events":[5, 1]}"#;
        let rejected = rejected(&HttpResponse::new(400).with_body(body));
        let codes: Vec<(usize, &str)> = rejected
            .iter()
            .map(|(i, f)| (*i, f.code.as_str()))
            .collect();
        assert_eq!(
            codes,
            [
                (0, "amplitude_invalid_field"),
                (1, "amplitude_missing_field"),
                (3, "amplitude_invalid_field"),
                (4, "amplitude_invalid_id_length"),
                (5, "amplitude_silenced"),
            ]
        );
        assert_eq!(
            rejected[&1].message,
            "Amplitude rejected the event: `event_type` is missing (Request missing required field)"
        );
    }

    #[test]
    fn a_400_about_the_request_names_no_event() {
        for body in [
            r#"{"code":400,"error":"Invalid API key: x"}"#,
            "not json",
            "",
        ] {
            assert!(
                rejected(&HttpResponse::new(400).with_body(body)).is_empty(),
                "{body}"
            );
        }
    }

    #[test]
    fn throttles_default_to_thirty_seconds() {
        assert_eq!(
            status_outcome(&HttpResponse::new(429)),
            Outcome::Throttled(Duration::from_secs(30))
        );
        let told = HttpResponse::new(429).with_header("Retry-After", "3");
        assert_eq!(
            status_outcome(&told),
            Outcome::Throttled(Duration::from_secs(3))
        );
        assert!(matches!(
            status_outcome(&HttpResponse::new(413)),
            Outcome::TooLarge(_)
        ));
        assert!(matches!(
            status_outcome(&HttpResponse::new(502)),
            Outcome::Retry(_)
        ));
        assert_eq!(status_outcome(&HttpResponse::new(200)), Outcome::Delivered);
        assert!(
            matches!(status_outcome(&HttpResponse::new(400)), Outcome::Abort(f) if f.code == "http_400")
        );
    }
}
