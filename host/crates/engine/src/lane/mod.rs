//! One lane's delivery state, in memory, owned by the host holding the lane's lease.
//!
//! # The ordering invariant
//!
//! For each (destination, ordering key): at most one call carries jobs of the key at a time,
//! and a job is handed out only when every earlier job of its key is finished (delivered,
//! filtered or aborted) or goes in the same call, ahead of it.
//!
//! It is kept here, and only here:
//! - Jobs arrive in id order, from the log (`accept_log`) or from the rows of a blocked key
//!   (`accept_rows`). Each key has one queue; [`Lane::take_call`] takes the front job of each
//!   key that has nothing in flight — or, for a plugin with ordered batches, a run of
//!   consecutive jobs from the front, in order.
//! - A call's outcomes are applied together, in call order ([`Lane::complete_call`]). In a call
//!   carrying several jobs of one key, the first job of the key that does not finish decides
//!   for the key's later jobs in the call, whatever their own outcome: they were sent after a
//!   job that must go again, so they go again after it. A retry or throttle parks them behind
//!   it ([`Decision::Parked`], no attempt spent); a job handed back unattempted takes them back
//!   with it.
//! - When a job does not finish (retry or throttle), its key becomes *blocked*: the job gets a
//!   `failed` row, every job behind it in memory is *parked* (a `pending` row), and every later
//!   event of the key that the log brings is parked as well. Nothing of a blocked key moves
//!   until the store hands its rows back, in id order, once they are due.
//! - A key's rows are fetched only while the lane holds nothing of that key (in memory, in
//!   flight, or in a commit not yet written), so a key is never served from two places; and
//!   not at all until a new owner has read the log again past what the previous owner had
//!   read (see [`Lane::may_fetch_rows`]).
//! - The lane owns its key space: its lease is the only writer of its rows (fenced in
//!   `store::commit`), and ids a lane reads always form a prefix (`store::append`).
//!
//! # Progress
//!
//! The lane's *cursor* says: every job with an id at or below it is finished or has a row.
//! Jobs delivered at the first try leave no trace but the cursor; after a crash, the next owner
//! reads again from the cursor, so the jobs in flight (and those finished after the oldest job
//! in flight) are delivered again: at-least-once, and never out of order.
//!
//! A key that piles up more than `max_jobs_per_key` jobs in memory (a hot user) is parked
//! like a failed one, but due at once: its backlog then moves through rows while other keys
//! keep flowing from the log, and memory stays bounded.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use time::OffsetDateTime;

mod job;
mod staging;

pub use self::job::{Decision, Job, Key};

use self::staging::Staged;
use sluice_store::{AcquiredLane, JobState, LogEvent, OrderingScope, RowJob};

/// Bounds on what a lane holds in memory.
#[derive(Debug, Clone, Copy)]
pub struct LaneLimits {
    /// Jobs of one key held in memory before the key is parked (a hot user).
    pub max_jobs_per_key: usize,
}

impl Default for LaneLimits {
    fn default() -> Self {
        LaneLimits {
            max_jobs_per_key: 64,
        }
    }
}

#[derive(Debug, Default)]
struct KeyState {
    queue: VecDeque<Job>,
    /// Jobs of this key in flight (all in one call).
    in_flight: usize,
    /// The key is in the ready queue.
    queued: bool,
}

/// The in-memory state of one lane.
#[derive(Debug)]
pub struct Lane {
    scope: OrderingScope,
    limits: LaneLimits,
    /// The cursor as last written.
    cursor: i64,
    /// How far the log has been read.
    read_to: i64,
    /// `claimed_to` as last written.
    claimed_written: i64,
    /// Jobs read from the log up to here may already have rows (see `store::read`).
    skip_rows_to: i64,
    /// Log ids read and not yet finished or persisted as rows.
    unfinished: BTreeSet<i64>,
    keys: HashMap<Key, KeyState>,
    ready: VecDeque<Key>,
    /// Keys with unfinished rows (mirrors `blocked_keys`, plus what is staged).
    blocked: HashSet<Key>,
    staged: Staged,
    committing: Option<Staged>,
    /// Jobs held (queued or in flight) and their bytes.
    held_jobs: usize,
    held_bytes: usize,
    in_flight: usize,
}

