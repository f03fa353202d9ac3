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
//!   consecutive jobs when the plugin declares ordered batches);
//! - one commit at a time (outcomes, parked jobs, progress; it also renews the lease).
//!
//! Outcomes become decisions (`retry`), feed the circuit breaker, and throttles pause the lane.
//! When the store is unreachable the lane keeps what it knows in memory and retries; once its
//! lease may have expired it cancels its calls and stops sending (another host may own the
//! lane by now). When the store is back, its commit goes through if the lane is still its own;
//! otherwise the new owner delivers those jobs again. After running dry it keeps the lease for
//! `linger`, then gives it back.

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod active;
mod outcomes;
mod store_io;

use self::active::{Active, join};
use super::breaker::Breaker;
use super::call::CallReport;
use super::calls::Calls;
use super::log_budget::LogBudget;
use super::pool::{InstancePool, LaneShape};
use super::rate::RateLimit;
use super::retry::{JobOutcome, decide};
use super::share::HostShare;
use crate::lane::{Decision, Job, Lane, LaneLimits};
use crate::metrics;
use sluice_core::clock::SharedClock;
use sluice_store::{AcquiredLane, LaneId, Store};

/// How long the lane pauses when no plugin instance can be created.
const UNAVAILABLE_PAUSE: Duration = Duration::from_secs(10);
/// Commits that only move the cursor are spaced at least this far apart.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(50);
/// First and longest pause after a store error.
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
    pub sources: Arc<Vec<String>>,
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
            if !self.share.has_room() {
                // This host holds its share; another host takes this lane. Look again later
                // in case none does.
                next_try = Some(Instant::now() + HANDOVER_RETRY);
                continue;
            }
            let acquired = self
                .store
                .lane_acquire(
                    &self.lane,
                    self.me,
                    self.clock.now(),
                    self.settings.lease_ttl,
                )
                .await;
            next_try = match acquired {
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

    /// Delivers while there is work; returns when dry (after lingering), lost or stopping.
    async fn active(&self, acquired: AcquiredLane) -> End {
        let s = &self.settings;
        tracing::info!(lane = %self.lane, epoch = acquired.lease.epoch, cursor = acquired.cursor, claimed_to = acquired.claimed_to, blocked_keys = acquired.blocked_keys.len(), "lane acquired");
        let mut st = Active {
            lane: Lane::resume(&acquired, s.limits),
            lease: acquired.lease.clone(),
            calls: Calls::default(),
            reading: None,
            committing: None,
            fetching: None,
            renewing: None,
            log_more: true,
            woken_while_reading: false,
            next_due: (!acquired.blocked_keys.is_empty()).then(|| self.clock.now()),
            paused_until: None,
            renewed_at: Instant::now(),
            last_commit: Instant::now(),
            store_retry_at: None,
            store_backoff: STORE_RETRY_MIN,
            breaker: Breaker::default(),
            dry_since: None,
            rng: rand::rngs::StdRng::from_rng(&mut rand::rng()),
            rate: s.rate_limit.map(|r| RateLimit::new(r, Instant::now())),
            batch_cap: Default::default(),
            log_budget: LogBudget::new(Instant::now()),
        };
        loop {
            while let Some((jobs, report)) = st.calls.try_next() {
                self.apply(&mut st, jobs, report);
            }
            if self.shutdown.is_cancelled() {
                return self.stop(st, End::Stopped).await;
            }
            if !self.pool.is_available() {
                tracing::warn!(lane = %self.lane, "the destination's plugin was removed; pausing the lane after the calls in flight");
                return self.stop(st, End::Paused).await;
            }
            if self.share.claim_surplus() {
                tracing::info!(lane = %self.lane, "this host holds more than its share of lanes; handing this one over");
                self.stop(st, End::HandedOver).await;
                if let Err(e) = self
                    .store
                    .lane_announce(self.me, &self.lane.workspace_id)
                    .await
                {
                    tracing::warn!(lane = %self.lane, error = %e, "could not tell the other hosts; maintenance will");
                }
                return End::HandedOver;
            }
            let now = Instant::now();
            let store_ok = st.store_retry_at.is_none_or(|t| now >= t);
            let lease_valid = st.renewed_at.elapsed() < s.lease_ttl * 2 / 3;
            let (held_jobs, held_bytes) = st.lane.held();
            let room = held_jobs < s.shape.max_held_jobs / 2 && held_bytes < s.max_held_bytes / 2;
            let probing = st.breaker.probing();

            if store_ok && st.committing.is_none() && self.commit_due(&st) {
                self.start_commit(&mut st);
            }
            if store_ok
                && st.committing.is_none()
                && st.renewing.is_none()
                && !st.lane.wants_commit()
                && st.renewed_at.elapsed() > s.lease_ttl / 3
            {
                let (store, lease, now, ttl) = (
                    self.store.clone(),
                    st.lease.clone(),
                    self.clock.now(),
                    s.lease_ttl,
                );
                st.renewing = Some(tokio::spawn(async move {
                    let started = Instant::now();
                    (started, store.lane_renew(&lease, now, ttl).await)
                }));
            }
            // Rows of blocked keys that fell due. While probing, one job at a time.
            let fetch_room = if probing { held_jobs == 0 } else { room };
            if store_ok
                && lease_valid
                && fetch_room
                && st.fetching.is_none()
                && st.lane.may_fetch_rows()
                && st.next_due.is_some_and(|t| t <= self.clock.now())
            {
                self.start_fetch(&mut st, probing);
            }
            // New events from the log.
            if store_ok && lease_valid && room && st.log_more && st.reading.is_none() {
                self.start_read(&mut st, held_jobs, held_bytes);
            }
            // Plugin calls.
            let paused = st.paused_until.is_some_and(|t| Instant::now() < t);
            let max_calls = if probing { 1 } else { s.shape.max_in_flight };
            while lease_valid && !paused && st.calls.len() < max_calls && st.lane.has_ready() {
                let mut size = if probing {
                    1
                } else {
                    st.batch_cap.limit(s.shape.batch_size)
                };
                if let Some(rate) = &mut st.rate {
                    size = size.min(rate.available(Instant::now()));
                    if size == 0 {
                        break;
                    }
                }
                // Ordered batches: a key's consecutive jobs may fill the call.
                let per_key = if s.shape.ordered_batches { size } else { 1 };
                let jobs = st.lane.take_call(size, s.shape.call_max_bytes, per_key);
                if jobs.is_empty() {
                    break;
                }
                if let Some(rate) = &mut st.rate {
                    rate.spend(jobs.len(), Instant::now());
                }
                st.calls
                    .spawn(self.pool.clone(), self.lane.workspace_id.clone(), jobs);
            }
            // Our lease may have run out while calls were going: another host may own the lane
            // by now, so stop them (their jobs' fate is unknown; whoever owns the lane next
            // sends them again).
            if !lease_valid && !st.calls.is_empty() {
                tracing::warn!(lane = %self.lane, calls = st.calls.len(), "the lease could not be renewed in time; cancelling calls in flight");
                let now = self.clock.now();
                for job in st.calls.cancel_all() {
                    st.lane.complete(job, Decision::Released, now);
                }
            }

            // Dry: nothing held, nothing to write, nothing more in the log, no retry due soon.
            let due_soon = st.next_due.is_some_and(|t| {
                t <= self.clock.now() + time::Duration::try_from(s.linger).unwrap_or_default()
            });
            let dry = st.lane.is_drained()
                && !st.lane.wants_commit()
                && st.calls.is_empty()
                && st.idle_store()
                && !st.log_more
                && !due_soon;
            if !dry {
                st.dry_since = None;
            } else if st.dry_since.is_none() {
                st.dry_since = Some(Instant::now());
            }
            if let Some(since) = st.dry_since
                && since.elapsed() >= s.linger
            {
                return self.release(st).await;
            }

            // Wait for something to happen.
            let mut wake_at: Option<Instant> = None;
            let mut at = |t: Instant| wake_at = Some(wake_at.map_or(t, |w: Instant| w.min(t)));
            if let Some(t) = st.next_due {
                at(self.instant_of(t));
            }
            if let Some(t) = st.paused_until.filter(|t| *t > Instant::now()) {
                at(t);
            }
            if let Some(t) = st.store_retry_at {
                at(t);
            }
            if let Some(rate) = &mut st.rate
                && st.lane.has_ready()
                && rate.available(Instant::now()) == 0
            {
                at(rate.next_at(Instant::now()));
            }
            if let Some(since) = st.dry_since {
                at(since + s.linger);
            }
            if st.lane.wants_commit() {
                at(st.last_commit + PROGRESS_INTERVAL);
            }
            at(st.renewed_at + s.lease_ttl / 3);
            outcomes::log_held_back(&self.lane, &mut st.log_budget, Some(Instant::now()));
            let sleep_until = wake_at.unwrap_or_else(|| Instant::now() + s.lease_ttl / 3);
            tokio::select! {
                done = st.calls.next(), if !st.calls.is_empty() => {
                    if let Some((jobs, report)) = done {
                        self.apply(&mut st, jobs, report);
                    }
                }
                read = join(&mut st.reading) => {
                    if let Some(read) = read {
                        self.read_done(&mut st, read);
                    }
                }
                written = join(&mut st.committing) => {
                    if let Some((commit, started, result)) = written
                        && let Err(end) = self.commit_done(&mut st, commit, started, result)
                    {
                        return end;
                    }
                }
                fetched = join(&mut st.fetching) => {
                    if let Some(fetch) = fetched {
                        self.fetch_done(&mut st, fetch);
                    }
                }
                renewed = join(&mut st.renewing) => {
                    if let Some((started, result)) = renewed
                        && let Err(end) = self.renew_done(&mut st, started, result)
                    {
                        return end;
                    }
                }
                _ = self.wake.notified() => {
                    st.log_more = true;
                    st.woken_while_reading = st.reading.is_some();
                }
                _ = self.operator.notified() => {
                    // Keys may be due now; and the lane may be paused.
                    st.next_due = Some(self.clock.now());
                    match self.store.lane_paused(&self.lane).await {
                        Ok(true) => {
                            tracing::info!(lane = %self.lane, "paused by an operator; finishing the calls in flight and giving the lane up");
                            return self.stop(st, End::Paused).await;
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(lane = %self.lane, error = %e, "cannot read whether the lane is paused"),
                    }
                }
                _ = tokio::time::sleep_until(sleep_until) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }

    /// Turns one call's outcomes into decisions.
    fn apply(&self, st: &mut Active, jobs: Vec<Job>, report: CallReport) {
        let now = self.clock.now();
        if let Some(e) = report.unavailable {
            tracing::error!(lane = %self.lane, code = e.code, error = %e.message, "cannot create a plugin instance; pausing the lane");
            for job in jobs {
                st.lane.complete(job, Decision::Released, now);
            }
            st.paused_until = Some(Instant::now() + UNAVAILABLE_PAUSE);
            return;
        }
        let mut throttle: Option<OffsetDateTime> = None;
        let call_len = jobs.len();
        let mut too_large = false;
        let mut results = Vec::with_capacity(call_len);
        for (job, outcome) in jobs.into_iter().zip(report.outcomes) {
            let decision = if matches!(outcome, JobOutcome::TooLarge { .. }) && call_len > 1 {
                // Sent again, in order, in a call of half as many jobs; no attempt spent.
                too_large = true;
                Decision::Released
            } else {
                let first = job.first_attempt_at.unwrap_or(now);
                decide(
                    &self.settings.shape.policy,
                    job.attempt,
                    first,
                    now,
                    outcome,
                    &mut st.rng,
                )
            };
            results.push((job, decision));
        }
        // Who the jobs were, for the log lines below (the lane takes the jobs). A call where
        // every job was delivered logs nothing: the hot path skips this.
        let all_delivered = results
            .iter()
            .all(|(_, d)| matches!(d, Decision::Delivered));
        let who: Vec<(i64, crate::lane::Key)> = if all_delivered {
            Vec::new()
        } else {
            results
                .iter()
                .map(|(j, _)| (j.event_id, j.key.clone()))
                .collect()
        };
        let decisions = st.lane.complete_call(results, now);
        outcomes::log_jobs(
            &self.lane,
            || self.pool.plugin_name(),
            &mut st.log_budget,
            &decisions,
            who,
        );
        for d in &decisions {
            if let Decision::Throttled { at } = d {
                throttle = Some(throttle.map_or(*at, |t| t.max(*at)));
            }
        }
        st.batch_cap
            .observe(call_len, too_large, &decisions, &self.lane);
        let refs: Vec<&Decision> = decisions.iter().collect();
        let p = &self.settings.shape.policy;
        if let Some(pause) = st.breaker.observe(&refs, p.min_backoff, p.max_backoff) {
            tracing::warn!(lane = %self.lane, pause = ?pause, "destination failing for every key; pausing, then probing with one job");
            st.pause(Instant::now() + pause);
        }
        outcomes::count_jobs(&self.lane.destination_id, &decisions);
        metrics::breaker(&self.lane.destination_id, st.breaker.probing());
        if let Some(t) = throttle {
            tracing::info!(lane = %self.lane, until = %t, "destination throttled; pausing the lane");
            st.pause(self.instant_of(t));
        }
    }

    /// Ran dry (everything written): give the lease back.
    async fn release(&self, mut st: Active) -> End {
        outcomes::log_held_back(&self.lane, &mut st.log_budget, None);
        let next_due = st.next_due;
        match self.store.lane_release(&st.lease, next_due).await {
            Ok(_) => tracing::debug!(lane = %self.lane, "lane ran dry; lease released"),
            Err(e) => {
                tracing::warn!(lane = %self.lane, error = %e, "releasing the lane failed; its lease will expire")
            }
        }
        End::Released(next_due)
    }

    /// Shutdown: let calls in flight finish, hand back what was not sent, write, release.
    async fn stop(&self, mut st: Active, end: End) -> End {
        st.lane.release_queued();
        if let Some(h) = st.reading.take() {
            h.abort();
        }
        if let Some(h) = st.fetching.take() {
            h.abort();
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !st.calls.is_empty() {
            match tokio::time::timeout_at(deadline, st.calls.next()).await {
                Ok(Some((jobs, report))) => self.apply(&mut st, jobs, report),
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
        if let Err(e) = self.store.lane_release(&st.lease, st.next_due).await {
            tracing::warn!(lane = %self.lane, error = %e, "releasing the lane at shutdown failed; its lease will expire");
        }
        end
    }
}
