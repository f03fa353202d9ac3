//! An optional rate limit per destination, in events per second: a token bucket.
//!
//! The adaptive concurrency limit (`runtime::limiter`) finds what a destination can take; this
//! is the cap its owner asks for (a vendor's documented quota, say). It counts events, not HTTP
//! requests, because that is how vendors state quotas and because one request of a batching
//! plugin may carry many events. The bucket holds one second's worth of tokens (at least one),
//! so a lane that was quiet may send that much at once and then goes at the rate.
//!
//! A lane has one owner at a time, so a per-lane bucket is the destination's limit across all
//! hosts. Time is passed in, so the tests need no clock.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// A full bucket for `per_second` events per second (> 0).
    pub fn new(per_second: f64, now: Instant) -> RateLimit {
        let burst = per_second.max(1.0);
        RateLimit {
            per_second,
            burst,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = now;
    }

    /// How many events may be sent now.
    pub fn available(&mut self, now: Instant) -> usize {
        self.refill(now);
        self.tokens.floor() as usize
    }

    /// `n` events were sent.
    pub fn spend(&mut self, n: usize, now: Instant) {
        self.refill(now);
        self.tokens -= n as f64;
    }

    /// When the next event may be sent.
    pub fn next_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        let missing = (1.0 - self.tokens).max(0.0);
        now + Duration::from_secs_f64(missing / self.per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_lane_may_send_a_second_worth_then_goes_at_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(100.0, t0);
        assert_eq!(r.available(t0), 100);
        r.spend(100, t0);
        assert_eq!(r.available(t0), 0);
        assert_eq!(r.next_at(t0), t0 + Duration::from_millis(10));
        let t1 = t0 + Duration::from_millis(250);
        assert_eq!(r.available(t1), 25);
        r.spend(25, t1);
        // Ten quiet seconds refill one second's worth, no more.
        assert_eq!(r.available(t1 + Duration::from_secs(10)), 100);
    }

    #[test]
    fn a_rate_below_one_per_second_sends_one_event_at_a_time() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(0.5, t0);
        assert_eq!(r.available(t0), 1);
        r.spend(1, t0);
        assert_eq!(r.next_at(t0), t0 + Duration::from_secs(2));
        assert_eq!(r.available(t0 + Duration::from_secs(1)), 0);
        assert_eq!(r.available(t0 + Duration::from_secs(2)), 1);
    }
}
