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

use sqlx::PgConnection;
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
        if c.is_empty() {
            // Progress only (the common case): one statement, no transaction.
            lane_fence(&self.lane_pool, c, "recording lane progress").await?;
            return Ok(CommitResult::default());
        }
        let mut tx = self
            .lane_pool
            .begin()
            .await
            .map_err(StoreError::from_sqlx("starting a lane commit"))?;
        lane_fence(&mut *tx, c, "fencing a lane commit").await?;
        job_rows_insert(&mut tx, c).await?;
        job_rows_update(&mut tx, c).await?;
        keys_block(&mut tx, c).await?;
        let unblocked = keys_check(&mut tx, c).await?;
        tx.commit()
            .await
            .map_err(StoreError::from_sqlx("committing a lane commit"))?;
        Ok(CommitResult { unblocked })
    }
}

/// The fence: moves the lane's cursor and renews its lease, only if the lease is still ours.
async fn lane_fence<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    c: &LaneCommit,
    action: &'static str,
) -> Result<(), StoreError> {
    let lane = &c.lease.lane;
    let fenced = sqlx::query(
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
    .bind(super::secs(c.lease_ttl))
    .execute(conn)
    .await
    .map_err(StoreError::from_sqlx(action))?;
    if fenced.rows_affected() != 1 {
        return Err(StoreError::LeaseLost(lane.clone()));
    }
    Ok(())
}

/// Step 1: new `job_state` rows, each attempt they record also in `job_attempts`.
async fn job_rows_insert(conn: &mut PgConnection, c: &LaneCommit) -> Result<(), StoreError> {
    if c.new_rows.is_empty() {
        return Ok(());
    }
    let rows = &c.new_rows;
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
                (CASE state WHEN 'delivered' THEN 'delivered'
                            WHEN 'aborted' THEN 'abort'
                            WHEN 'failed' THEN CASE WHEN error_code = 'throttled'
                                                    THEN 'throttled' ELSE 'retry' END
                 END)::attempt_outcome,
                error_code, error_text
         FROM ins
         WHERE last_attempt_at IS NOT NULL AND state <> 'pending'",
    )
    .bind(&c.lease.lane.workspace_id)
    .bind(&c.lease.lane.destination_id)
    .bind(column(rows, |r| r.dataset))
    .bind(column(rows, |r| r.event_id))
    .bind(column(rows, |r| r.source_id.as_str()))
    .bind(column(rows, |r| r.order_key.as_str()))
    .bind(column(rows, |r| r.state))
    .bind(column(rows, |r| r.attempt))
    .bind(column(rows, |r| r.error_code.as_deref()))
    .bind(column(rows, |r| r.error_text.as_deref().map(trim)))
    .bind(column(rows, |r| r.first_attempt_at))
    .bind(column(rows, |r| r.last_attempt_at))
    .bind(column(rows, |r| r.next_attempt_at))
    .bind(c.now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::from_sqlx("writing job rows"))?;
    Ok(())
}

/// Step 2: outcomes of jobs that have rows, each attempt also in `job_attempts`.
async fn job_rows_update(conn: &mut PgConnection, c: &LaneCommit) -> Result<(), StoreError> {
    if c.row_updates.is_empty() {
        return Ok(());
    }
    let rows = &c.row_updates;
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
                (CASE state WHEN 'delivered' THEN 'delivered'
                            WHEN 'aborted' THEN 'abort'
                            ELSE CASE WHEN inc = 0 THEN 'throttled' ELSE 'retry' END
                 END)::attempt_outcome,
                code, text
         FROM upd
         WHERE at IS NOT NULL AND state <> 'pending'",
    )
    .bind(&c.lease.lane.workspace_id)
    .bind(&c.lease.lane.destination_id)
    .bind(column(rows, |u| u.event_id))
    .bind(column(rows, |u| u.state))
    .bind(column(rows, |u| u.attempt_inc))
    .bind(column(rows, |u| u.error_code.as_deref()))
    .bind(column(rows, |u| u.error_text.as_deref().map(trim)))
    .bind(column(rows, |u| u.attempted_at))
    .bind(column(rows, |u| u.next_attempt_at))
    .bind(c.now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::from_sqlx("recording job outcomes"))?;
    Ok(())
}

/// Step 3: blocked keys: failures block (or re-block) their key until the given time; parks
/// block theirs, due at once, unless it is blocked already.
async fn keys_block(conn: &mut PgConnection, c: &LaneCommit) -> Result<(), StoreError> {
    let lane = &c.lease.lane;
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
        .execute(&mut *conn)
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
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx("blocking parked keys"))?;
    }
    Ok(())
}

/// Step 4: key checks. A key whose rows are all finished is unblocked (its row deleted, and it
/// is returned); the others are made due at once. Runs after step 1, so a job parked in this
/// same commit keeps its key blocked.
async fn keys_check(conn: &mut PgConnection, c: &LaneCommit) -> Result<Vec<String>, StoreError> {
    if c.check_keys.is_empty() {
        return Ok(Vec::new());
    }
    let lane = &c.lease.lane;
    let unblocked: Vec<String> = sqlx::query_scalar(
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
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::from_sqlx("unblocking keys"))?;
    let still: Vec<&str> = c
        .check_keys
        .iter()
        .filter(|k| !unblocked.contains(k))
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
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx("making blocked keys due"))?;
    }
    Ok(unblocked)
}

/// One field of every row, as an array to `UNNEST` (a batch is one statement, not one per row).
fn column<'a, T, U>(rows: &'a [T], field: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(field).collect()
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
