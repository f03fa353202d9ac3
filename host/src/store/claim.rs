//! Pickup: handing jobs of one destination to its router.
//!
//! # The ordering invariant
//!
//! For each (destination, ordering key), the jobs in flight all belong to one claim, and a job
//! is never handed out while an earlier job of its key is unfinished outside that claim.
//!
//! It is enforced here, in one query, and nowhere else:
//! - a key is *blocked* while any of its jobs is `executing` (claimed earlier, not yet
//!   finished) or `failed` with a `next_attempt_at` in the future (waiting for a retry);
//! - a claim takes the lowest-id due jobs (`pending`, or `failed` and due) of unblocked keys,
//!   so for every key it takes a prefix of that key's unfinished jobs, in id order;
//! - claims of one destination are serialised by a transaction-scoped advisory lock, so two
//!   claims can never split a key between them.
//!
//! A failed job stays the head of its key (state `failed`, a later `next_attempt_at`), so the
//! jobs behind it wait by construction. The router delivers a claim's jobs of one key strictly
//! one after another and hands back, unattempted, every job behind one that did not succeed
//! (see `router::delivery`).
//!
//! ```text
//!   pending ──claim──▶ executing ──delivered──▶ delivered
//!      ▲                  │  │ ──abort──────▶ aborted ──(replay)──▶ pending
//!      └──(released)──────┘  └──retry/throttle──▶ failed ──(due, claim)──▶ executing
//! ```

use sqlx::Row;
use time::OffsetDateTime;

use super::{Store, StoreError};

/// A job handed to a router, with everything the plugin needs.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job_id: i64,
    pub workspace_id: String,
    pub source_id: String,
    pub destination_id: String,
    pub ordering_key: String,
    pub message_id: String,
    pub event_json: String,
    /// Attempts finished before this one.
    pub attempt: i32,
    pub first_attempt_at: OffsetDateTime,
}

impl Store {
    /// Claims up to `limit` due jobs of `destination_id`, in id order, marking them `executing`.
    pub async fn job_claim(
        &self,
        destination_id: &str,
        limit: usize,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::from_sqlx("starting a claim"))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('sluice.claim:' || $1, 0))")
            .bind(destination_id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("locking the destination for a claim"))?;
        let rows = sqlx::query(
            "WITH blocked AS (
                SELECT DISTINCT ordering_key FROM job_state
                WHERE destination_id = $1
                  AND state IN ('executing', 'failed')
                  AND (state = 'executing' OR next_attempt_at > now())
             ), picked AS (
                SELECT s.job_id FROM job_state s
                WHERE s.destination_id = $1
                  AND s.state IN ('pending', 'failed')
                  AND s.next_attempt_at <= now()
                  -- NOT IN over a subquery is planned as one hashed subplan, whatever the
                  -- (often stale, after bulk loads) row estimates; NOT EXISTS was turned into
                  -- a nested loop that rescanned the busy keys for every candidate row.
                  AND s.ordering_key NOT IN (SELECT ordering_key FROM blocked)
                ORDER BY s.job_id
                LIMIT $2
             )
             UPDATE job_state s
             SET state = 'executing',
                 first_attempt_at = coalesce(s.first_attempt_at, now()),
                 last_attempt_at = now(),
                 updated_at = now()
             FROM picked p, jobs j
             WHERE s.job_id = p.job_id AND j.id = p.job_id
             RETURNING s.job_id, j.workspace_id, j.source_id, j.destination_id, j.ordering_key,
                       j.message_id, j.event::text AS event, s.attempt, s.first_attempt_at",
        )
        .bind(destination_id)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx("claiming jobs"))?;
        tx.commit()
            .await
            .map_err(StoreError::from_sqlx("committing a claim"))?;

        let mut jobs: Vec<ClaimedJob> = rows
            .into_iter()
            .map(|r| ClaimedJob {
                job_id: r.get("job_id"),
                workspace_id: r.get("workspace_id"),
                source_id: r.get("source_id"),
                destination_id: r.get("destination_id"),
                ordering_key: r.get("ordering_key"),
                message_id: r.get("message_id"),
                event_json: r.get("event"),
                attempt: r.get("attempt"),
                first_attempt_at: r.get("first_attempt_at"),
            })
            .collect();
        // UPDATE ... RETURNING gives no order guarantee; delivery order is id order.
        jobs.sort_unstable_by_key(|j| j.job_id);
        Ok(jobs)
    }
}
