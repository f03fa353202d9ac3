//! One active period of a lane as a small state machine. Each turn of the loop
//! 1. makes what progress it can without waiting ([`LaneRunner::advance`]): takes the calls
//!    that finished, leaves if it must, starts store work and plugin calls, cancels calls once
//!    the lease may have run out, gives the lane up after lingering dry;
//! 2. waits for one [`Event`] ([`LaneRunner::next_event`]), or the next deadline (`wake.rs`);
//! 3. hands the event to the method for it ([`LaneRunner::handle`]).
//!
//! Waiting yields events and does nothing else; store calls are in `store_io.rs`, outcomes in
//! `outcomes.rs`, the ways out in `finish.rs`.

use tokio::time::Instant;

use super::active::{Active, Commit, join};
use super::wake::{Deadlines, next_wake};
use super::{End, LaneRunner, PROGRESS_INTERVAL, outcomes};
use crate::delivery::call::CallReport;
use crate::delivery::filter;
use crate::delivery::stats::JobMetric;
use crate::lane::{Decision, Job};
use crate::metrics;
use sluice_store::{AcquiredLane, BlockedFetch, LogRead, StoreError};

/// What woke the loop.
enum Event {
    /// A plugin call finished.
    Called(Vec<Job>, CallReport),
    /// The log read finished.
    Read(Result<LogRead, StoreError>),
    /// The commit finished (boxed: it is by far the largest event, and one per commit).
    Committed(Box<Commit>),
    /// The fetch of due blocked keys' rows finished.
    Fetched(Result<BlockedFetch, StoreError>),
    /// The lease renewal (started at that instant) finished.
    Renewed(Instant, Result<bool, StoreError>),
    /// Events for this lane were ingested (on this host or another).
    Woken,
    /// An operator changed the lane (made keys due, paused it).
    Operator,
    /// A deadline came, or a store task ended without an answer (aborted).
    Tick,
    /// The host is stopping.
    Stopping,
}

/// What the loop does after a step.
enum Step {
    Continue,
    /// Let the calls in flight finish, write, give the lease back.
    Stop(End),
    /// Stop, then tell the other hosts.
    HandOver,
    /// Ran dry: give the lease back.
    Release,
    /// The lane is someone else's: end at once.
    Gone(End),
}

/// What a pass sees before it starts work.
struct Pass {
    /// The store may be tried (it answers, or its retry time came).
    store_ok: bool,
    /// The lease has not run out (with a margin): jobs may be read, fetched and sent.
    lease_valid: bool,
    held_jobs: usize,
    held_bytes: usize,
    /// Fewer than half the jobs and bytes the lane may hold: read more.
    room: bool,
    /// The breaker probes the destination with one job.
    probing: bool,
}

impl LaneRunner {
    /// Delivers while there is work; returns when dry (after lingering), lost or stopping.
    pub(super) async fn active(&self, acquired: AcquiredLane) -> End {
        tracing::info!(lane = %self.lane, epoch = acquired.lease.epoch, cursor = acquired.cursor, claimed_to = acquired.claimed_to, blocked_keys = acquired.blocked_keys.len(), "lane acquired");
        let mut st = Active::new(&acquired, &self.settings, self.clock.now());
        loop {
            let mut step = self.advance(&mut st);
            if let Step::Continue = step {
                let event = self.next_event(&mut st).await;
                step = self.handle(&mut st, event).await;
            }
            match step {
                Step::Continue => {}
                Step::Stop(end) => return self.stop(st, end).await,
                Step::HandOver => return self.hand_over(st).await,
                Step::Release => return self.release(st).await,
                Step::Gone(end) => return end,
            }
        }
    }

    /// Everything that can be done without waiting.
    fn advance(&self, st: &mut Active) -> Step {
        while let Some((jobs, report)) = st.calls.try_next() {
            self.apply(st, jobs, report);
        }
        if let Some(step) = self.leaving() {
            return step;
        }
        let pass = self.pass(st);
        self.start_store_work(st, &pass);
        self.start_calls(st, &pass);
        if !pass.lease_valid {
            self.cancel_calls(st);
        }
        if self.dry_for_linger(st) {
            return Step::Release;
        }
        Step::Continue
    }

