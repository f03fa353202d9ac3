//! A destination's event filter applied to the jobs of a call, before the plugin sees them.
//!
//! The rule itself is [`EventFilter::allows`] (`sluice-core`); this reads the two fields it
//! needs, `type` and `event`, from the event as stored. Ingest only stores events with a known
//! `type` (and track events with an `event`), so an event that cannot be read here was not
//! written by ingest; it goes to the plugin as any event would, rather than vanish silently.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::lane::Job;
use sluice_core::EventFilter;

/// The members the filter reads; everything else is skipped unparsed. Raw values, because
/// `event` on a type other than track is free-form and must not fail the read.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
}

/// Whether the event (JSON as stored) goes to the destination.
pub fn passes(filter: &EventFilter, event: &str) -> bool {
    if filter.is_empty() {
        return true;
    }
    let Ok(head) = serde_json::from_str::<Head>(event) else {
        return true;
    };
    let text =
        |raw: Option<&RawValue>| raw.and_then(|r| serde_json::from_str::<Cow<str>>(r.get()).ok());
    let Some(kind) = text(head.kind) else {
        return true;
    };
    filter.allows(&kind, text(head.event).as_deref())
}

/// Splits a call's jobs into those that go to the plugin and those the filter keeps back,
/// each in call order.
pub fn split(filter: &EventFilter, jobs: Vec<Job>) -> (Vec<Job>, Vec<Job>) {
    if filter.is_empty() {
        return (jobs, Vec::new());
    }
    jobs.into_iter().partition(|j| passes(filter, &j.event))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny(types: &[&str], names: &[&str]) -> EventFilter {
        EventFilter {
            deny_types: types.iter().map(|s| s.to_string()).collect(),
            deny_events: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_type_and_name_are_read_from_the_stored_event() {
        let f = deny(&["identify"], &["Secret Event"]);
        assert!(!passes(
            &f,
            r#"{"type":"identify","userId":"u","traits":{"a":1}}"#
        ));
        assert!(!passes(
            &f,
            r#"{"userId":"u","event":"Secret Event","properties":{"type":"x"},"type":"track"}"#
        ));
        // Escapes are read as JSON reads them.
        assert!(!passes(
            &f,
            r#"{"type":"track","event":"Secret\u0020Event"}"#
        ));
        assert!(passes(&f, r#"{"type":"track","event":"Order Completed"}"#));
        assert!(passes(&f, r#"{"type":"page","event":{"not":"a name"}}"#));
    }

    #[test]
    fn an_event_the_filter_cannot_read_goes_to_the_plugin() {
        let f = deny(&["identify", "track"], &[]);
        assert!(passes(&f, "not json"));
        assert!(passes(&f, r#"{"userId":"u"}"#));
        assert!(passes(&f, r#"{"type":7}"#));
    }

    #[test]
    fn without_a_filter_nothing_is_read() {
        // Not even JSON: the empty filter never looks.
        assert!(passes(&EventFilter::default(), "not json"));
    }
}