impl Lane {
    /// A lane resumed from what the store says (fresh, or taken over from another owner).
    pub fn resume(acquired: &AcquiredLane, limits: LaneLimits) -> Lane {
        Lane {
            scope: acquired.ordering,
            limits,
            cursor: acquired.cursor,
            read_to: acquired.cursor,
            claimed_written: acquired.claimed_to,
            skip_rows_to: acquired.claimed_to,
            unfinished: BTreeSet::new(),
            keys: HashMap::new(),
            ready: VecDeque::new(),
            blocked: acquired
                .blocked_keys
                .iter()
                .map(|k| Key::from(k.as_str()))
                .collect(),
            staged: Staged::default(),
            committing: None,
            held_jobs: 0,
            held_bytes: 0,
            in_flight: 0,
        }
    }

    pub fn read_to(&self) -> i64 {
        self.read_to
    }

    pub fn skip_rows_to(&self) -> i64 {
        self.skip_rows_to
    }

    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// Jobs held in memory (queued or in flight), and their bytes.
    pub fn held(&self) -> (usize, usize) {
        (self.held_jobs, self.held_bytes)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Keys with unfinished rows.
    pub fn blocked_keys(&self) -> usize {
        self.blocked.len()
    }

    /// Whether there is a job that `take_call` would hand out.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Nothing held, nothing to write.
    pub fn is_drained(&self) -> bool {
        self.keys.is_empty()
            && self.unfinished.is_empty()
            && self.staged.is_empty()
            && self.committing.is_none()
    }

    /// Takes events read from the log (in id order); `read_to` is how far the read reached.
    pub fn accept_log(&mut self, events: Vec<LogEvent>, read_to: i64, now: OffsetDateTime) {
        for e in events {
            if e.id <= self.read_to {
                continue; // already seen (a read racing a reset); never take a job twice
            }
            let key: Key = match self.scope {
                OrderingScope::User => e.user_key.into(),
                scope => scope.key(&e.source_id, &e.user_key, e.id).into(),
            };
            let job = Job {
                event_id: e.id,
                dataset: e.dataset,
                source_id: e.source_id,
                message_id: e.message_id,
                received_at: e.received_at,
                event: e.event,
                key,
                attempt: 0,
                first_attempt_at: None,
                has_row: false,
            };
            self.read_to = job.event_id;
            self.unfinished.insert(job.event_id);
            if self.blocked.contains(&job.key) {
                self.park(job, now);
                continue;
            }
            let queued = self.keys.get(&job.key).map_or(0, |k| k.queue.len());
            if queued >= self.limits.max_jobs_per_key {
                // A hot key: its backlog moves through rows, due at once.
                self.park(job, now);
                continue;
            }
            self.hold(job);
        }
        self.read_to = self.read_to.max(read_to);
    }

    /// Takes unfinished rows of due blocked keys (grouped by key, in id order).
    pub fn accept_rows(&mut self, rows: Vec<RowJob>) {
        for r in rows {
            let job = Job {
                event_id: r.event_id,
                dataset: r.dataset,
                source_id: r.source_id,
                message_id: r.message_id,
                received_at: r.received_at,
                event: r.event,
                key: r.order_key.into(),
                attempt: r.attempt.max(0) as u32,
                first_attempt_at: r.first_attempt_at,
                has_row: true,
            };
            self.blocked.insert(job.key.clone());
            self.hold(job);
        }
    }

    /// Due keys that turned out to have no unfinished row: unblock them.
    pub fn accept_empty_keys(&mut self, keys: Vec<String>) {
        for k in keys {
            if !self.keys.contains_key(k.as_str()) {
                let k = Key::from(k);
                self.staged.touched.insert(k.clone());
                self.staged.check.insert(k);
            }
        }
    }

    /// Rows may be fetched only once the log has been read again past what a previous owner
    /// had read: a key's jobs that the previous owner held in memory (below its parked rows)
    /// must get their own rows first, or they would come after them.
    pub fn may_fetch_rows(&self) -> bool {
        self.read_to >= self.skip_rows_to
    }

    /// Keys whose rows must not be fetched now: the lane holds jobs of them, or has writes for
    /// them that are not committed yet.
    pub fn fetch_exclusions(&self) -> Vec<String> {
        let mut out: HashSet<&Key> = self
            .keys
            .keys()
            .filter(|k| self.blocked.contains(*k))
            .collect();
        out.extend(self.staged.touched.iter());
        if let Some(c) = &self.committing {
            out.extend(c.touched.iter());
        }
        out.into_iter().map(|k| k.to_string()).collect()
    }

    /// The next call: up to `max_jobs` jobs and at most `max_bytes` (the first job always
    /// fits), taking from each ready key up to `per_key` consecutive jobs from its front (1
    /// unless the plugin applies ordered batches).
    ///
    /// A job read from the log goes out only once the store knows it was read (`claimed_to`
    /// written), so that after a crash the store can tell which jobs may have been in flight.
    pub fn take_call(&mut self, max_jobs: usize, max_bytes: usize, per_key: usize) -> Vec<Job> {
        let max_jobs = max_jobs.max(1);
        let mut call: Vec<Job> = Vec::new();
        let mut bytes = 0usize;
        let mut unclaimed = Vec::new();
        while call.len() < max_jobs {
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            let Some(state) = self.keys.get_mut(&key) else {
                continue;
            };
            state.queued = false;
            if state.in_flight > 0 {
                continue;
            }
            let Some(front) = state.queue.front() else {
                continue;
            };
            if !front.has_row && front.event_id > self.claimed_written {
                state.queued = true;
                unclaimed.push(key);
                continue;
            }
            if !call.is_empty() && bytes + front.size() > max_bytes {
                state.queued = true;
                self.ready.push_front(key);
                break;
            }
            // The front job, then as many of the key's next jobs as may go with it.
            while state.in_flight < per_key.max(1) && call.len() < max_jobs {
                let Some(next) = state.queue.front() else {
                    break;
                };
                let may_go = next.has_row || next.event_id <= self.claimed_written;
                if state.in_flight > 0 && (!may_go || bytes + next.size() > max_bytes) {
                    break;
                }
                let Some(job) = state.queue.pop_front() else {
                    break;
                };
                state.in_flight += 1;
                bytes += job.size();
                call.push(job);
            }
        }
        // Unclaimed keys keep their place at the front.
        for key in unclaimed.into_iter().rev() {
            self.ready.push_front(key);
        }
        self.in_flight += call.len();
        call
    }

    /// Records what became of the jobs of one call, in call order, and returns the decisions
    /// taken: the given ones, except for the jobs of a key behind one of its jobs that did not
    /// finish (see the module doc).
    pub fn complete_call(
        &mut self,
        results: Vec<(Job, Decision)>,
        now: OffsetDateTime,
    ) -> Vec<Decision> {
        // Keys stopped in this call, and what their later jobs become.
        let mut stopped: Vec<(Key, Decision)> = Vec::new();
        let mut taken = Vec::with_capacity(results.len());
        for (job, decision) in results {
            let decision = match stopped.iter().find(|(k, _)| *k == job.key) {
                Some((_, follow)) => follow.clone(),
                None => decision,
            };
            let follow = match decision {
                Decision::Delivered
                | Decision::Skipped
                | Decision::Filtered
                | Decision::Aborted { .. } => None,
                Decision::Released => Some(Decision::Released),
                Decision::Retry { .. } | Decision::Throttled { .. } | Decision::Parked => {
                    Some(Decision::Parked)
                }
            };
            if let Some(follow) = follow
                && !stopped.iter().any(|(k, _)| *k == job.key)
            {
                stopped.push((job.key.clone(), follow));
            }
            self.complete(job, decision.clone(), now);
            taken.push(decision);
        }
        taken
    }

    /// Records what became of a job handed out by `take_call`. The jobs of a call carrying
    /// several jobs of one key go through [`Lane::complete_call`], which keeps their order.
    pub fn complete(&mut self, job: Job, decision: Decision, now: OffsetDateTime) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(state) = self.keys.get_mut(&job.key) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        match decision {
            Decision::Released => {
                // Back in id order: the jobs of a call may come back in any order.
                let key = job.key.clone();
                let state = self.keys.entry(key.clone()).or_default();
                let at = state.queue.partition_point(|j| j.event_id < job.event_id);
                state.queue.insert(at, job);
                self.make_ready(&key);
            }
            Decision::Parked => {
                // The key is blocked behind its failed job (`fail` parked what was queued);
                // this one joins them. A job with a row is already pending behind it.
                self.release_bytes(&job);
                let key = job.key.clone();
                if !job.has_row {
                    self.park(job, now);
                }
                if self
                    .keys
                    .get(&key)
                    .is_some_and(|s| s.queue.is_empty() && s.in_flight == 0)
                {
                    self.keys.remove(&key);
                }
            }
            Decision::Delivered | Decision::Skipped => {
                self.release_bytes(&job);
                if job.has_row {
                    // The successful attempt counts; the last failure's code and text stay
                    // (docs/sql.md: what `attempt` and `error_code` mean on a delivered job).
                    self.update_row(&job, JobState::Delivered, 1, None, Some(now), now);
                } else {
                    self.unfinished.remove(&job.event_id);
                }
                self.advance(&job.key);
            }
            Decision::Filtered => {
                self.release_bytes(&job);
                if job.has_row {
                    // Finished, with no attempt and no attempt time: nothing was tried.
                    self.update_row(&job, JobState::Delivered, 0, None, None, now);
                } else {
                    self.unfinished.remove(&job.event_id);
                }
                self.advance(&job.key);
            }
            Decision::Aborted { code, text } => {
                self.release_bytes(&job);
                let error = Some((code, text));
                if job.has_row {
                    self.update_row(&job, JobState::Aborted, 1, error, Some(now), now);
                } else {
                    self.new_row(&job, JobState::Aborted, 1, error, Some(now), now);
                }
                self.advance(&job.key);
            }
            Decision::Retry { code, text, at } => {
                self.fail(job, 1, (code, text), at, now);
            }
            Decision::Throttled { at } => {
                let error = (
                    "throttled".to_string(),
                    "the destination asked to slow down".to_string(),
                );
                self.fail(job, 0, error, at, now);
            }
        }
    }