    /// Whether the lane must be given up: the host is stopping, the destination's plugin was
    /// removed, or this host holds more than its share of lanes.
    fn leaving(&self) -> Option<Step> {
        if self.shutdown.is_cancelled() {
            return Some(Step::Stop(End::Stopped));
        }
        if !self.pool.is_available() {
            tracing::warn!(lane = %self.lane, "the destination's plugin was removed; pausing the lane after the calls in flight");
            return Some(Step::Stop(End::Paused));
        }
        if self.share.claim_surplus() {
            tracing::info!(lane = %self.lane, "this host holds more than its share of lanes; handing this one over");
            return Some(Step::HandOver);
        }
        None
    }

    fn pass(&self, st: &Active) -> Pass {
        let s = &self.settings;
        let (held_jobs, held_bytes) = st.lane.held();
        Pass {
            store_ok: st.store_backoff.ready(Instant::now()),
            lease_valid: st.renewed_at.elapsed() < s.lease_ttl * 2 / 3,
            held_jobs,
            held_bytes,
            room: held_jobs < s.shape.max_held_jobs / 2 && held_bytes < s.max_held_bytes / 2,
            probing: st.breaker.probing(),
        }
    }

    /// Starts the store operations that are due: commit, renewal, fetch of due keys, log read.
    fn start_store_work(&self, st: &mut Active, pass: &Pass) {
        if !pass.store_ok {
            return;
        }
        if st.committing.is_none() && self.commit_due(st) {
            self.start_commit(st);
        }
        if self.renew_due(st) {
            self.start_renew(st);
        }
        // Rows of blocked keys that fell due. While probing, one job at a time.
        let fetch_room = if pass.probing {
            pass.held_jobs == 0
        } else {
            pass.room
        };
        if pass.lease_valid
            && fetch_room
            && st.fetching.is_none()
            && st.lane.may_fetch_rows()
            && st.due.is_due(self.clock.now())
        {
            self.start_fetch(st, pass.probing);
        }
        // New events from the log.
        if pass.lease_valid && pass.room && st.log_more && st.reading.is_none() {
            self.start_read(st, pass.held_jobs, pass.held_bytes);
        }
    }

