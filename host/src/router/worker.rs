//! The delivery loop of one destination: claim → deliver → record, with up to `max_in_flight`
//! claims under way at once.
//!
//! The loop sleeps when there is nothing due, and wakes on ingest (an in-process notification),
//! when a delivery finishes (it may have unblocked keys), when the earliest retry falls due, or
//! at the latest after [`IDLE_POLL`] (jobs written by another process, clock skew).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::breaker::Breaker;
use super::delivery::deliver;
use super::pool::InstancePool;
use super::retry::RetryPolicy;
use crate::store::{ClaimedJob, JobUpdate, Store};

/// Upper bound on how long an idle destination sleeps before looking at the store again.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// A claim carries this many `send` calls' worth of jobs (see `claim_size`).
const WAVES_PER_CLAIM: usize = 10;
/// Shortest idle sleep.
const MIN_IDLE_WAIT: Duration = Duration::from_millis(20);
/// How long a destination pauses when no plugin instance can be created.
const UNAVAILABLE_PAUSE: Duration = Duration::from_secs(10);
/// Pause after a store error before claiming again.
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Everything one destination's loop needs.
pub struct DestinationWorker {
    pub destination_id: String,
    pub store: Store,
    pub pool: Arc<InstancePool>,
    pub policy: RetryPolicy,
    pub batch_size: usize,
    pub max_in_flight: usize,
    pub wake: Arc<Notify>,
    pub shutdown: CancellationToken,
    pub breaker: std::sync::Mutex<Breaker>,
}

impl DestinationWorker {
    /// Jobs per claim: several waves' worth, so that a key with a backlog moves several jobs
    /// per store round trip (they still go out one after another).
    /// While the circuit breaker is open, a claim is a single probe job.
    fn claim_size(&self) -> usize {
        let probing = self.breaker.lock().map(|b| b.probing()).unwrap_or(false);
        if probing {
            1
        } else {
            self.batch_size * WAVES_PER_CLAIM
        }
    }

    pub async fn run(self) {
        let me = Arc::new(self);
        let permits = Arc::new(Semaphore::new(me.max_in_flight));
        let paused_until = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let mut deliveries = JoinSet::new();
        tracing::info!(destination = %me.destination_id, plugin = %me.pool.plugin_name(), "router started");

        loop {
            while deliveries.try_join_next().is_some() {}
            if me.shutdown.is_cancelled() {
                break;
            }
            let pause = paused_until.lock().ok().and_then(|p| *p);
            if let Some(until) = pause
                && until > Instant::now()
            {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = me.shutdown.cancelled() => break,
                }
                continue;
            }
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = me.shutdown.cancelled() => break,
            };
            let claim_size = me.claim_size();
            match me.store.job_claim(&me.destination_id, claim_size).await {
                Ok(jobs) if !jobs.is_empty() => {
                    // A short claim took every job that is claimable now; claiming again
                    // before something finishes or arrives would only rescan the backlog.
                    // A probe is waited for before anything else is claimed.
                    let drained = jobs.len() < claim_size || claim_size == 1;
                    deliveries.spawn(me.clone().deliver_and_record(
                        jobs,
                        permit,
                        paused_until.clone(),
                    ));
                    if drained && !me.idle_wait().await {
                        break;
                    }
                }
                Ok(_) => {
                    drop(permit);
                    if !me.idle_wait().await {
                        break;
                    }
                }
                Err(e) => {
                    drop(permit);
                    tracing::warn!(destination = %me.destination_id, error = %e, "claim failed");
                    tokio::select! {
                        _ = tokio::time::sleep(STORE_ERROR_PAUSE) => {}
                        _ = me.shutdown.cancelled() => break,
                    }
                }
            }
        }
        // Let deliveries under way finish their wave and record outcomes.
        while deliveries.join_next().await.is_some() {}
        tracing::info!(destination = %me.destination_id, "router stopped");
    }

    /// One claim through the plugin; records the outcomes, applies a pause the delivery asked
    /// for, then frees its in-flight slot and wakes the loop (keys may have been unblocked).
    async fn deliver_and_record(
        self: Arc<Self>,
        jobs: Vec<ClaimedJob>,
        permit: OwnedSemaphorePermit,
        paused_until: Arc<std::sync::Mutex<Option<Instant>>>,
    ) {
        let report = deliver(
            &self.pool,
            &self.policy,
            self.batch_size,
            jobs,
            &self.shutdown,
        )
        .await;
        let opened = self.breaker.lock().ok().and_then(|mut b| {
            b.observe(
                &report.updates,
                self.policy.min_backoff,
                self.policy.max_backoff,
            )
        });
        if let Some(d) = opened {
            tracing::warn!(destination = %self.destination_id, pause = ?d, "destination failing for every key; pausing, then probing with one job");
        }
        let pause = [
            report.throttle,
            report.unavailable.as_ref().map(|_| UNAVAILABLE_PAUSE),
            opened,
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(d) = pause
            && let Ok(mut p) = paused_until.lock()
        {
            let until = Instant::now() + d;
            *p = Some(p.map_or(until, |old| old.max(until)));
        }
        self.record(&report.updates).await;
        drop(permit);
        self.wake.notify_one();
    }

    /// Sleeps until woken, the next retry is due, or the idle poll; `false` on shutdown.
    async fn idle_wait(&self) -> bool {
        let mut wait = IDLE_POLL;
        if let Ok(Some(due)) = self.store.job_next_due(&self.destination_id).await {
            let until = due - time::OffsetDateTime::now_utc();
            // A due retry that the claim did not take is blocked by a job in flight, whose
            // completion wakes us; the floor keeps a clock skew from spinning the loop.
            let until = Duration::try_from(until).unwrap_or_default();
            wait = wait.min(until).max(MIN_IDLE_WAIT);
        }
        tokio::select! {
            _ = self.wake.notified() => true,
            _ = tokio::time::sleep(wait) => true,
            _ = self.shutdown.cancelled() => false,
        }
    }

    /// Writes outcomes, retrying while the store is unreachable. If it never becomes
    /// reachable the jobs stay `executing` and are retried after the next start.
    async fn record(&self, updates: &[JobUpdate]) {
        let mut delay = Duration::from_millis(100);
        for attempt in 1.. {
            match self.store.job_complete_many(updates).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(destination = %self.destination_id, attempt, error = %e, "recording outcomes failed; retrying");
                    if attempt >= 30 {
                        tracing::error!(destination = %self.destination_id, jobs = updates.len(), "giving up recording outcomes; the jobs will be retried after restart");
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
