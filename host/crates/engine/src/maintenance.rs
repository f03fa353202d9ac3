//! Periodic work every host does, while there is work anywhere:
//! - **rescue**: lanes whose owner's lease expired, whose retry fell due while nobody held them,
//!   or whose events wait without an owner, are woken here so that this host takes them over
//!   (the lease rules in `store::lanes` decide who gets them);
//! - **datasets**: rotation, dropping and compaction (`store::datasets`);
//! - **drains**: deleting destinations deleted with `drain` once they have delivered what they
//!   had (`store::catalog::drain`); a pass that leaves one draining keeps polling;
//! - **dedup**: creating the next dedup partition before ingest needs it, and dropping
//!   partitions older than the window;
//! - **lane stats**: removing `lane_stats` rows older than a day (at most every ten minutes).
//!
//! At start it frees the lanes of earlier incarnations on this machine whose process is gone
//! (a `kill -9` and restart takes its lanes back at once instead of after the lease TTL).
//!
//! When a pass finds no work anywhere (no lease held, nothing due, no lane behind), the loop
//! stops polling and waits to be woken by ingest: an idle deployment issues no statements.
//!
//! Ingest wakes maintenance at every commit, and under load commits come every few
//! milliseconds; passes start at least [`MIN_PASS_GAP`] apart (or the interval, if shorter).
//! A pass is about ten statements, two of them writes that wait for a WAL flush: one per
//! commit, it took a third of the database time the ingest scenario spent on statements.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::delivery::share::HostShare;
use crate::wake::Wakers;
use sluice_core::clock::SharedClock;
use sluice_store::datasets::DatasetPolicy;
use sluice_store::{Dedup, HostInfo, Store};

