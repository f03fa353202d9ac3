//! How an active period ends: the lane ran dry and gives its lease back, the host stops (or the
//! plugin went away, or an operator paused the lane) after its calls in flight, or the host
//! hands the lane to another host.

use std::time::Duration;

use tokio::time::Instant;

use super::active::Active;
use super::{End, LaneRunner, SHUTDOWN_GRACE, outcomes};
use crate::lane::Decision;

impl LaneRunner {
    /// Ran dry (everything written): give the lease back.
    pub(super) async fn release(&self, mut st: Active) -> End {
        outcomes::log_held_back(&self.lane, &mut st.log_budget, None);
        match self.give_back(&st).await {
            Ok(()) => tracing::debug!(lane = %self.lane, "lane ran dry; lease released"),
            Err(e) => {
                tracing::warn!(lane = %self.lane, error = %e, "releasing the lane failed; its lease will expire")
            }
        }
        End::Released(st.due.next())
    }

    /// This host holds more than its share: stop, then tell the other hosts.
    pub(super) async fn hand_over(&self, st: Active) -> End {
        self.stop(st, End::HandedOver).await;
        self.announce_handover().await;
        End::HandedOver
    }

    /// Shutdown: let calls in flight finish, hand back what was not sent, write, release.
    pub(super) async fn stop(&self, mut st: Active, end: End) -> End {
        st.lane.release_queued();
        if let Some(h) = st.reading.take() {
            h.abort();
        }
        if let Some(h) = st.fetching.take() {
            h.abort();
        }
        self.finish_calls(&mut st).await;
        st.lane.release_queued();
        outcomes::log_held_back(&self.lane, &mut st.log_budget, None);
        // The last writes: what is committing now, then what is staged.
        for attempt in 0..4 {
            if let Some(h) = st.committing.take()
                && let Ok((commit, started, result)) = h.await
                && self.commit_done(&mut st, commit, started, result).is_err()
            {
                return end;
            }
            if !st.lane.wants_commit() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            self.start_commit(&mut st);
        }
        if let Err(e) = self.give_back(&st).await {
            tracing::warn!(lane = %self.lane, error = %e, "releasing the lane at shutdown failed; its lease will expire");
        }
        end
    }

    /// Waits up to [`SHUTDOWN_GRACE`] for the calls in flight; the rest are released.
    async fn finish_calls(&self, st: &mut Active) {
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !st.calls.is_empty() {
            match tokio::time::timeout_at(deadline, st.calls.next()).await {
                Ok(Some((jobs, report))) => self.apply(st, jobs, report),
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(lane = %self.lane, "calls still running at shutdown; the next owner delivers them again");
                    let now = self.clock.now();
                    for job in st.calls.cancel_all() {
                        st.lane.complete(job, Decision::Released, now);
                    }
                    break;
                }
            }
        }
    }
}
