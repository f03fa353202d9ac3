//! Which events a destination receives: its `filter` (docs in the README, "Filtering").
//!
//! RudderStack's destination "event filtering" (an allowlist or a denylist of track event
//! names), and the same by event type. An event passes when its type passes the type rule and,
//! for a track event, its name passes the name rule. A rule is an allowlist or a denylist,
//! never both: "allow these and also deny those" has no meaning a reader could trust. An empty
//! list is no rule, so the default filter lets every event through.
//!
//! The decision is pure and takes the two fields it reads; the engine extracts them from the
//! event and applies the filter before the plugin sees the event.

use serde::{Deserialize, Serialize};

/// The event types ingest accepts (Segment's spec). A filter may only name these, so that a
/// misspelt type is an error at configuration time rather than a rule that never matches.
pub const EVENT_TYPES: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];

/// The event type whose events have a name (`event`): the only one the name rules concern,
/// as in RudderStack.
const NAMED_TYPE: &str = "track";

/// A destination's event filter. Names are matched exactly (case and spaces count).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    /// Only events of these types pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_types: Vec<String>,
    /// Events of these types never pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_types: Vec<String>,
    /// Only track events with these names pass (other types are not concerned).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_events: Vec<String>,
    /// Track events with these names never pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_events: Vec<String>,
}

/// Why a filter cannot be used: the list at fault and, when one entry is, its index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidFilter {
    /// `allow_types`, `deny_types`, `allow_events` or `deny_events`.
    pub field: &'static str,
    /// The entry at fault, by its index in that list.
    pub entry: Option<usize>,
    pub message: String,
}

impl EventFilter {
    /// No rule at all: every event passes.
    pub fn is_empty(&self) -> bool {
        self.allow_types.is_empty()
            && self.deny_types.is_empty()
            && self.allow_events.is_empty()
            && self.deny_events.is_empty()
    }

    /// Whether an event of `event_type` (and, for a track event, named `event_name`) goes to
    /// the destination.
    pub fn allows(&self, event_type: &str, event_name: Option<&str>) -> bool {
        if !self.allows_type(event_type) {
            return false;
        }
        if event_type != NAMED_TYPE {
            return true;
        }
        // Ingest refuses a track event without a name; were one stored anyway, it matches no
        // allowlist and no denylist entry (names are never empty).
        let name = event_name.unwrap_or_default();
        (self.allow_events.is_empty() || contains(&self.allow_events, name))
            && !contains(&self.deny_events, name)
    }

    fn allows_type(&self, event_type: &str) -> bool {
        (self.allow_types.is_empty() || contains(&self.allow_types, event_type))
            && !contains(&self.deny_types, event_type)
    }

    /// The checks every path applies (file, API, apply), first problem first.
    pub fn validate(&self) -> Result<(), InvalidFilter> {
        either_or("allow_types", &self.allow_types, &self.deny_types)?;
        either_or("allow_events", &self.allow_events, &self.deny_events)?;
        for (field, types) in [
            ("allow_types", &self.allow_types),
            ("deny_types", &self.deny_types),
        ] {
            if let Some((i, t)) = types
                .iter()
                .enumerate()
                .find(|(_, t)| !EVENT_TYPES.contains(&t.as_str()))
            {
                return Err(InvalidFilter {
                    field,
                    entry: Some(i),
                    message: format!(
                        "`{t}` is not an event type (expected one of {})",
                        EVENT_TYPES.join(", ")
                    ),
                });
            }
        }
        for (field, names) in [
            ("allow_events", &self.allow_events),
            ("deny_events", &self.deny_events),
        ] {
            if let Some(i) = names.iter().position(|n| n.trim().is_empty()) {
                return Err(InvalidFilter {
                    field,
                    entry: Some(i),
                    message: "an event name must not be empty".into(),
                });
            }
            // A name rule that no event could reach is a mistake, not a rule.
            if !names.is_empty() && !self.allows_type(NAMED_TYPE) {
                return Err(InvalidFilter {
                    field,
                    entry: None,
                    message: "names only concern track events, which the type rule filters out"
                        .into(),
                });
            }
        }
        Ok(())
    }
}

