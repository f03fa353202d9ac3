//! The state of one active period of a lane runner: from acquiring the lease to giving it up.

use std::time::Duration;

use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Breaker, Calls, RateLimit, STORE_RETRY_MIN};
use crate::lane::Lane;
use crate::store::{BlockedFetch, CommitResult, LaneCommit, Lease, LogRead, StoreError};

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
    pub(super) next_due: Option<OffsetDateTime>,
    pub(super) paused_until: Option<Instant>,
    /// When the lease was last renewed (a commit or a renewal that started then succeeded).
    pub(super) renewed_at: Instant,
    pub(super) last_commit: Instant,
    pub(super) store_retry_at: Option<Instant>,
    pub(super) store_backoff: Duration,
    pub(super) breaker: Breaker,
    pub(super) dry_since: Option<Instant>,
    pub(super) rng: rand::rngs::StdRng,
    pub(super) rate: Option<RateLimit>,
}

impl Active {
    pub(super) fn pause(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }

    pub(super) fn store_ok(&mut self) {
        self.store_retry_at = None;
        self.store_backoff = STORE_RETRY_MIN;
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
