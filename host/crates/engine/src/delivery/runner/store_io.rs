//! A lane runner's store operations, the only place the runner calls the store. While the
//! lane is active they are spawned as tasks, so that reading the log, writing outcomes,
//! fetching due keys and renewing the lease overlap with plugin calls; their results come back
//! to the loop in `step.rs` as events, handled by the `*_done` methods here. A failure starts
//! the store's backoff (`wake.rs`), a success ends it.

use tokio::time::Instant;

use super::active::Active;
use super::{End, LaneRunner, PROGRESS_INTERVAL};
use sluice_store::{
    AcquiredLane, BlockedFetch, CommitResult, FetchLimits, LaneCommit, LogRead, ReadLimits,
    StoreError,
};

impl LaneRunner {
    /// Tries to take the lane's lease; `None` if another live host holds it.
    pub(super) async fn acquire(&self) -> Result<Option<AcquiredLane>, StoreError> {
        self.store
            .lane_acquire(
                &self.lane,
                self.me,
                self.clock.now(),
                self.settings.lease_ttl,
            )
            .await
    }

    /// Gives the lease back, with when the lane's next blocked key falls due.
    pub(super) async fn give_back(&self, st: &Active) -> Result<(), StoreError> {
        self.store
            .lane_release(&st.lease, st.due.next())
            .await
            .map(|_| ())
    }

    /// Tells the other hosts that this host left lanes of the workspace to them.
    pub(super) async fn announce_handover(&self) {
        if let Err(e) = self
            .store
            .lane_announce(self.me, &self.lane.workspace_id)
            .await
        {
            tracing::warn!(lane = %self.lane, error = %e, "could not tell the other hosts; maintenance will");
        }
    }

    /// Whether an operator paused the lane (a store error counts as not paused).
    pub(super) async fn paused_by_operator(&self) -> bool {
        match self.store.lane_paused(&self.lane).await {
            Ok(paused) => paused,
            Err(e) => {
                tracing::warn!(lane = %self.lane, error = %e, "cannot read whether the lane is paused");
                false
            }
        }
    }

    /// Whether to write now: staged rows and claims at once, bare progress at most every
    /// [`PROGRESS_INTERVAL`].
    pub(super) fn commit_due(&self, st: &Active) -> bool {
        st.lane.wants_commit()
            && (st.lane.has_staged_writes()
                || st.lane.claim_behind()
                || st.last_commit.elapsed() >= PROGRESS_INTERVAL)
    }

    /// Whether to renew the lease now: a third of its time went by and no commit (which
    /// renews it too) is under way or wanted.
    pub(super) fn renew_due(&self, st: &Active) -> bool {
        st.committing.is_none()
            && st.renewing.is_none()
            && !st.lane.wants_commit()
            && st.renewed_at.elapsed() > self.settings.lease_ttl / 3
    }

    pub(super) fn start_renew(&self, st: &mut Active) {
        let (store, lease, now, ttl) = (
            self.store.clone(),
            st.lease.clone(),
            self.clock.now(),
            self.settings.lease_ttl,
        );
        st.renewing = Some(tokio::spawn(async move {
            let started = Instant::now();
            (started, store.lane_renew(&lease, now, ttl).await)
        }));
    }

    pub(super) fn start_commit(&self, st: &mut Active) {
        let now = self.clock.now();
        let Some(commit) = st.lane.take_commit(&st.lease, now, self.settings.lease_ttl) else {
            return;
        };
        let store = self.store.clone();
        st.committing = Some(tokio::spawn(async move {
            let started = Instant::now();
            let result = store.lane_commit(&commit).await;
            (commit, started, result)
        }));
    }

