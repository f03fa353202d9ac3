//! When an active lane wakes up next, as pure functions of its deadlines and `now`.
//!
//! The loop sleeps until the earliest deadline unless an event (a call, a store operation, a
//! wake-up) comes first. A deadline that has already passed makes that sleep return at once,
//! and the loop spins: so a deadline is either in the future or left out.
//! - A deadline whose work needs the store (a fetch of due keys, a commit, a renewal) waits
//!   for the store's retry time while the store is failing; a retry time that came is used up
//!   by the pass that saw it (the next one is a backoff later), so that an operation hanging
//!   on a dead store does not leave a retry time in the past.
//! - A store deadline that passed while the store is fine is left out: the pass before the
//!   sleep started its work, so what holds the work back is an operation in flight or a full
//!   lane, and the end of that wakes the loop.

use std::time::Duration;

use tokio::time::Instant;

use super::{STORE_RETRY_MAX, STORE_RETRY_MIN};

/// The shortest sleep: a backstop, should some deadline be due already, against a busy loop.
const MIN_SLEEP: Duration = Duration::from_millis(1);

/// Whether the store answers, and when to try it again if not: a backoff that starts at
/// [`STORE_RETRY_MIN`], doubles with each failure up to [`STORE_RETRY_MAX`] and is reset by a
/// success.
#[derive(Debug, Clone)]
pub(super) struct StoreBackoff {
    /// Set while the store is failing: no store operation starts before it.
    retry_at: Option<Instant>,
    /// The pause after the next failure.
    backoff: Duration,
}

impl Default for StoreBackoff {
    fn default() -> Self {
        StoreBackoff {
            retry_at: None,
            backoff: STORE_RETRY_MIN,
        }
    }
}

impl StoreBackoff {
    /// Whether a store operation may start now.
    pub(super) fn ready(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| now >= t)
    }

    /// A store operation failed: wait before the next; returns how long.
    pub(super) fn failed(&mut self, now: Instant) -> Duration {
        let wait = self.backoff;
        self.retry_at = Some(now + wait);
        self.backoff = (self.backoff * 2).min(STORE_RETRY_MAX);
        wait
    }

    /// A store operation went through: the store is back.
    pub(super) fn succeeded(&mut self) {
        *self = StoreBackoff::default();
    }

    /// While the store is failing, the next retry time, never in the past: a retry time that
    /// came was used by the pass that saw it (which started what it could), so the next one is
    /// a backoff from now.
    pub(super) fn next_retry(&mut self, now: Instant) -> Option<Instant> {
        let at = self.retry_at.as_mut()?;
        if *at <= now {
            *at = now + self.backoff;
        }
        Some(*at)
    }
}

/// What an active lane waits for, besides events.
#[derive(Debug, Clone, Default)]
pub(super) struct Deadlines {
    /// A blocked key falls due (its rows are fetched).
    pub(super) fetch: Option<Instant>,
    /// Progress may be committed (commits of bare progress are spaced out).
    pub(super) commit: Option<Instant>,
    /// The lease is renewed.
    pub(super) renew: Option<Instant>,
    /// The lease may have run out: calls in flight are cancelled.
    pub(super) lease_out: Option<Instant>,
    /// A pause (throttle, breaker, no instance) ends.
    pub(super) pause_end: Option<Instant>,
    /// The rate limit lets the next event go.
    pub(super) rate: Option<Instant>,
    /// The lane has been dry for its linger: it gives the lease back.
    pub(super) linger_end: Option<Instant>,
}

