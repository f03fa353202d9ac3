//! [`SourceLimits`]: what one source may send, for keys that are public (a browser's write key
//! is in every page). Rates are token buckets of events, kept on each host: `events_per_second`
//! for the source as a whole, `client_events_per_second` for each client IP. A request over a
//! bucket gets 429 with `Retry-After`, which both browser SDKs honour.
//!
//! A source that allows browser origins gets [`BROWSER_DEFAULTS`] for what it leaves unset; a
//! source without (servers, apps) is limited only by what the operator sets.

use serde::{Deserialize, Serialize};

use crate::ByteSize;
use crate::catalog::InvalidItem;

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceLimits {
    /// Events per second for the whole source, on each host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_per_second: Option<f64>,
    /// How many events the source may send at once above its rate (default: one second's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Events per second for each client IP, on each host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_events_per_second: Option<f64>,
    /// How many events one client may send at once (default: ten seconds' worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_burst: Option<u32>,
    /// Most events in one request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<u32>,
    /// Largest event, as the JSON text of the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_event_size: Option<ByteSize>,
}

/// What a browser source gets for what it leaves unset: no limit for the site as a whole (a
/// busy site has many visitors), 20 events a second for one visitor's IP with a burst of 200
/// (a page load sends a handful), and Segment's documented limits on a batch and an event.
pub const BROWSER_DEFAULTS: SourceLimits = SourceLimits {
    events_per_second: None,
    burst: None,
    client_events_per_second: Some(20.0),
    client_burst: Some(200),
    max_batch: Some(500),
    max_event_size: Some(ByteSize::kib(32)),
};

/// A token bucket: `per_second` events refill it, it holds at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub per_second: f64,
    pub burst: u32,
}

/// The limits in force for a source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effective {
    pub source: Option<Bucket>,
    pub client: Option<Bucket>,
    pub max_batch: Option<u32>,
    pub max_event_size: Option<ByteSize>,
}

impl SourceLimits {
    pub fn validate(&self) -> Result<(), InvalidItem> {
        for (field, rate) in [
            ("limits.events_per_second", self.events_per_second),
            (
                "limits.client_events_per_second",
                self.client_events_per_second,
            ),
        ] {
            if rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                return Err(InvalidItem::new(
                    field,
                    "must be a number of events above 0",
                ));
            }
        }
        for (field, n) in [
            ("limits.burst", self.burst),
            ("limits.client_burst", self.client_burst),
            ("limits.max_batch", self.max_batch),
        ] {
            if n == Some(0) {
                return Err(InvalidItem::new(field, "must be at least 1"));
            }
        }
        if self.max_event_size.is_some_and(|s| s.bytes() < 1024) {
            return Err(InvalidItem::new(
                "limits.max_event_size",
                "must be at least 1KiB",
            ));
        }
        Ok(())
    }

    /// The limits in force: these, and for a browser source the defaults for the rest.
    pub fn effective(&self, browser: bool) -> Effective {
        let base = if browser {
            BROWSER_DEFAULTS
        } else {
            SourceLimits::default()
        };
        let bucket = |rate: Option<f64>, burst: Option<u32>, base_burst: Option<u32>, secs: f64| {
            rate.map(|r| Bucket {
                per_second: r,
                burst: burst
                    .or(base_burst)
                    .unwrap_or((r * secs).ceil().max(1.0) as u32),
            })
        };
        Effective {
            source: bucket(
                self.events_per_second.or(base.events_per_second),
                self.burst,
                base.burst,
                1.0,
            ),
            client: bucket(
                self.client_events_per_second
                    .or(base.client_events_per_second),
                self.client_burst,
                base.client_burst,
                10.0,
            ),
            max_batch: self.max_batch.or(base.max_batch),
            max_event_size: self.max_event_size.or(base.max_event_size),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_source_gets_the_defaults_for_what_it_leaves_unset() {
        let set = SourceLimits {
            client_events_per_second: Some(5.0),
            ..Default::default()
        };
        let e = set.effective(true);
        assert_eq!(
            e.client,
            Some(Bucket {
                per_second: 5.0,
                burst: 200
            })
        );
        assert_eq!(e.source, None);
        assert_eq!(e.max_batch, Some(500));
        assert_eq!(e.max_event_size, Some(ByteSize::kib(32)));
        let server = set.effective(false);
        assert_eq!(
            server.client,
            Some(Bucket {
                per_second: 5.0,
                burst: 50
            }),
            "ten seconds' worth"
        );
        assert_eq!(server.max_batch, None);
        assert_eq!(SourceLimits::default().effective(false).client, None);
    }

    #[test]
    fn nonsense_limits_name_their_field() {
        let bad = |l: SourceLimits| l.validate().unwrap_err().field;
        let rate = SourceLimits {
            events_per_second: Some(0.0),
            ..Default::default()
        };
        assert_eq!(bad(rate), "limits.events_per_second");
        let burst = SourceLimits {
            client_burst: Some(0),
            ..Default::default()
        };
        assert_eq!(bad(burst), "limits.client_burst");
        let size = SourceLimits {
            max_event_size: Some(ByteSize(10)),
            ..Default::default()
        };
        assert_eq!(bad(size), "limits.max_event_size");
        assert!(BROWSER_DEFAULTS.validate().is_ok());
    }
}
