//! Circuit breaker of one destination: when the destination fails for every key, stop burning
//! each key's attempts and probe it with one job at a time instead.
//!
//! - Closed (normal): claims are full size. Every attempt that ends in a retryable failure
//!   adds to a run of failures; any sign of life (a delivery, or a permanent answer such as a
//!   4xx abort) ends the run.
//! - Open: after [`THRESHOLD`] failed attempts in a row with no sign of life, the destination
//!   pauses for a while (the retry policy's `min_backoff`, doubling up to `max_backoff`).
//! - Half-open: after the pause, a claim takes a single job as a probe. Success closes the
//!   breaker; failure reopens it with a longer pause.
//!
//! Throttles, released jobs and jobs the plugin skipped (filtered out, nothing sent) say
//! nothing about the destination's health and are ignored.

use std::time::Duration;

use crate::lane::Decision;

/// Failed attempts in a row, with no delivery in between, that open the breaker.
pub const THRESHOLD: u32 = 10;

#[derive(Debug, Default)]
pub struct Breaker {
    failures: u32,
    /// Open or half-open: the next claim is a single probe job.
    probing: bool,
    /// The last pause; doubles on each failed probe.
    pause: Duration,
}

impl Breaker {
    /// Whether claims should carry a single probe job.
    pub fn probing(&self) -> bool {
        self.probing
    }

    /// Feeds the outcome of one delivery; returns how long to pause the destination when the
    /// breaker (re)opens.
    pub fn observe(
        &mut self,
        decisions: &[&Decision],
        min_pause: Duration,
        max_pause: Duration,
    ) -> Option<Duration> {
        let mut alive = false;
        let mut failed = 0;
        for d in decisions {
            match d {
                Decision::Delivered | Decision::Aborted { .. } => alive = true,
                Decision::Retry { .. } => failed += 1,
                // A skipped or filtered job never reached the destination.
                Decision::Skipped
                | Decision::Filtered
                | Decision::Throttled { .. }
                | Decision::Released
                | Decision::Parked => {}
            }
        }
        if alive {
            *self = Breaker::default();
            return None;
        }
        if failed == 0 {
            return None;
        }
        self.failures = self.failures.saturating_add(failed);
        if self.failures < THRESHOLD && !self.probing {
            return None;
        }
        self.pause = if self.probing {
            (self.pause * 2).clamp(min_pause, max_pause.max(min_pause))
        } else {
            min_pause
        };
        self.probing = true;
        Some(self.pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn updates(delivered: usize, failed: usize) -> Vec<Decision> {
        let mut v = vec![Decision::Delivered; delivered];
        for _ in 0..failed {
            v.push(Decision::Retry {
                code: "http_connect".into(),
                text: String::new(),
                at: OffsetDateTime::now_utc(),
            });
        }
        v
    }

    fn observe(b: &mut Breaker, d: Vec<Decision>) -> Option<Duration> {
        let refs: Vec<&Decision> = d.iter().collect();
        b.observe(&refs, MIN, MAX)
    }

    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(5);

    #[test]
    fn opens_after_a_run_of_failures_and_backs_off_while_probes_fail() {
        let mut b = Breaker::default();
        assert_eq!(observe(&mut b, updates(0, 9)), None);
        assert!(!b.probing());
        assert_eq!(observe(&mut b, updates(0, 1)), Some(MIN));
        assert!(b.probing());
        assert_eq!(observe(&mut b, updates(0, 1)), Some(Duration::from_secs(2)));
        assert_eq!(observe(&mut b, updates(0, 1)), Some(Duration::from_secs(4)));
        assert_eq!(observe(&mut b, updates(0, 1)), Some(MAX));
        assert_eq!(observe(&mut b, updates(1, 0)), None);
        assert!(!b.probing(), "a delivered probe closes the breaker");
    }

    #[test]
    fn skipped_jobs_are_no_sign_of_life() {
        let mut b = Breaker::default();
        let mut d = updates(0, 10);
        d.push(Decision::Skipped);
        assert_eq!(
            observe(&mut b, d),
            Some(MIN),
            "nothing reached the destination"
        );
        assert_eq!(observe(&mut b, vec![Decision::Skipped]), None);
        assert!(b.probing(), "a skipped probe proves nothing");
    }

    #[test]
    fn one_failing_key_among_working_ones_never_opens_it() {
        let mut b = Breaker::default();
        for _ in 0..100 {
            assert_eq!(observe(&mut b, updates(5, 1)), None);
        }
        assert!(!b.probing());
    }
}
