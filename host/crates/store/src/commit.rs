//! A lane owner recording outcomes, parked jobs and its progress: one transaction, fenced on
//! the lease.
//!
//! The fence comes first: the lane row is updated only if `owner` and `owner_epoch` are still
//! ours, which also locks it, so a host trying to take the lane over waits for this commit and
//! then sees the renewed lease. If the fence fails, nothing is written ([`StoreError::LeaseLost`]).
//!
//! Then, in this order:
//! 1. new `job_state` rows (parked, failed or aborted jobs that had none; a row that exists is
//!    left alone, which makes re-parking after a takeover harmless);
//! 2. outcomes of jobs that have rows;
//! 3. blocked keys: inserted or moved to a new due time (failures), or inserted due at once
//!    unless already there (parks);
//! 4. key checks: a key whose rows are all finished is unblocked (its row deleted), otherwise
//!    it is made due at once. This runs after 1, so a job parked in this same commit keeps
//!    its key blocked.
//!
//! Steps 1 and 2 also append each attempt they record to `job_attempts` (migration 0005), in the
//! same statement: the attempt history of every job that left the fast path. A job delivered
//! at the first try writes nothing there (its cursor move is the whole record).
//!
//! `error_text` is kept to [`MAX_ERROR_TEXT`] bytes.

use std::time::Duration;

use time::OffsetDateTime;

use super::{JobState, Lease, Store, StoreError};

/// Error texts are kept to this many bytes (RudderStack keeps a similar amount).
pub const MAX_ERROR_TEXT: usize = 10 * 1024;

/// A job that gets its first row.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJobRow {
    pub dataset: i32,
    pub event_id: i64,
    pub source_id: String,
    pub order_key: String,
    pub state: JobState,
    pub attempt: i32,
    pub error_code: Option<String>,
    pub error_text: Option<String>,
    pub first_attempt_at: Option<OffsetDateTime>,
    pub last_attempt_at: Option<OffsetDateTime>,
    pub next_attempt_at: OffsetDateTime,
}

/// The outcome of an attempt of a job that has a row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowUpdate {
    pub event_id: i64,
    pub state: JobState,
    /// Added to the row's attempt count (0 for a throttle or a release).
    pub attempt_inc: i32,
    /// `None` keeps the row's last error (a delivery after failures keeps why it needed them).
    pub error_code: Option<String>,
    pub error_text: Option<String>,
    pub attempted_at: Option<OffsetDateTime>,
    pub next_attempt_at: OffsetDateTime,
}

/// Everything one commit writes.
#[derive(Debug, Clone)]
pub struct LaneCommit {
    pub lease: Lease,
    pub now: OffsetDateTime,
    pub lease_ttl: Duration,
    pub cursor: i64,
    pub claimed_to: i64,
    pub new_rows: Vec<NewJobRow>,
    pub row_updates: Vec<RowUpdate>,
    /// Keys to block (or re-block) until the given time.
    pub block_keys: Vec<(String, OffsetDateTime)>,
    /// Keys to block, due at once, unless they are blocked already (parked jobs).
    pub ensure_keys: Vec<String>,
    /// Keys whose in-memory jobs are all done: unblock them if no unfinished row is left.
    pub check_keys: Vec<String>,
}

impl LaneCommit {
    pub fn is_empty(&self) -> bool {
        self.new_rows.is_empty()
            && self.row_updates.is_empty()
            && self.block_keys.is_empty()
            && self.ensure_keys.is_empty()
            && self.check_keys.is_empty()
    }
}

/// What a commit found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitResult {
    /// Keys of `check_keys` that were unblocked.
    pub unblocked: Vec<String>,
}

impl Store {
    /// Applies a lane commit; [`StoreError::LeaseLost`] if the lease is no longer ours.
    pub async fn lane_commit(&self, c: &LaneCommit) -> Result<CommitResult, StoreError> {
        let lane = &c.lease.lane;
        let fence = sqlx::query(
            "UPDATE lanes SET cursor = greatest(cursor, $5), claimed_to = greatest(claimed_to, $6),
                 lease_until = $7 + make_interval(secs => $8), updated_at = $7
             WHERE workspace_id = $1 AND destination_id = $2 AND owner = $3 AND owner_epoch = $4",
        )
        .bind(&lane.workspace_id)
        .bind(&lane.destination_id)
        .bind(c.lease.owner)
        .bind(c.lease.epoch)
        .bind(c.cursor)
        .bind(c.claimed_to)
        .bind(c.now)
        .bind(super::secs(c.lease_ttl));
        if c.is_empty() {
            // Progress only (the common case): one statement, no transaction.
            let fenced = fence
                .execute(&self.lane_pool)
                .await
                .map_err(StoreError::from_sqlx("recording lane progress"))?;
            if fenced.rows_affected() != 1 {
                return Err(StoreError::LeaseLost(lane.clone()));
            }
            return Ok(CommitResult::default());
        }
        let mut tx = self
            .lane_pool
            .begin()
            .await
            .map_err(StoreError::from_sqlx("starting a lane commit"))?;
        let fenced = fence
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("fencing a lane commit"))?;
        if fenced.rows_affected() != 1 {
            return Err(StoreError::LeaseLost(lane.clone()));
        }