/// Everything the maintenance loop needs.
pub struct Maintenance {
    pub store: Store,
    pub wakers: Wakers,
    pub share: Arc<HostShare>,
    /// How long a host may go without a heartbeat and still count as alive.
    pub host_stale_after: Duration,
    pub clock: SharedClock,
    pub datasets: DatasetPolicy,
    pub dedup: Dedup,
    pub interval: Duration,
    pub host: HostInfo,
    /// Woken by ingest on this host and by other hosts' notifications.
    pub wake: Arc<Notify>,
    pub shutdown: CancellationToken,
    /// This host's lane stats: flushed before maintenance goes idle.
    pub stats: crate::delivery::stats::Flusher,
    /// When this host last removed old `lane_stats` rows.
    pub stats_expired_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The shortest time between the starts of two passes. Nothing maintenance does is urgent to
/// the millisecond: lanes with work on this host are woken by ingest itself, other hosts by
/// NOTIFY, and a lane refused for want of room waits for the next count (`delivery::share`).
const MIN_PASS_GAP: Duration = Duration::from_millis(200);

/// How often old `lane_stats` rows are removed (they are kept a day: no hurry).
const STATS_EXPIRY_EVERY: Duration = Duration::from_secs(600);

impl Maintenance {
    /// Frees lanes of dead earlier incarnations on this machine.
    pub async fn reap_local(&self) {
        let earlier = match self.store.host_local_incarnations(&self.host).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list earlier incarnations");
                return;
            }
        };
        for (incarnation, pid) in earlier {
            if process_alive(pid) {
                continue;
            }
            match self.store.host_reap(incarnation).await {
                Ok(lanes) => {
                    tracing::info!(%incarnation, pid, lanes, "an earlier sluice on this machine is gone; its lanes are taken over now")
                }
                Err(e) => {
                    tracing::warn!(%incarnation, error = %e, "cannot free a dead incarnation's lanes")
                }
            }
        }
    }

    pub async fn run(self) {
        use futures_util::FutureExt;
        self.reap_local().await;
        let mut was_busy = true;
        let gap = MIN_PASS_GAP.min(self.interval);
        loop {
            let started = tokio::time::Instant::now();
            let busy = self.pass().await;
            if was_busy && !busy {
                // The last counts of the work that just ended, so that nothing is left to
                // write while idle.
                self.stats.flush().await;
                tracing::info!("nothing to do anywhere; maintenance waits for new work");
                // A wake-up that came during this pass is answered by it.
                let _ = self.wake.notified().now_or_never();
            }
            was_busy = busy;
            let wait = async {
                if busy {
                    tokio::select! {
                        _ = tokio::time::sleep(self.interval) => {}
                        _ = self.wake.notified() => {}
                    }
                } else {
                    self.wake.notified().await;
                }
            };
            tokio::select! {
                _ = wait => {}
                _ = self.shutdown.cancelled() => return,
            }
            // Woken soon after the last pass (ingest wakes it at every commit): the wake-ups
            // until the next start are answered by that one pass.
            tokio::select! {
                _ = tokio::time::sleep_until(started + gap) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// One pass; `true` if there is work somewhere (poll again after the interval).
    pub async fn pass(&self) -> bool {
        let now = self.clock.now();
        let mut busy = false;
        match self.store.lanes_orphaned(now).await {
            Ok((orphans, any_work)) => {
                busy |= any_work;
                for o in orphans {
                    tracing::debug!(lane = %o.lane, reason = o.reason, "waking a lane without an owner");
                    self.wakers.wake(&o.lane.destination_id);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "maintenance: finding orphaned lanes failed");
                busy = true;
            }
        }
        if busy {
            match self
                .store
                .host_heartbeat(self.host.incarnation, now, self.host_stale_after)
                .await
            {
                Ok((hosts, lanes)) => self.share.set(hosts, lanes),
                Err(e) => tracing::warn!(error = %e, "maintenance: heartbeat failed"),
            }
        }
        match self.store.dataset_rotate(&self.datasets, now, None).await {
            Ok(Some(change)) => {
                tracing::info!(?change, "dataset rotated");
                busy = true;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "maintenance: dataset rotation failed");
                busy = true;
            }
        }
        match self.store.dataset_retire(&self.datasets, now, None).await {
            Ok(changes) => {
                for change in changes {
                    tracing::info!(?change, "dataset retired");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "maintenance: dataset retirement failed");
                busy = true;
            }
        }
        match self.store.catalog_finish_drains().await {
            Ok(pass) => {
                if let Some((version, done)) = pass.finished {
                    for (workspace, destination) in done {
                        tracing::info!(%workspace, %destination, version, "destination drained and deleted");
                    }
                }
                busy |= pass.draining > 0;
            }
            Err(e) => {
                tracing::warn!(error = %e, "maintenance: finishing drains failed");
                busy = true;
            }
        }
        if !self.dedup.window.is_zero() {
            match self.store.dedup_prepare(self.dedup, now).await {
                Ok(false) => {}
                Ok(true) => tracing::debug!("the next dedup partition is created"),
                Err(e) => {
                    tracing::warn!(error = %e, "maintenance: creating the next dedup partition failed");
                    busy = true;
                }
            }
            match self.store.dedup_expire(self.dedup, now).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(partitions = n, "dedup partitions expired"),
                Err(e) => {
                    tracing::warn!(error = %e, "maintenance: dedup expiry failed");
                    busy = true;
                }
            }
        }
        if busy {
            self.expire_stats(now).await;
        }
        busy
    }

    /// Removes day-old `lane_stats` rows, at most every [`STATS_EXPIRY_EVERY`]. Only while
    /// busy: an idle deployment writes no stats, and issues no statements.
    async fn expire_stats(&self, now: time::OffsetDateTime) {
        {
            let mut last = self
                .stats_expired_at
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < STATS_EXPIRY_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        match self
            .store
            .lane_stats_expire(now, crate::delivery::stats::RETENTION)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "old lane stats removed"),
            Err(e) => tracing::warn!(error = %e, "maintenance: removing old lane stats failed"),
        }
    }
}

/// Whether a process with this pid exists (signal 0 checks without sending anything).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        // EPERM: it exists, owned by someone else.
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// A name for this machine *and* pid namespace: two processes with the same name can check
/// each other's pids. Hostname, boot id and the pid namespace's inode.
pub fn local_host_name() -> String {
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into());
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().to_string())
        .unwrap_or_default();
    let pidns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!("{hostname}/{boot}/{pidns}")
}