    /// Hands every queued (not in flight) job back: used when the lane stops.
    pub fn release_queued(&mut self) {
        self.ready.clear();
        let keys: Vec<Key> = self.keys.keys().cloned().collect();
        for k in keys {
            if let Some(state) = self.keys.get_mut(&k) {
                let dropped: Vec<Job> = state.queue.drain(..).collect();
                for j in &dropped {
                    self.held_jobs -= 1;
                    self.held_bytes -= j.size();
                }
                if state.in_flight == 0 {
                    self.keys.remove(&k);
                }
            }
        }
    }

    fn hold(&mut self, job: Job) {
        self.held_jobs += 1;
        self.held_bytes += job.size();
        let key = job.key.clone();
        self.keys
            .entry(key.clone())
            .or_default()
            .queue
            .push_back(job);
        self.make_ready(&key);
    }

    fn release_bytes(&mut self, job: &Job) {
        self.held_jobs = self.held_jobs.saturating_sub(1);
        self.held_bytes = self.held_bytes.saturating_sub(job.size());
    }

    fn make_ready(&mut self, key: &Key) {
        if let Some(state) = self.keys.get_mut(key)
            && state.in_flight == 0
            && !state.queued
            && !state.queue.is_empty()
        {
            state.queued = true;
            self.ready.push_back(key.clone());
        }
    }

