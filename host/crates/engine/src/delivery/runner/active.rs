//! The state of one active period of a lane runner: from acquiring the lease to giving it up.

use rand::SeedableRng;
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::LaneSettings;
use super::batch_cap::BatchCap;
use super::due::DueKeys;
use super::wake::StoreBackoff;
use crate::delivery::breaker::Breaker;
use crate::delivery::calls::Calls;
use crate::delivery::log_budget::LogBudget;
use crate::delivery::rate::RateLimit;
use crate::lane::Lane;
use sluice_store::{
    AcquiredLane, BlockedFetch, CommitResult, LaneCommit, Lease, LogRead, StoreError,
};

/// Awaits a spawned store operation; pends forever when there is none.
pub(super) async fn join<T>(slot: &mut Option<JoinHandle<T>>) -> Option<T> {
    match slot {
        Some(handle) => {
            let result = handle.await;
            *slot = None;
            result.ok()
        }
        None => std::future::pending().await,
    }
}

pub(super) type Commit = (LaneCommit, Instant, Result<CommitResult, StoreError>);

/// State of an active period.
pub(super) struct Active {
    pub(super) lane: Lane,
    pub(super) lease: Lease,
    pub(super) calls: Calls,
    pub(super) reading: Option<JoinHandle<Result<LogRead, StoreError>>>,
    pub(super) committing: Option<JoinHandle<Commit>>,
    pub(super) fetching: Option<JoinHandle<Result<BlockedFetch, StoreError>>>,
    pub(super) renewing: Option<JoinHandle<(Instant, Result<bool, StoreError>)>>,
    /// The log may hold more for this lane (a read was cut short, or a wake-up came).
    pub(super) log_more: bool,
    /// A wake-up came while a read was under way: read again after it.
    pub(super) woken_while_reading: bool,
    /// When the next blocked key falls due.
    pub(super) due: DueKeys,
    pub(super) paused_until: Option<Instant>,
    /// When the lease was last renewed (a commit or a renewal that started then succeeded).
    pub(super) renewed_at: Instant,
    pub(super) last_commit: Instant,
    /// Whether the store answers, and when to try it again.
    pub(super) store_backoff: StoreBackoff,
    pub(super) breaker: Breaker,
    pub(super) dry_since: Option<Instant>,
    pub(super) rng: rand::rngs::StdRng,
    pub(super) rate: Option<RateLimit>,
    pub(super) batch_cap: BatchCap,
    /// Per-job log lines of this lane (failures, aborts) are rate limited.
    pub(super) log_budget: LogBudget,
}

impl Active {
    /// The state right after acquiring the lease (`now` is the clock's time).
    pub(super) fn new(acquired: &AcquiredLane, s: &LaneSettings, now: OffsetDateTime) -> Active {
        Active {
            lane: Lane::resume(acquired, s.limits),
            lease: acquired.lease.clone(),
            calls: Calls::default(),
            reading: None,
            committing: None,
            fetching: None,
            renewing: None,
            log_more: true,
            woken_while_reading: false,
            due: DueKeys::starting((!acquired.blocked_keys.is_empty()).then_some(now)),
            paused_until: None,
            renewed_at: Instant::now(),
            last_commit: Instant::now(),
            store_backoff: StoreBackoff::default(),
            breaker: Breaker::default(),
            dry_since: None,
            rng: rand::rngs::StdRng::from_rng(&mut rand::rng()),
            rate: s.rate_limit.map(|r| RateLimit::new(r, Instant::now())),
            batch_cap: Default::default(),
            log_budget: LogBudget::new(Instant::now()),
        }
    }

    pub(super) fn pause(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }

    /// No store operation under way.
    pub(super) fn idle_store(&self) -> bool {
        self.reading.is_none()
            && self.committing.is_none()
            && self.fetching.is_none()
            && self.renewing.is_none()
    }

    /// The lane is someone else's now: stop everything.
    pub(super) fn abandon(&mut self) {
        self.calls.cancel_all();
        for h in [
            self.reading.take().map(|h| h.abort_handle()),
            self.fetching.take().map(|h| h.abort_handle()),
        ]
        .into_iter()
        .flatten()
        {
            h.abort();
        }
    }
}
