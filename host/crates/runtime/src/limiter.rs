//! Adaptive concurrency of one destination: how many requests may be in flight to it at once.
//!
//! Destinations are other people's servers, often small. The limit behaves like TCP's
//! congestion window (and like Netflix `concurrency-limits`' AIMD and gradient limiters, or
//! Envoy's adaptive concurrency filter):
//! - it starts small and doubles per round trip while responses come back fast and clean
//!   (slow start), then grows by about one per round trip;
//! - it shrinks multiplicatively on overload — a timeout, a refused or reset connection, a 5xx
//!   or a 429 — and when latency climbs well above the best seen recently (queues building up
//!   in front of the server), at most once per round trip, and leaves slow start for good;
//! - it stays between 1 and the destination's configured cap.
//!
//! Time spent waiting for a permit is the host's doing, not the destination's: it is never
//! counted against a request's timeout, so a small receiver slows delivery down instead of
//! making jobs fail.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// What a finished request says about the destination's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// An answer that says nothing about overload (2xx, 3xx, 4xx other than 429).
    Fine,
    /// Timeout, connection refused or reset, 5xx, 429.
    Overload,
    /// The request never reached the server (bad URL, denied host): no information.
    Ignore,
}

/// Latency above this multiple of the recent minimum counts as queueing.
const LATENCY_TOLERANCE: f64 = 2.5;
/// Multiplicative decrease on overload, and on queueing.
const BACKOFF: f64 = 0.7;
const QUEUE_BACKOFF: f64 = 0.9;
/// The minimum latency is forgotten this often, so that a server that got slower for good
/// is measured anew.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// Latency samples below this are treated as this (loopback is faster than anything real).
const RTT_FLOOR: Duration = Duration::from_micros(200);

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    slow_start: bool,
    min_rtt: Option<Duration>,
    min_rtt_since: Instant,
    last_decrease: Option<Instant>,
}

/// The concurrency limit of one destination, shared by its plugin instances.
#[derive(Debug)]
pub struct Limiter {
    state: Mutex<State>,
    released: Notify,
    max: usize,
}

/// A request's place in flight; give it back with [`Limiter::finish`].
#[derive(Debug)]
pub struct Permit {
    started: Instant,
    /// The limit was at least half used when this request started: its outcome says
    /// something about whether the limit is right.
    full: bool,
}

impl Limiter {
    /// A limiter starting at `initial`, never above `max`.
    pub fn new(initial: usize, max: usize) -> Limiter {
        let max = max.max(1);
        Limiter {
            state: Mutex::new(State {
                limit: initial.clamp(1, max) as f64,
                in_flight: 0,
                slow_start: true,
                min_rtt: None,
                min_rtt_since: Instant::now(),
                last_decrease: None,
            }),
            released: Notify::new(),
            max,
        }
    }

    /// The current limit (for metrics and tests).
    pub fn limit(&self) -> usize {
        self.state.lock().map(|s| s.limit as usize).unwrap_or(1)
    }

    pub fn in_flight(&self) -> usize {
        self.state.lock().map(|s| s.in_flight).unwrap_or(0)
    }

    /// Waits for room under the limit. Private: callers use [`Limiter::enter`], whose guard
    /// gives the room back even when the request is cancelled.
    async fn acquire(&self) -> Permit {
        loop {
            // Register interest before checking, so a release in between is not missed.
            let released = self.released.notified();
            {
                let Ok(mut s) = self.state.lock() else {
                    break;
                };
                let limit = s.limit.floor().max(1.0);
                if (s.in_flight as f64) < limit {
                    s.in_flight += 1;
                    return Permit {
                        started: Instant::now(),
                        full: s.in_flight as f64 * 2.0 >= limit,
                    };
                }
            }
            released.await;
        }
        Permit {
            started: Instant::now(),
            full: false,
        }
    }

    /// Waits for room under the limit, and gives it back when the guard is dropped, even if
    /// the request never finishes: a call cancelled mid-request (its lane lost its lease, the
    /// host is stopping) must not keep its place under the limit forever.
    pub async fn enter(&self) -> InFlight<'_> {
        InFlight {
            limiter: self,
            permit: Some(self.acquire().await),
        }
    }

    /// Gives a permit back with what its request said about the destination.
    pub fn finish(&self, permit: Permit, signal: Signal) {
        self.finish_at(permit, signal, Instant::now());
    }

    fn finish_at(&self, permit: Permit, signal: Signal, now: Instant) {
        let rtt = now.saturating_duration_since(permit.started).max(RTT_FLOOR);
        if let Ok(mut s) = self.state.lock() {
            let was_full = permit.full;
            s.in_flight = s.in_flight.saturating_sub(1);
            if now.duration_since(s.min_rtt_since) > MIN_RTT_WINDOW {
                s.min_rtt = None;
                s.min_rtt_since = now;
            }
            // At most one decrease per round trip: the requests in flight when it happened
            // report the same congestion.
            let may_decrease = s
                .last_decrease
                .is_none_or(|t| now.duration_since(t) > rtt.min(Duration::from_secs(1)));
            match signal {
                Signal::Ignore => {}
                Signal::Overload => {
                    if may_decrease {
                        s.limit = (s.limit * BACKOFF).max(1.0);
                        s.slow_start = false;
                        s.last_decrease = Some(now);
                    }
                }
                Signal::Fine => {
                    let base = *s.min_rtt.get_or_insert(rtt);
                    s.min_rtt = Some(base.min(rtt));
                    let queueing =
                        rtt.as_secs_f64() > base.as_secs_f64() * LATENCY_TOLERANCE && was_full;
                    if queueing {
                        if may_decrease {
                            s.limit = (s.limit * QUEUE_BACKOFF).max(1.0);
                            s.slow_start = false;
                            s.last_decrease = Some(now);
                        }
                    } else if was_full {
                        // Growing is only justified when the limit was actually in use.
                        let step = if s.slow_start { 1.0 } else { 1.0 / s.limit };
                        s.limit = (s.limit + step).min(self.max as f64);
                    }
                }
            }
        }
        self.released.notify_one();
    }
}

