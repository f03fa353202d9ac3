//! What a lane writes: outcomes staged for the next commit, and how a written (or failed)
//! commit moves the lane on. The cursor only moves past a job once its row, if it needs one,
//! is written in the same commit.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use time::OffsetDateTime;

use super::{Job, Key, Lane};
use sluice_store::{CommitResult, JobState, LaneCommit, Lease, NewJobRow, RowUpdate};

/// Writes waiting for the next commit.
#[derive(Debug, Default, Clone)]
pub(super) struct Staged {
    pub(super) new_rows: Vec<NewJobRow>,
    pub(super) row_updates: Vec<RowUpdate>,
    /// Block (or re-block) until a time: a failure.
    pub(super) block: HashMap<Key, OffsetDateTime>,
    /// Block if not blocked yet, due at once: a park.
    pub(super) ensure: HashSet<Key>,
    /// Unblock if no unfinished row is left.
    pub(super) check: HashSet<Key>,
    /// Log ids that become finished once this commit is written (their rows are in it).
    pub(super) persist_ids: Vec<i64>,
    /// Keys whose rows this commit changes.
    pub(super) touched: HashSet<Key>,
}

impl Staged {
    pub(super) fn is_empty(&self) -> bool {
        self.new_rows.is_empty()
            && self.row_updates.is_empty()
            && self.block.is_empty()
            && self.ensure.is_empty()
            && self.check.is_empty()
    }

    /// `later` happened after `self`; merge it in (a failed commit is retried with what came
    /// after it).
    pub(super) fn absorb(&mut self, later: Staged) {
        self.new_rows.extend(later.new_rows);
        self.row_updates.extend(later.row_updates);
        self.block.extend(later.block);
        self.ensure.extend(later.ensure);
        self.check.extend(later.check);
        self.persist_ids.extend(later.persist_ids);
        self.touched.extend(later.touched);
    }
}

impl Lane {
    /// The cursor this lane can write now, counting writes staged for the next commit.
    pub(super) fn cursor_candidate(&self, persisting: &HashSet<i64>) -> i64 {
        for id in &self.unfinished {
            if !persisting.contains(id) {
                return id - 1;
            }
        }
        self.read_to
    }

    /// Jobs were read that the store does not know were read yet (they wait for a commit).
    pub fn claim_behind(&self) -> bool {
        self.read_to > self.claimed_written
    }

    /// Whether rows or keys are waiting to be written (not just progress).
    pub fn has_staged_writes(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Whether a commit would write something: staged changes, or a cursor that moved.
    pub fn wants_commit(&self) -> bool {
        if self.committing.is_some() {
            return false;
        }
        if !self.staged.is_empty() || self.read_to > self.claimed_written {
            return true;
        }
        let persisting: HashSet<i64> = self.staged.persist_ids.iter().copied().collect();
        self.cursor_candidate(&persisting) > self.cursor
    }

    /// Starts a commit of everything staged; `None` if one is already under way.
    pub fn take_commit(
        &mut self,
        lease: &Lease,
        now: OffsetDateTime,
        lease_ttl: Duration,
    ) -> Option<LaneCommit> {
        if self.committing.is_some() {
            return None;
        }
        let mut staged = std::mem::take(&mut self.staged);
        let persisting: HashSet<i64> = staged.persist_ids.iter().copied().collect();
        let cursor = self.cursor_candidate(&persisting).max(self.cursor);
        let commit = LaneCommit {
            lease: lease.clone(),
            now,
            lease_ttl,
            cursor,
            claimed_to: self.read_to,
            // The rows travel in the commit (and come back if it fails: `commit_failed`).
            new_rows: std::mem::take(&mut staged.new_rows),
            row_updates: std::mem::take(&mut staged.row_updates),
            block_keys: staged
                .block
                .iter()
                .map(|(k, t)| (k.to_string(), *t))
                .collect(),
            // A park blocks its key only if nothing blocks it yet (see store::commit).
            ensure_keys: staged
                .ensure
                .iter()
                .filter(|k| !staged.block.contains_key(*k))
                .map(|k| k.to_string())
                .collect(),
            check_keys: staged.check.iter().map(|k| k.to_string()).collect(),
        };
        self.committing = Some(staged);
        Some(commit)
    }

    /// The commit started by `take_commit` was written.
    pub fn commit_written(&mut self, commit: &LaneCommit, result: CommitResult) {
        let Some(done) = self.committing.take() else {
            return;
        };
        for id in &done.persist_ids {
            self.unfinished.remove(id);
        }
        self.cursor = self.cursor.max(commit.cursor);
        self.claimed_written = self.claimed_written.max(commit.claimed_to);
        for k in result.unblocked {
            // A park or failure staged since keeps the key blocked (the next commit re-blocks
            // it in the store too).
            let k = k.as_str();
            if !self.staged.block.contains_key(k) && !self.staged.ensure.contains(k) {
                self.blocked.remove(k);
            }
        }
    }

    /// The commit started by `take_commit` failed (store unreachable): it will be retried,
    /// together with whatever was staged since.
    pub fn commit_failed(&mut self, commit: LaneCommit) {
        if let Some(mut done) = self.committing.take() {
            done.new_rows = commit.new_rows;
            done.row_updates = commit.row_updates;
            done.absorb(std::mem::take(&mut self.staged));
            self.staged = done;
        }
    }

    pub(super) fn new_row(
        &mut self,
        job: &Job,
        state: JobState,
        attempt: i32,
        error: Option<(String, String)>,
        attempted_at: Option<OffsetDateTime>,
        next_attempt_at: OffsetDateTime,
    ) {
        let (error_code, error_text) = error.map_or((None, None), |(c, t)| (Some(c), Some(t)));
        self.staged.persist_ids.push(job.event_id);
        self.staged.new_rows.push(NewJobRow {
            dataset: job.dataset,
            event_id: job.event_id,
            source_id: job.source_id.clone(),
            order_key: job.key.to_string(),
            state,
            attempt: job.attempt as i32 + attempt,
            error_code,
            error_text,
            first_attempt_at: job.first_attempt_at.or(attempted_at),
            last_attempt_at: attempted_at,
            next_attempt_at,
        });
    }

    pub(super) fn update_row(
        &mut self,
        job: &Job,
        state: JobState,
        attempt_inc: i32,
        error: Option<(String, String)>,
        attempted_at: Option<OffsetDateTime>,
        next_attempt_at: OffsetDateTime,
    ) {
        let (error_code, error_text) = error.map_or((None, None), |(c, t)| (Some(c), Some(t)));
        self.staged.touched.insert(job.key.clone());
        self.staged.row_updates.push(RowUpdate {
            event_id: job.event_id,
            state,
            attempt_inc,
            error_code,
            error_text,
            attempted_at,
            next_attempt_at,
        });
    }
}