    /// Sends ready jobs, within the calls in flight, the pause, the rate and the call size.
    fn start_calls(&self, st: &mut Active, pass: &Pass) {
        let s = &self.settings;
        let paused = st.paused_until.is_some_and(|t| Instant::now() < t);
        let max_calls = if pass.probing {
            1
        } else {
            s.shape.max_in_flight
        };
        while pass.lease_valid && !paused && st.calls.len() < max_calls && st.lane.has_ready() {
            let mut size = if pass.probing {
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
            let jobs = self.finish_filtered(st, jobs);
            if jobs.is_empty() {
                // Their keys' next jobs may be ready now.
                continue;
            }
            if let Some(rate) = &mut st.rate {
                rate.spend(jobs.len(), Instant::now());
            }
            st.calls
                .spawn(self.pool.clone(), self.lane.workspace_id.clone(), jobs);
        }
    }

    /// Finishes the jobs of a call that the destination's filter keeps back, and returns the
    /// others. A filtered job is finished like a delivered one, so its key's next job may go at
    /// once; it spends no rate, call or attempt, and counts as neither delivery nor failure
    /// (nor does it feed the breaker: it says nothing about the destination).
    fn finish_filtered(&self, st: &mut Active, jobs: Vec<Job>) -> Vec<Job> {
        let (send, filtered) = filter::split(&self.filter.load(), jobs);
        if !filtered.is_empty() {
            let now = self.clock.now();
            let n = filtered.len();
            for job in filtered {
                st.lane.complete(job, Decision::Filtered, now);
            }
            metrics::jobs(&self.lane.destination_id, JobMetric::Filtered, n as u64);
        }
        send
    }

    /// Our lease may have run out while calls were going: another host may own the lane by
    /// now, so stop them (their jobs' fate is unknown; whoever owns the lane next sends them
    /// again).
    fn cancel_calls(&self, st: &mut Active) {
        if st.calls.is_empty() {
            return;
        }
        tracing::warn!(lane = %self.lane, calls = st.calls.len(), "the lease could not be renewed in time; cancelling calls in flight");
        let now = self.clock.now();
        for job in st.calls.cancel_all() {
            st.lane.complete(job, Decision::Released, now);
        }
    }

    /// Whether the lane has been dry for its linger. Dry: nothing held, nothing to write,
    /// nothing more in the log, no retry due soon.
    fn dry_for_linger(&self, st: &mut Active) -> bool {
        let linger = self.settings.linger;
        let due_soon = st.due.next().is_some_and(|t| {
            t <= self.clock.now() + time::Duration::try_from(linger).unwrap_or_default()
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
        st.dry_since.is_some_and(|since| since.elapsed() >= linger)
    }

    /// What the lane waits for besides events, as instants.
    fn deadlines(&self, st: &mut Active) -> Deadlines {
        let s = &self.settings;
        let now = Instant::now();
        let has_ready = st.lane.has_ready();
        let rate = st
            .rate
            .as_mut()
            .filter(|_| has_ready)
            .and_then(|rate| (rate.available(now) == 0).then(|| rate.next_at(now)));
        Deadlines {
            fetch: st.due.next().map(|t| self.instant_of(t)),
            commit: st
                .lane
                .wants_commit()
                .then(|| st.last_commit + PROGRESS_INTERVAL),
            renew: Some(st.renewed_at + s.lease_ttl / 3),
            lease_out: (!st.calls.is_empty()).then(|| st.renewed_at + s.lease_ttl * 2 / 3),
            pause_end: st.paused_until.filter(|t| *t > now),
            rate,
            linger_end: st.dry_since.map(|since| since + s.linger),
        }
    }

    /// Waits for the next event, or the next deadline.
    async fn next_event(&self, st: &mut Active) -> Event {
        let deadlines = self.deadlines(st);
        let idle = self.settings.lease_ttl / 3;
        let wake_at = next_wake(&deadlines, &mut st.store_backoff, Instant::now(), idle);
        outcomes::log_held_back(&self.lane, &mut st.log_budget, Some(Instant::now()));
        tokio::select! {
            done = st.calls.next(), if !st.calls.is_empty() => {
                done.map_or(Event::Tick, |(jobs, report)| Event::Called(jobs, report))
            }
            read = join(&mut st.reading) => read.map_or(Event::Tick, Event::Read),
            written = join(&mut st.committing) => written.map_or(Event::Tick, |c| Event::Committed(Box::new(c))),
            fetched = join(&mut st.fetching) => fetched.map_or(Event::Tick, Event::Fetched),
            renewed = join(&mut st.renewing) => {
                renewed.map_or(Event::Tick, |(started, result)| Event::Renewed(started, result))
            }
            _ = self.wake.notified() => Event::Woken,
            _ = self.operator.notified() => Event::Operator,
            _ = tokio::time::sleep_until(wake_at) => Event::Tick,
            _ = self.shutdown.cancelled() => Event::Stopping,
        }
    }

    /// Hands an event to the method for it.
    async fn handle(&self, st: &mut Active, event: Event) -> Step {
        match event {
            Event::Called(jobs, report) => self.apply(st, jobs, report),
            Event::Read(read) => self.read_done(st, read),
            Event::Committed(committed) => {
                let (commit, started, result) = *committed;
                if let Err(end) = self.commit_done(st, commit, started, result) {
                    return Step::Gone(end);
                }
            }
            Event::Fetched(fetch) => self.fetch_done(st, fetch),
            Event::Renewed(started, result) => {
                if let Err(end) = self.renew_done(st, started, result) {
                    return Step::Gone(end);
                }
            }
            Event::Woken => {
                st.log_more = true;
                st.woken_while_reading = st.reading.is_some();
            }
            Event::Operator => return self.operator_changed(st).await,
            // The next pass acts on the time (and on the shutdown).
            Event::Tick | Event::Stopping => {}
        }
        Step::Continue
    }

    /// Keys may be due now; and the lane may be paused.
    async fn operator_changed(&self, st: &mut Active) -> Step {
        st.due.note(self.clock.now());
        if self.paused_by_operator().await {
            tracing::info!(lane = %self.lane, "paused by an operator; finishing the calls in flight and giving the lane up");
            return Step::Stop(End::Paused);
        }
        Step::Continue
    }
}