    pub(super) fn commit_done(
        &self,
        st: &mut Active,
        commit: LaneCommit,
        started: Instant,
        result: Result<CommitResult, StoreError>,
    ) -> Result<(), End> {
        match result {
            Ok(result) => {
                st.lane.commit_written(&commit, result);
                st.renewed_at = st.renewed_at.max(started);
                st.last_commit = Instant::now();
                st.store_backoff.succeeded();
                // Blocks and parks change when keys fall due.
                let mut due = commit.block_keys.iter().map(|(_, t)| *t).min();
                if !commit.ensure_keys.is_empty() || !commit.check_keys.is_empty() {
                    due = Some(due.map_or(commit.now, |d| d.min(commit.now)));
                }
                if let Some(d) = due {
                    st.due.note(d);
                }
                Ok(())
            }
            Err(StoreError::LeaseLost(_)) => {
                tracing::warn!(lane = %self.lane, "lease lost to another host; dropping what this host held (the new owner delivers it again)");
                st.abandon();
                Err(End::Lost)
            }
            Err(e) => {
                st.lane.commit_failed(commit);
                self.store_error(st, &e, "commit");
                Ok(())
            }
        }
    }

    pub(super) fn renew_done(
        &self,
        st: &mut Active,
        started: Instant,
        result: Result<bool, StoreError>,
    ) -> Result<(), End> {
        match result {
            Ok(true) => {
                st.renewed_at = st.renewed_at.max(started);
                st.store_backoff.succeeded();
                Ok(())
            }
            Ok(false) => {
                tracing::warn!(lane = %self.lane, "lease lost to another host");
                st.abandon();
                Err(End::Lost)
            }
            Err(e) => {
                self.store_error(st, &e, "lease renewal");
                Ok(())
            }
        }
    }

    pub(super) fn start_read(&self, st: &mut Active, held_jobs: usize, held_bytes: usize) {
        let s = &self.settings;
        let limits = ReadLimits {
            max_events: s.shape.max_held_jobs - held_jobs,
            max_bytes: s.max_held_bytes - held_bytes,
        };
        let (store, lane, links) = (
            self.store.clone(),
            self.lane.clone(),
            self.links.load_full(),
        );
        let (after, skip) = (st.lane.read_to(), st.lane.skip_rows_to());
        st.woken_while_reading = false;
        st.reading = Some(tokio::spawn(async move {
            store.log_read(&lane, &links, after, skip, limits).await
        }));
    }

    pub(super) fn read_done(&self, st: &mut Active, read: Result<LogRead, StoreError>) {
        match read {
            Ok(read) => {
                crate::metrics::log_read(&self.lane.destination_id, read.from);
                st.store_backoff.succeeded();
                st.log_more = !read.exhausted || st.woken_while_reading;
                st.lane
                    .accept_log(read.events, read.read_to, self.clock.now());
            }
            Err(e) => self.store_error(st, &e, "log read"),
        }
    }

    pub(super) fn start_fetch(&self, st: &mut Active, probing: bool) {
        let s = &self.settings;
        let (_, held_bytes) = st.lane.held();
        let limits = if probing {
            FetchLimits {
                max_keys: 1,
                max_jobs_per_key: 1,
                max_bytes: 1,
            }
        } else {
            FetchLimits {
                max_keys: s.shape.batch_size.max(1) * 2,
                max_jobs_per_key: s.limits.max_jobs_per_key,
                max_bytes: s.max_held_bytes - held_bytes,
            }
        };
        let exclude = st.lane.fetch_exclusions();
        let (store, lane, now) = (self.store.clone(), self.lane.clone(), self.clock.now());
        st.due.fetch_started();
        st.fetching = Some(tokio::spawn(async move {
            store.blocked_fetch(&lane, now, &exclude, limits).await
        }));
    }

    pub(super) fn fetch_done(&self, st: &mut Active, fetch: Result<BlockedFetch, StoreError>) {
        match fetch {
            Ok(fetch) => {
                st.store_backoff.succeeded();
                // Keys made due while the fetch ran (a commit, an operator) stand beside it.
                st.due.fetched(fetch.next_due);
                st.lane.accept_rows(fetch.jobs);
                st.lane.accept_empty_keys(fetch.empty_keys);
            }
            Err(e) => {
                st.due.fetch_failed();
                self.store_error(st, &e, "fetch of blocked keys");
            }
        }
    }

    pub(super) fn store_error(&self, st: &mut Active, e: &StoreError, what: &str) {
        let retry_in = st.store_backoff.failed(Instant::now());
        tracing::warn!(lane = %self.lane, error = %e, retry_in = ?retry_in, "{what} failed; retrying");
    }
}
