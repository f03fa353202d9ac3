//! The state of one active period of a lane runner: from acquiring the lease to giving it up.

use std::time::Duration;

use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Breaker, Calls, LogBudget, RateLimit, STORE_RETRY_MIN};
use crate::lane::{Decision, Lane};
use sluice_store::{BlockedFetch, CommitResult, LaneCommit, Lease, LogRead, StoreError};

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
    pub(super) batch_cap: BatchCap,
    /// Per-job log lines of this lane (failures, aborts) are rate limited.
    pub(super) log_budget: LogBudget,
}

/// Jobs per call after a destination said "too large" (413): halved at each such answer,
/// doubled back after a run of clean calls.
#[derive(Debug, Default)]
pub(super) struct BatchCap {
    cap: Option<usize>,
    clean_calls: u32,
}

/// Clean calls at the cap before it doubles.
const CLEAN_CALLS_TO_GROW: u32 = 8;

impl BatchCap {
    /// The call size to use, given the plugin's batch size.
    pub(super) fn limit(&self, batch_size: usize) -> usize {
        self.cap.map_or(batch_size, |c| c.min(batch_size)).max(1)
    }

    pub(super) fn observe(
        &mut self,
        call_len: usize,
        too_large: bool,
        decisions: &[Decision],
        lane: &sluice_store::LaneId,
    ) {
        if too_large {
            let cap = (call_len / 2).max(1);
            tracing::info!(lane = %lane, jobs_per_call = cap, "destination answered too large; halving the calls");
            self.cap = Some(cap);
            self.clean_calls = 0;
            return;
        }
        let Some(cap) = self.cap else { return };
        if call_len >= cap && decisions.iter().all(|d| matches!(d, Decision::Delivered)) {
            self.clean_calls += 1;
            if self.clean_calls >= CLEAN_CALLS_TO_GROW {
                self.cap = Some(cap * 2);
                self.clean_calls = 0;
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_store::LaneId;

    #[test]
    fn too_large_halves_the_calls_and_clean_calls_grow_them_back() {
        let lane = LaneId {
            workspace_id: "w".into(),
            destination_id: "d".into(),
        };
        let mut cap = BatchCap::default();
        assert_eq!(cap.limit(100), 100);
        cap.observe(100, true, &[], &lane);
        assert_eq!(cap.limit(100), 50);
        cap.observe(50, true, &[], &lane);
        assert_eq!(cap.limit(100), 25);
        let clean = vec![Decision::Delivered; 25];
        for _ in 0..CLEAN_CALLS_TO_GROW - 1 {
            cap.observe(25, false, &clean, &lane);
        }
        assert_eq!(cap.limit(100), 25, "not yet");
        cap.observe(25, false, &clean, &lane);
        assert_eq!(cap.limit(100), 50);
        // A call with a failure does not count as clean.
        let mut mixed = vec![Decision::Delivered; 49];
        mixed.push(Decision::Released);
        for _ in 0..CLEAN_CALLS_TO_GROW {
            cap.observe(50, false, &mixed, &lane);
        }
        assert_eq!(cap.limit(100), 50);
        cap.observe(1, true, &[], &lane);
        assert_eq!(cap.limit(100), 1, "never below one");
    }
}