        if !c.new_rows.is_empty() {
            let n = c.new_rows.len();
            let mut dataset = Vec::with_capacity(n);
            let mut event_id = Vec::with_capacity(n);
            let mut source = Vec::with_capacity(n);
            let mut key = Vec::with_capacity(n);
            let mut state = Vec::with_capacity(n);
            let mut attempt = Vec::with_capacity(n);
            let mut code = Vec::with_capacity(n);
            let mut text = Vec::with_capacity(n);
            let mut first = Vec::with_capacity(n);
            let mut last = Vec::with_capacity(n);
            let mut next = Vec::with_capacity(n);
            for r in &c.new_rows {
                dataset.push(r.dataset);
                event_id.push(r.event_id);
                source.push(r.source_id.as_str());
                key.push(r.order_key.as_str());
                state.push(r.state);
                attempt.push(r.attempt);
                code.push(r.error_code.as_deref());
                text.push(r.error_text.as_deref().map(trim));
                first.push(r.first_attempt_at);
                last.push(r.last_attempt_at);
                next.push(r.next_attempt_at);
            }
            // A new row that records an attempt (not a parked job) also gets its attempt in
            // `job_attempts`, from the rows actually inserted: a re-park that conflicts adds
            // nothing. A first-try throttle is told apart by the lane's `throttled` code.
            sqlx::query(
                "WITH ins AS (
                     INSERT INTO job_state (dataset, workspace_id, destination_id, event_id,
                         source_id, order_key, state, attempt, error_code, error_text,
                         first_attempt_at, last_attempt_at, next_attempt_at, updated_at)
                     SELECT u.dataset, $1, $2, u.event_id, u.source_id, u.order_key, u.state,
                            u.attempt, u.code, u.text, u.first, u.last, u.next, $14
                     FROM UNNEST($3::int[], $4::bigint[], $5::text[], $6::text[],
                                 $7::job_status[], $8::int[], $9::text[], $10::text[],
                                 $11::timestamptz[], $12::timestamptz[], $13::timestamptz[])
                          AS u(dataset, event_id, source_id, order_key, state, attempt, code,
                               text, first, last, next)
                     ON CONFLICT DO NOTHING
                     RETURNING dataset, event_id, state, attempt, error_code, error_text,
                               last_attempt_at
                 )
                 INSERT INTO job_attempts (dataset, workspace_id, destination_id, event_id,
                                           attempt, at, outcome, error_code, error_text)
                 SELECT dataset, $1, $2, event_id, attempt, last_attempt_at,
                        CASE state WHEN 'delivered' THEN 'delivered'
                                   WHEN 'aborted' THEN 'abort'
                                   WHEN 'failed' THEN CASE WHEN error_code = 'throttled'
                                                           THEN 'throttled' ELSE 'retry' END
                        END,
                        error_code, error_text
                 FROM ins
                 WHERE last_attempt_at IS NOT NULL AND state <> 'pending'",
            )
            .bind(&lane.workspace_id)
            .bind(&lane.destination_id)
            .bind(&dataset)
            .bind(&event_id)
            .bind(&source)
            .bind(&key)
            .bind(&state)
            .bind(&attempt)
            .bind(&code)
            .bind(&text)
            .bind(&first)
            .bind(&last)
            .bind(&next)
            .bind(c.now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("writing job rows"))?;
        }

        if !c.row_updates.is_empty() {
            let n = c.row_updates.len();
            let mut event_id = Vec::with_capacity(n);
            let mut state = Vec::with_capacity(n);
            let mut inc = Vec::with_capacity(n);
            let mut code = Vec::with_capacity(n);
            let mut text = Vec::with_capacity(n);
            let mut at = Vec::with_capacity(n);
            let mut next = Vec::with_capacity(n);
            for u in &c.row_updates {
                event_id.push(u.event_id);
                state.push(u.state);
                inc.push(u.attempt_inc);
                code.push(u.error_code.as_deref());
                text.push(u.error_text.as_deref().map(trim));
                at.push(u.attempted_at);
                next.push(u.next_attempt_at);
            }
            // Only unfinished rows change: an operator's abort or replay is never overwritten.
            // Each update that records an attempt (`at` set) also writes it to `job_attempts`,
            // with this attempt's own error (the row keeps the last failure once delivered).
            sqlx::query(
                "WITH upd AS (
                     UPDATE job_state s
                     SET state = u.state, attempt = s.attempt + u.inc,
                         error_code = coalesce(u.code, s.error_code),
                         error_text = CASE WHEN u.code IS NULL THEN s.error_text ELSE u.text END,
                         first_attempt_at = coalesce(s.first_attempt_at, u.at),
                         last_attempt_at = coalesce(u.at, s.last_attempt_at),
                         next_attempt_at = u.next, updated_at = $10
                     FROM UNNEST($3::bigint[], $4::job_status[], $5::int[], $6::text[],
                                 $7::text[], $8::timestamptz[], $9::timestamptz[])
                          AS u(event_id, state, inc, code, text, at, next)
                     WHERE s.workspace_id = $1 AND s.destination_id = $2
                       AND s.event_id = u.event_id AND s.state IN ('pending', 'failed')
                     RETURNING s.dataset, s.event_id, s.attempt, u.state, u.inc, u.code, u.text,
                               u.at
                 )
                 INSERT INTO job_attempts (dataset, workspace_id, destination_id, event_id,
                                           attempt, at, outcome, error_code, error_text)
                 SELECT dataset, $1, $2, event_id, attempt, at,
                        CASE state WHEN 'delivered' THEN 'delivered'
                                   WHEN 'aborted' THEN 'abort'
                                   ELSE CASE WHEN inc = 0 THEN 'throttled' ELSE 'retry' END
                        END,
                        code, text
                 FROM upd
                 WHERE at IS NOT NULL AND state <> 'pending'",
            )
            .bind(&lane.workspace_id)
            .bind(&lane.destination_id)
            .bind(&event_id)
            .bind(&state)
            .bind(&inc)
            .bind(&code)
            .bind(&text)
            .bind(&at)
            .bind(&next)
            .bind(c.now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("recording job outcomes"))?;
        }

        if !c.block_keys.is_empty() {
            let keys: Vec<&str> = c.block_keys.iter().map(|(k, _)| k.as_str()).collect();
            let due: Vec<OffsetDateTime> = c.block_keys.iter().map(|(_, t)| *t).collect();
            sqlx::query(
                "INSERT INTO blocked_keys (workspace_id, destination_id, order_key, next_attempt_at,
                                           blocked_since)
                 SELECT $1, $2, u.k, u.t, $5 FROM UNNEST($3::text[], $4::timestamptz[]) AS u(k, t)
                 ON CONFLICT (workspace_id, destination_id, order_key)
                 DO UPDATE SET next_attempt_at = excluded.next_attempt_at",
            )
            .bind(&lane.workspace_id)
            .bind(&lane.destination_id)
            .bind(&keys)
            .bind(&due)
            .bind(c.now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("blocking keys"))?;
        }

        if !c.ensure_keys.is_empty() {
            sqlx::query(
                "INSERT INTO blocked_keys (workspace_id, destination_id, order_key, next_attempt_at,
                                           blocked_since)
                 SELECT $1, $2, k, $4, $4 FROM unnest($3::text[]) AS k
                 ON CONFLICT (workspace_id, destination_id, order_key) DO NOTHING",
            )
            .bind(&lane.workspace_id)
            .bind(&lane.destination_id)
            .bind(&c.ensure_keys)
            .bind(c.now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("blocking parked keys"))?;
        }

        let mut result = CommitResult::default();
        if !c.check_keys.is_empty() {
            result.unblocked = sqlx::query_scalar(
                "DELETE FROM blocked_keys b
                 WHERE b.workspace_id = $1 AND b.destination_id = $2 AND b.order_key = ANY($3)
                   AND NOT EXISTS (
                       SELECT 1 FROM job_state s
                       WHERE s.workspace_id = $1 AND s.destination_id = $2
                         AND s.order_key = b.order_key AND s.state IN ('pending', 'failed'))
                 RETURNING b.order_key",
            )
            .bind(&lane.workspace_id)
            .bind(&lane.destination_id)
            .bind(&c.check_keys)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("unblocking keys"))?;
            let still: Vec<&str> = c
                .check_keys
                .iter()
                .filter(|k| !result.unblocked.contains(k))
                .map(String::as_str)
                .collect();
            if !still.is_empty() {
                sqlx::query(
                    "UPDATE blocked_keys SET next_attempt_at = $4
                     WHERE workspace_id = $1 AND destination_id = $2 AND order_key = ANY($3)",
                )
                .bind(&lane.workspace_id)
                .bind(&lane.destination_id)
                .bind(&still)
                .bind(c.now)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx("making blocked keys due"))?;
            }
        }
        tx.commit()
            .await
            .map_err(StoreError::from_sqlx("committing a lane commit"))?;
        Ok(result)
    }
}

/// Keeps the first `MAX_ERROR_TEXT` bytes, cut at a character boundary.
pub fn trim(text: &str) -> &str {
    if text.len() <= MAX_ERROR_TEXT {
        return text;
    }
    let mut end = MAX_ERROR_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_keeps_char_boundaries() {
        let text = "é".repeat(MAX_ERROR_TEXT);
        let t = trim(&text);
        assert!(t.len() <= MAX_ERROR_TEXT);
        assert!(t.chars().all(|c| c == 'é'));
        assert_eq!(trim("short"), "short");
    }
}