/// A request's place under the limit (see [`Limiter::enter`]).
#[derive(Debug)]
pub struct InFlight<'a> {
    limiter: &'a Limiter,
    permit: Option<Permit>,
}

impl InFlight<'_> {
    /// The request ended: give the place back with what it said about the destination.
    pub fn finish(mut self, signal: Signal) {
        if let Some(permit) = self.permit.take() {
            self.limiter.finish(permit, signal);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.limiter.finish(permit, Signal::Ignore);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancelled_request_gives_its_place_back() {
        let l = std::sync::Arc::new(Limiter::new(1, 1));
        let held = l.clone();
        let request = tokio::spawn(async move {
            let _place = held.enter().await;
            std::future::pending::<()>().await;
        });
        while l.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        request.abort();
        let _ = request.await;
        assert_eq!(l.in_flight(), 0, "the aborted request's place is free");
        // And the next request gets in.
        l.enter().await.finish(Signal::Fine);
        assert_eq!(l.in_flight(), 0);
    }

    fn permit(started: Instant) -> Permit {
        Permit {
            started,
            full: true,
        }
    }

    /// Runs `n` requests at the limit, each taking `rtt` and ending in `signal`.
    fn round(l: &Limiter, now: &mut Instant, rtt: Duration, signal: Signal) {
        let n = l.limit();
        if let Ok(mut s) = l.state.lock() {
            s.in_flight = n;
        }
        let start = *now;
        *now += rtt;
        for _ in 0..n {
            l.finish_at(permit(start), signal, *now);
        }
    }

    #[test]
    fn slow_start_doubles_then_overload_cuts_it() {
        let l = Limiter::new(4, 1000);
        let mut now = Instant::now();
        for _ in 0..3 {
            round(&l, &mut now, Duration::from_millis(1), Signal::Fine);
        }
        assert!(l.limit() >= 28, "grew fast: {}", l.limit());
        let before = l.limit();
        round(&l, &mut now, Duration::from_millis(1), Signal::Overload);
        let after = l.limit();
        assert!(
            after < before && after as f64 >= before as f64 * 0.6,
            "{before} -> {after}"
        );
        // Out of slow start: about one more per round trip.
        round(&l, &mut now, Duration::from_millis(1), Signal::Fine);
        assert!(l.limit() <= after + 1, "{}", l.limit());
    }

    #[test]
    fn rising_latency_shrinks_the_limit_and_the_cap_holds() {
        let l = Limiter::new(8, 16);
        let mut now = Instant::now();
        for _ in 0..10 {
            round(&l, &mut now, Duration::from_millis(2), Signal::Fine);
        }
        assert_eq!(l.limit(), 16, "capped");
        for _ in 0..10 {
            round(&l, &mut now, Duration::from_millis(50), Signal::Fine);
        }
        assert!(l.limit() < 16, "queueing seen: {}", l.limit());
    }

    #[test]
    fn a_storm_of_failures_decreases_once_per_round_trip_and_never_below_one() {
        let l = Limiter::new(32, 64);
        let mut now = Instant::now();
        round(&l, &mut now, Duration::from_millis(10), Signal::Overload);
        assert_eq!(l.limit(), 22, "32 × 0.7, once for the whole round");
        for _ in 0..50 {
            round(&l, &mut now, Duration::from_millis(10), Signal::Overload);
        }
        assert_eq!(l.limit(), 1);
    }

    #[tokio::test]
    async fn acquire_waits_for_room() {
        let l = std::sync::Arc::new(Limiter::new(1, 1));
        let first = l.acquire().await;
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert_eq!(l.in_flight(), 1);
        l.finish(first, Signal::Fine);
        let second = waiter.await.unwrap();
        assert_eq!(l.in_flight(), 1);
        l.finish(second, Signal::Ignore);
        assert_eq!(l.in_flight(), 0);
    }
}