/// When to wake up if no event comes first: the earliest deadline, store deadlines pushed to
/// the store's retry time while it fails, or `now + idle` when there is none. Always after
/// `now`.
pub(super) fn next_wake(
    deadlines: &Deadlines,
    store: &mut StoreBackoff,
    now: Instant,
    idle: Duration,
) -> Instant {
    let retry = store.next_retry(now);
    let needs_store = [deadlines.fetch, deadlines.commit, deadlines.renew]
        .into_iter()
        .flatten()
        .map(|t| retry.map_or(t, |r| t.max(r)))
        .filter(|t| *t > now);
    let lease_out = deadlines.lease_out.filter(|t| *t > now);
    let others = [
        lease_out,
        deadlines.pause_end,
        deadlines.rate,
        deadlines.linger_end,
        retry,
    ];
    needs_store
        .chain(others.into_iter().flatten())
        .min()
        .unwrap_or(now + idle)
        .max(now + MIN_SLEEP)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(10);
    const MS: Duration = Duration::from_millis(1);

    /// A lane mid-delivery when its store went away: a commit is wanted since long, the
    /// renewal is overdue, a key fell due.
    fn overdue(now: Instant) -> Deadlines {
        Deadlines {
            fetch: Some(now - 3 * IDLE),
            commit: Some(now - IDLE),
            renew: Some(now - 2 * IDLE),
            ..Deadlines::default()
        }
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap_and_a_success_resets_it() {
        let now = Instant::now();
        let mut store = StoreBackoff::default();
        assert!(store.ready(now));
        let mut waits = Vec::new();
        for _ in 0..8 {
            waits.push(store.failed(now));
        }
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000].map(ms),
            "from STORE_RETRY_MIN, doubling, up to STORE_RETRY_MAX"
        );
        assert!(!store.ready(now));
        assert!(!store.ready(now + ms(4999)));
        assert!(store.ready(now + ms(5000)));
        store.succeeded();
        assert!(store.ready(now));
        assert_eq!(store.next_retry(now), None);
        assert_eq!(store.failed(now), STORE_RETRY_MIN);
    }

    #[test]
    fn a_retry_time_that_came_is_used_up_and_the_next_is_a_backoff_later() {
        let t0 = Instant::now();
        let mut store = StoreBackoff::default();
        store.failed(t0); // retry at t0 + 100 ms; the next failure waits 200 ms
        assert_eq!(store.next_retry(t0), Some(t0 + 100 * MS));
        let t1 = t0 + 100 * MS;
        assert!(store.ready(t1));
        // The pass at t1 started what it could; an operation is hanging on the dead store.
        assert_eq!(store.next_retry(t1), Some(t1 + 200 * MS));
        assert!(!store.ready(t1 + 199 * MS));
        assert_eq!(store.next_retry(t1 + 50 * MS), Some(t1 + 200 * MS));
    }

    #[test]
    fn while_the_store_fails_the_wake_up_waits_for_its_retry_time() {
        let t0 = Instant::now();
        let mut store = StoreBackoff::default();
        store.failed(t0);
        let d = overdue(t0);
        assert_eq!(next_wake(&d, &mut store, t0, IDLE), t0 + 100 * MS);
        // Woken at the retry time: the next wake-up is a backoff away, not in the past.
        let t1 = t0 + 100 * MS;
        assert_eq!(next_wake(&d, &mut store, t1, IDLE), t1 + 200 * MS);
    }

    #[test]
    fn an_outage_never_yields_a_wake_up_in_the_past_and_wakes_at_most_every_backoff() {
        let start = Instant::now();
        let mut now = start;
        let lease_out = start + Duration::from_secs(20);
        let mut store = StoreBackoff::default();
        store.failed(start);
        let mut wakes = 0;
        // Ten minutes of a dead store: every store operation fails, some after hanging for
        // the pool's acquire timeout; calls are cut off once the lease may have run out.
        while now < start + Duration::from_secs(600) {
            let d = Deadlines {
                lease_out: Some(lease_out),
                ..overdue(now)
            };
            let wake = next_wake(&d, &mut store, now, IDLE);
            let shortest = if lease_out > now {
                STORE_RETRY_MIN.min(lease_out - now)
            } else {
                STORE_RETRY_MIN
            };
            assert!(
                wake - now >= shortest,
                "woke after {:?} at {:?}",
                wake - now,
                now - start
            );
            wakes += 1;
            if wakes % 3 == 0 {
                store.failed(wake);
            }
            now = wake;
        }
        // Ten minutes at 5 s, plus the ramp: about 120 wake-ups, not millions.
        assert!(wakes < 200, "{wakes} wake-ups");
    }

    #[test]
    fn store_deadlines_in_the_future_keep_their_time() {
        let now = Instant::now();
        let mut store = StoreBackoff::default();
        let d = Deadlines {
            commit: Some(now + 50 * MS),
            renew: Some(now + IDLE),
            ..Deadlines::default()
        };
        assert_eq!(next_wake(&d, &mut store, now, IDLE), now + 50 * MS);
        // While the store fails, a later deadline is kept; an earlier one waits.
        store.failed(now);
        assert_eq!(next_wake(&d, &mut store, now, IDLE), now + 100 * MS);
        let d = Deadlines {
            commit: Some(now + 300 * MS),
            ..Deadlines::default()
        };
        assert_eq!(next_wake(&d, &mut store, now, IDLE), now + 100 * MS);
    }

    #[test]
    fn overdue_store_deadlines_of_a_healthy_store_are_left_to_events() {
        // The work was started (or waits for an operation in flight): sleep until the other
        // deadlines, or the idle time.
        let now = Instant::now();
        let mut store = StoreBackoff::default();
        assert_eq!(next_wake(&overdue(now), &mut store, now, IDLE), now + IDLE);
        let d = Deadlines {
            pause_end: Some(now + 2 * IDLE),
            rate: Some(now + 20 * MS),
            ..overdue(now)
        };
        assert_eq!(next_wake(&d, &mut store, now, IDLE), now + 20 * MS);
    }

    #[test]
    fn the_lease_running_out_wakes_the_lane_whatever_the_store() {
        let now = Instant::now();
        let mut store = StoreBackoff::default();
        for _ in 0..6 {
            store.failed(now); // retry in 3.2 s
        }
        let d = Deadlines {
            lease_out: Some(now + 2 * MS),
            ..overdue(now)
        };
        assert_eq!(next_wake(&d, &mut store, now, IDLE), now + 2 * MS);
        // Once it ran out (and the calls were cancelled) it is no deadline any more.
        let later = now + 3 * MS;
        assert!(next_wake(&d, &mut store, later, IDLE) > later + Duration::from_secs(1));
    }

    #[test]
    fn the_wake_up_is_never_now() {
        let now = Instant::now();
        let mut store = StoreBackoff::default();
        let d = Deadlines {
            rate: Some(now),
            ..Deadlines::default()
        };
        assert_eq!(next_wake(&d, &mut store, now, IDLE), now + MIN_SLEEP);
    }
}