/// An allowlist and a denylist of the same thing may not both be set.
fn either_or(
    allow_field: &'static str,
    allow: &[String],
    deny: &[String],
) -> Result<(), InvalidFilter> {
    if allow.is_empty() || deny.is_empty() {
        return Ok(());
    }
    let deny_field = allow_field.replacen("allow", "deny", 1);
    Err(InvalidFilter {
        field: allow_field,
        entry: None,
        message: format!("set {allow_field} or {deny_field}, not both"),
    })
}

fn contains(list: &[String], item: &str) -> bool {
    list.iter().any(|x| x == item)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(
        allow_types: &[&str],
        deny_types: &[&str],
        allow: &[&str],
        deny: &[&str],
    ) -> EventFilter {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        EventFilter {
            allow_types: own(allow_types),
            deny_types: own(deny_types),
            allow_events: own(allow),
            deny_events: own(deny),
        }
    }

    #[test]
    fn the_default_filter_lets_every_event_through() {
        let f = EventFilter::default();
        assert!(f.is_empty());
        for t in EVENT_TYPES {
            assert!(f.allows(t, Some("Anything")), "{t}");
        }
        assert!(f.validate().is_ok());
    }

    #[test]
    fn denied_types_and_names_are_filtered_and_the_rest_pass() {
        let f = filter(&[], &["identify"], &[], &["Secret Event"]);
        assert!(f.validate().is_ok());
        assert!(!f.allows("identify", None));
        assert!(!f.allows("track", Some("Secret Event")));
        assert!(f.allows("track", Some("Order Completed")));
        assert!(
            f.allows("track", Some("secret event")),
            "names match exactly"
        );
        assert!(
            f.allows("page", Some("Secret Event")),
            "names concern track only"
        );
        assert!(f.allows("group", None));
    }

    #[test]
    fn allowlists_let_only_their_entries_through() {
        let f = filter(&["track", "page"], &[], &["Signed Up"], &[]);
        assert!(f.validate().is_ok());
        assert!(f.allows("track", Some("Signed Up")));
        assert!(!f.allows("track", Some("Order Completed")));
        assert!(!f.allows("track", None));
        assert!(f.allows("page", None));
        assert!(!f.allows("identify", None));
    }

    #[test]
    fn invalid_filters_name_the_list_and_entry_at_fault() {
        let err = |f: EventFilter| f.validate().unwrap_err();
        let e = err(filter(&["track"], &["page"], &[], &[]));
        assert_eq!((e.field, e.entry), ("allow_types", None));
        assert_eq!(
            e.to_string(),
            "allow_types: set allow_types or deny_types, not both"
        );
        let e = err(filter(&[], &[], &["A"], &["B"]));
        assert_eq!((e.field, e.entry), ("allow_events", None));
        let e = err(filter(&[], &["identify", "Track"], &[], &[]));
        assert_eq!((e.field, e.entry), ("deny_types", Some(1)));
        assert!(e.message.starts_with("`Track` is not an event type"), "{e}");
        let e = err(filter(&[], &[], &[], &["ok", " "]));
        assert_eq!((e.field, e.entry), ("deny_events", Some(1)));
        let e = err(filter(&["identify"], &[], &["Signed Up"], &[]));
        assert_eq!((e.field, e.entry), ("allow_events", None));
        let e = err(filter(&[], &["track"], &[], &["Secret Event"]));
        assert_eq!((e.field, e.entry), ("deny_events", None));
    }

    #[test]
    fn unknown_filter_fields_are_refused_and_empty_lists_are_not_written() {
        let bad = serde_json::from_value::<EventFilter>(serde_json::json!({"deny_type": ["page"]}));
        assert!(bad.is_err());
        let f = filter(&[], &["identify"], &[], &[]);
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({"deny_types": ["identify"]})
        );
    }
}