    /// A key's job finished: its next job may go, or the key is done with for now.
    fn advance(&mut self, key: &Key) {
        let empty = self
            .keys
            .get(key)
            .is_none_or(|s| s.queue.is_empty() && s.in_flight == 0);
        if !empty {
            self.make_ready(key);
            return;
        }
        self.keys.remove(key);
        if self.blocked.contains(key) {
            self.staged.touched.insert(key.clone());
            self.staged.check.insert(key.clone());
        }
    }

    /// The job failed (or was throttled): it becomes the failed head of its key, and everything
    /// of the key held in memory is parked behind it.
    fn fail(
        &mut self,
        job: Job,
        attempt_inc: i32,
        error: (String, String),
        at: OffsetDateTime,
        now: OffsetDateTime,
    ) {
        self.release_bytes(&job);
        let key = job.key.clone();
        if job.has_row {
            self.update_row(
                &job,
                JobState::Failed,
                attempt_inc,
                Some(error),
                Some(now),
                at,
            );
        } else {
            self.new_row(
                &job,
                JobState::Failed,
                attempt_inc,
                Some(error),
                Some(now),
                at,
            );
        }
        self.blocked.insert(key.clone());
        self.staged.touched.insert(key.clone());
        self.staged.check.remove(&key);
        self.staged.block.insert(key.clone(), at);
        if let Some(state) = self.keys.remove(&key) {
            for j in state.queue {
                self.release_bytes(&j);
                if !j.has_row {
                    self.park(j, now);
                }
                // A job with a row stays as its row says (pending, behind the head).
            }
        }
    }

    /// Gives a log job a `pending` row behind the unfinished head of its key.
    fn park(&mut self, job: Job, now: OffsetDateTime) {
        let key = job.key.clone();
        self.new_row(&job, JobState::Pending, 0, None, None, now);
        self.blocked.insert(key.clone());
        self.staged.touched.insert(key.clone());
        self.staged.ensure.insert(key);
    }
}

#[cfg(test)]
mod tests;
