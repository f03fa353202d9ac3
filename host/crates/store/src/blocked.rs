//! Fetching the unfinished jobs of blocked keys that are due, in key order.
//!
//! A blocked key is due when its `next_attempt_at` has passed: its first unfinished job failed
//! and its backoff is over, or that job finished and the jobs parked behind it may go. The
//! fetch returns, for each due key not excluded (keys the lane still has jobs of in memory),
//! a prefix of its unfinished rows in event-id order, with the events, bounded by bytes.

use sqlx::Row;
use time::OffsetDateTime;

use super::{JobState, LaneId, Store, StoreError};

/// An unfinished job with a row, ready to deliver.
#[derive(Debug, Clone)]
pub struct RowJob {
    pub dataset: i32,
    pub event_id: i64,
    pub source_id: String,
    pub order_key: String,
    pub state: JobState,
    pub attempt: i32,
    pub first_attempt_at: Option<OffsetDateTime>,
    pub user_key: String,
    pub message_id: String,
    pub received_at: OffsetDateTime,
    pub event: String,
}

/// What a fetch found.
#[derive(Debug, Clone, Default)]
pub struct BlockedFetch {
    /// Jobs grouped by key, in event order within each key.
    pub jobs: Vec<RowJob>,
    /// Due keys without any unfinished row (an operator finished them): to unblock.
    pub empty_keys: Vec<String>,
    /// When the next key that was not fetched falls due.
    pub next_due: Option<OffsetDateTime>,
}

/// Limits of one fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    pub max_keys: usize,
    pub max_jobs_per_key: usize,
    pub max_bytes: usize,
}

impl Store {
    /// Unfinished jobs of due blocked keys, grouped by key and in order within each.
    pub async fn blocked_fetch(
        &self,
        lane: &LaneId,
        now: OffsetDateTime,
        exclude: &[String],
        limits: FetchLimits,
    ) -> Result<BlockedFetch, StoreError> {
        let rows = sqlx::query(
            "WITH due AS (
                 SELECT b.order_key, b.next_attempt_at FROM blocked_keys b
                 WHERE b.workspace_id = $1 AND b.destination_id = $2 AND b.next_attempt_at <= $3
                   AND b.order_key <> ALL($4)
                 ORDER BY b.next_attempt_at LIMIT $5
             ), picked AS (
                 SELECT d.order_key AS due_key, j.*,
                        sum(j.size) OVER (ORDER BY d.next_attempt_at, d.order_key, j.event_id)
                            AS running
                 FROM due d
                 LEFT JOIN LATERAL (
                     SELECT s.dataset, s.event_id, s.source_id, s.order_key, s.state, s.attempt,
                            s.first_attempt_at, e.user_key, e.message_id, e.received_at, e.size,
                            e.event
                     FROM job_state s
                     JOIN events e ON e.workspace_id = $1 AND e.source_id = s.source_id
                                  AND e.id = s.event_id AND e.dataset = s.dataset
                     WHERE s.workspace_id = $1 AND s.destination_id = $2
                       AND s.order_key = d.order_key AND s.state IN ('pending', 'failed')
                     ORDER BY s.event_id LIMIT $6) j ON true
             )
             SELECT * FROM picked WHERE event_id IS NULL OR running - size < $7
             ORDER BY due_key, event_id",
        )
        .bind(&lane.workspace_id)
        .bind(&lane.destination_id)
        .bind(now)
        .bind(exclude)
        .bind(limits.max_keys.max(1) as i64)
        .bind(limits.max_jobs_per_key.max(1) as i64)
        .bind(limits.max_bytes.max(1) as i64)
        .fetch_all(&self.lane_pool)
        .await
        .map_err(StoreError::from_sqlx("fetching jobs of blocked keys"))?;
        let mut fetch = BlockedFetch::default();
        for r in rows {
            let Some(event_id) = r.get::<Option<i64>, _>("event_id") else {
                fetch.empty_keys.push(r.get("due_key"));
                continue;
            };
            fetch.jobs.push(RowJob {
                dataset: r.get("dataset"),
                event_id,
                source_id: r.get("source_id"),
                order_key: r.get("order_key"),
                state: r.get("state"),
                attempt: r.get("attempt"),
                first_attempt_at: r.get("first_attempt_at"),
                user_key: r.get("user_key"),
                message_id: r.get("message_id"),
                received_at: r.get("received_at"),
                event: r.get("event"),
            });
        }

        let mut busy: Vec<&str> = exclude.iter().map(String::as_str).collect();
        busy.extend(fetch.jobs.iter().map(|j| j.order_key.as_str()));
        busy.extend(fetch.empty_keys.iter().map(String::as_str));
        let next_due: Option<OffsetDateTime> = sqlx::query_scalar(
            "SELECT next_attempt_at FROM blocked_keys
             WHERE workspace_id = $1 AND destination_id = $2 AND order_key <> ALL($3)
             ORDER BY next_attempt_at LIMIT 1",
        )
        .bind(&lane.workspace_id)
        .bind(&lane.destination_id)
        .bind(&busy)
        .fetch_optional(&self.lane_pool)
        .await
        .map_err(StoreError::from_sqlx("finding the next due key"))?;
        fetch.next_due = next_due;
        Ok(fetch)
    }
}
