//! The delivery loop of one lane on this host.
//!
//! Idle, a lane waits: for a wake-up (ingest on this host, another host's NOTIFY, maintenance
//! finding it orphaned) or for its next retry to fall due. It issues no statement while it
//! waits. Woken, it tries to take the lane's lease; if another live host holds it, it goes
//! back to waiting (that host was woken too).
//!
//! Active, it runs [`Lane`] against the store and the plugin. Everything that waits runs
//! concurrently, so that the database, the plugin and the lane's own bookkeeping overlap:
//! - one log read at a time (bounded by the jobs and bytes held); its jobs go out only once a
//!   commit has recorded how far the lane read, so the store always knows what may be in
//!   flight;
//! - one fetch of due blocked keys' rows at a time;
//! - up to `max_in_flight` plugin calls (one job per key per call, or a run of a key's
//!   consecutive jobs when the plugin declares ordered batches); the jobs the destination's
//!   filter keeps back are finished as the call is made, without reaching the plugin;
//! - one commit at a time (outcomes, parked jobs, progress; it also renews the lease).
//!
//! Outcomes become decisions (`retry`), feed the circuit breaker, and throttles pause the lane.
//! When the store is unreachable the lane keeps what it knows in memory and retries; once its
//! lease may have expired it cancels its calls and stops sending (another host may own the
//! lane by now). When the store is back, its commit goes through if the lane is still its own;
//! otherwise the new owner delivers those jobs again. While it fails, every wake-up that needs
//! the store waits for the store's retry time (a backoff up to [`STORE_RETRY_MAX`]), so a long
//! outage costs a wake-up every few seconds, not a busy loop. After running dry it keeps the
//! lease for `linger`, then gives it back.
//!
//! - `step.rs`: the active period as a small state machine: a pass starts what it can without
//!   waiting, then the loop waits for one event and hands it to the method for it;
//! - `wake.rs`: when the loop wakes next, and the store's backoff (pure, unit-tested);
//! - `store_io.rs`: every store call (spawned or awaited) and what its result changes;
//! - `outcomes.rs`: a call's outcomes into decisions, log lines and counters;
//! - `finish.rs`: how an active period ends (released, stopped, handed over);
//! - `active.rs`: the state of an active period; `batch_cap.rs`: the call size after a 413;
//!   `due.rs`: when blocked keys fall due (pure, unit-tested).

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod active;
mod batch_cap;
mod due;
mod finish;
mod outcomes;
mod step;
mod store_io;
mod wake;

use super::pool::{InstancePool, LaneShape};
use super::share::HostShare;
use crate::lane::LaneLimits;
use sluice_core::clock::SharedClock;
use sluice_store::{LaneId, Store};

/// How long the lane pauses when no plugin instance can be created.
const UNAVAILABLE_PAUSE: Duration = Duration::from_secs(10);
/// Commits that only move the cursor are spaced at least this far apart.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(50);
/// First and longest pause after a store error (see `wake.rs`).
const STORE_RETRY_MIN: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(5);
/// When a lane left to other hosts (this one held its share) is looked at again.
const HANDOVER_RETRY: Duration = Duration::from_secs(5);
/// How long a stopping lane waits for its calls in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// How a lane behaves; fixed per destination.
#[derive(Debug, Clone)]
pub struct LaneSettings {
    pub lease_ttl: Duration,
    /// Keep the lease this long after running dry (saves an acquisition under trickle load).
    pub linger: Duration,
    /// Event bytes held in memory (read ahead, queued, in flight).
    pub max_held_bytes: usize,
    pub limits: LaneLimits,
    /// Events per second at most (config `rate_limit`).
    pub rate_limit: Option<f64>,
    /// What the plugin's current version asks (read from the pool at each acquisition).
    pub shape: LaneShape,
}

/// Everything one lane's loop needs.
pub struct LaneRunner {
    pub lane: LaneId,
    /// The links feeding the lane; the catalog follower replaces them.
    pub links: Arc<arc_swap::ArcSwap<Vec<sluice_core::catalog::Link>>>,
    /// The destination's event filter, applied to each call before the plugin; the catalog
    /// follower replaces it, and the next call uses the new one.
    pub filter: Arc<arc_swap::ArcSwap<sluice_core::EventFilter>>,
    pub store: Store,
    pub pool: Arc<InstancePool>,
    pub settings: LaneSettings,
    pub wake: Arc<Notify>,
    /// An operator changed the lane (made keys due, paused it).
    pub operator: Arc<Notify>,
    pub shutdown: CancellationToken,
    pub me: Uuid,
    pub clock: SharedClock,
    pub share: Arc<HostShare>,
}

/// Why an active period ended.
enum End {
    /// Ran dry and gave the lease back; try again at this time (a blocked key falls due).
    Released(Option<OffsetDateTime>),
    /// Another host owns the lane now.
    Lost,
    /// Shutting down.
    Stopped,
    /// Given back because this host held more than its share.
    HandedOver,
    /// Given back because the destination's plugin was removed.
    Paused,
}

impl LaneRunner {
    pub async fn run(mut self) {
        tracing::debug!(lane = %self.lane, "lane ready");
        // Look once at start: there may be work left from before.
        let mut next_try: Option<Instant> = Some(Instant::now());
        loop {
            let woken = match next_try {
                Some(at) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => true,
                    _ = self.wake.notified() => true,
                    _ = self.operator.notified() => true,
                    _ = self.shutdown.cancelled() => false,
                },
                None => tokio::select! {
                    _ = self.wake.notified() => true,
                    _ = self.operator.notified() => true,
                    _ = self.shutdown.cancelled() => false,
                },
            };
            if !woken {
                break;
            }
            if !self.pool.is_available() {
                // The plugin set says why (at start, before the first load, this is routine).
                tracing::debug!(lane = %self.lane, "no plugin loaded for this destination; the lane waits and its jobs stay pending");
                tokio::select! {
                    _ = self.pool.wait_available() => {}
                    _ = self.shutdown.cancelled() => break,
                }
                tracing::debug!(lane = %self.lane, plugin = %self.pool.plugin_name(), "plugin loaded; the lane resumes");
            }
            if let Some(shape) = self.pool.shape() {
                self.settings.shape = shape;
            }
            let mut recounts = self.share.recounts();
            if !self.share.has_room() {
                // This host holds its share; another host takes this lane. Look again once
                // the lanes are counted again (the count may be older than this lane's work),
                // or later in case no host does.
                tokio::select! {
                    _ = recounts.changed() => {}
                    _ = tokio::time::sleep(HANDOVER_RETRY) => {}
                    _ = self.shutdown.cancelled() => break,
                }
                next_try = Some(Instant::now());
                continue;
            }
            next_try = match self.acquire().await {
                Ok(Some(acquired)) => {
                    self.share.took();
                    let end = self.active(acquired).await;
                    if !matches!(end, End::HandedOver) {
                        self.share.gave_up();
                    }
                    match end {
                        End::Released(due) => due.map(|t| self.instant_of(t)),
                        End::Lost => None,
                        End::HandedOver => Some(Instant::now() + HANDOVER_RETRY),
                        End::Paused => Some(Instant::now()),
                        End::Stopped => break,
                    }
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(lane = %self.lane, error = %e, "cannot acquire the lane; retrying");
                    Some(Instant::now() + Duration::from_secs(1))
                }
            };
        }
        tracing::info!(lane = %self.lane, "lane stopped");
    }

    fn instant_of(&self, t: OffsetDateTime) -> Instant {
        let d = t - self.clock.now();
        Instant::now() + Duration::try_from(d).unwrap_or_default()
    }
}
