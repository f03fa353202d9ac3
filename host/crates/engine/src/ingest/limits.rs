//! A source's limits at ingest (`sluice_core::source_limits`): token buckets of events for the
//! source and for each client IP, and the largest batch and event. Buckets live on each host
//! and survive catalog changes that leave the source's limits as they were.
//!
//! A request is counted once it is valid, before it is stored: one over a bucket gets 429
//! with `Retry-After` (the time until the bucket holds its events) and nothing is stored. A
//! batch larger than a bucket's burst needs the whole bucket, not more, so that it can pass.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

use super::error::ApiError;
use sluice_core::catalog::SourceSettings;
use sluice_core::source_limits::{Bucket, Effective};

/// How many distinct client buckets a source keeps before idle ones are forgotten.
const CLIENTS_BEFORE_SWEEP: usize = 100_000;

/// A source's limits and their buckets (the buckets are not shown by `Debug`).
pub struct Limits {
    /// The settings they were made from: equal settings keep the buckets.
    pub settings: SourceSettings,
    effective: Effective,
    source: Option<DefaultDirectRateLimiter>,
    clients: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("effective", &self.effective)
            .finish_non_exhaustive()
    }
}

fn quota(b: Bucket) -> Option<Quota> {
    let period = Duration::from_secs_f64(1.0 / b.per_second);
    let burst = NonZeroU32::new(b.burst.max(1))?;
    Some(Quota::with_period(period)?.allow_burst(burst))
}

impl Limits {
    pub fn new(settings: &SourceSettings) -> Limits {
        let effective = settings.limits.effective(settings.is_browser());
        Limits {
            settings: settings.clone(),
            effective,
            source: effective.source.and_then(quota).map(RateLimiter::direct),
            clients: effective.client.and_then(quota).map(RateLimiter::keyed),
        }
    }

    /// Refuses a batch of `events` items over `max_batch` (413).
    pub fn check_batch(&self, events: usize) -> Result<(), ApiError> {
        match self.effective.max_batch {
            Some(max) if events > max as usize => Err(ApiError::limit(
                "batch_too_large",
                format!("{events} events in one request; this source takes at most {max}"),
            )),
            _ => Ok(()),
        }
    }

    /// Refuses an event whose JSON text is over `max_event_size` (413); `at` names it.
    pub fn check_event(&self, len: usize, at: &str) -> Result<(), ApiError> {
        match self.effective.max_event_size {
            Some(max) if len as u64 > max.bytes() => Err(ApiError::limit(
                "event_too_large",
                format!("{at}: {len} bytes; this source takes events of at most {max}"),
            )),
            _ => Ok(()),
        }
    }

    /// Takes `events` tokens from the source's bucket and `client`'s; 429 when either is short.
    pub fn admit(&self, client: IpAddr, events: usize) -> Result<(), ApiError> {
        let n = u32::try_from(events).unwrap_or(u32::MAX).max(1);
        // Read only when refusing: the wait until the bucket holds the events.
        let now = || DefaultClock::default().now();
        if let Some(source) = &self.source {
            let n = NonZeroU32::new(n.min(self.effective.source.map_or(1, |b| b.burst)))
                .unwrap_or(NonZeroU32::MIN);
            if let Ok(Err(not_until)) = source.check_n(n) {
                return Err(ApiError::rate_limited(
                    "this source is over its events_per_second",
                    not_until.wait_time_from(now()),
                ));
            }
        }
        if let Some(clients) = &self.clients {
            if clients.len() > CLIENTS_BEFORE_SWEEP {
                clients.retain_recent();
            }
            let n = NonZeroU32::new(n.min(self.effective.client.map_or(1, |b| b.burst)))
                .unwrap_or(NonZeroU32::MIN);
            if let Ok(Err(not_until)) = clients.check_key_n(&client, n) {
                return Err(ApiError::rate_limited(
                    "this client is over its source's client_events_per_second",
                    not_until.wait_time_from(now()),
                ));
            }
        }
        Ok(())
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the last address of
/// `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: Option<SocketAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use sluice_core::{AllowedOrigin, SourceLimits};

    fn browser(limits: SourceLimits) -> SourceSettings {
        SourceSettings {
            allowed_origins: vec![AllowedOrigin::Any],
            limits,
        }
    }

    #[test]
    fn a_client_over_its_bucket_is_told_when_to_come_back_and_others_are_not_slowed() {
        let l = Limits::new(&browser(SourceLimits {
            client_events_per_second: Some(1.0),
            client_burst: Some(10),
            ..Default::default()
        }));
        let (a, b) = (IpAddr::from([192, 0, 2, 1]), IpAddr::from([192, 0, 2, 2]));
        assert!(l.admit(a, 10).is_ok());
        let e = l.admit(a, 1).expect_err("over");
        assert_eq!(e.status.as_u16(), 429);
        assert!(e.retry_after.is_some_and(|d| d <= Duration::from_secs(1)));
        assert!(l.admit(b, 10).is_ok(), "another client has its own bucket");
        // A batch larger than the burst needs the whole bucket, no more.
        let l = Limits::new(&browser(SourceLimits {
            client_burst: Some(5),
            ..Default::default()
        }));
        assert!(l.admit(a, 50).is_ok());
    }

    #[test]
    fn sizes_are_checked_with_the_browser_defaults() {
        let l = Limits::new(&browser(SourceLimits::default()));
        assert!(l.check_batch(500).is_ok());
        assert_eq!(l.check_batch(501).unwrap_err().code, "batch_too_large");
        assert_eq!(
            l.check_event(40_000, "batch[3]").unwrap_err().code,
            "event_too_large"
        );
        let server = Limits::new(&SourceSettings::default());
        assert!(server.check_batch(100_000).is_ok());
        assert!(
            server
                .admit(IpAddr::from([192, 0, 2, 1]), 1_000_000)
                .is_ok()
        );
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.7, 198.51.100.1, 10.0.0.2"),
        );
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let via_proxy = Some("10.0.0.1:4000".parse().unwrap());
        assert_eq!(
            client_ip(via_proxy, &h, &trusted),
            IpAddr::from([198, 51, 100, 1]),
            "the last hop before the trusted proxies"
        );
        let direct = Some("192.0.2.9:4000".parse().unwrap());
        assert_eq!(
            client_ip(direct, &h, &trusted),
            IpAddr::from([192, 0, 2, 9])
        );
        assert_eq!(
            client_ip(via_proxy, &HeaderMap::new(), &trusted),
            IpAddr::from([10, 0, 0, 1])
        );
    }
}
