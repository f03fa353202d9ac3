//! Listing jobs (from the `job_overview` view) and one job's history.

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{Attempt, JobCursor, JobDetail, JobFilter, JobSummary};
use crate::store::{JobState, LaneId, Store, StoreError};

/// The list query: every filter a bound parameter, NULL meaning "any".
const LIST: &str = "
    SELECT workspace_id, destination_id, event_id, source_id, user_key, message_id, state,
           attempt, error_code, left(error_text, 500) AS error, received_at, last_attempt_at,
           next_attempt_at
    FROM job_overview
    WHERE ($1::text IS NULL OR workspace_id = $1)
      AND ($2::text IS NULL OR source_id = $2)
      AND ($3::text IS NULL OR destination_id = $3)
      AND ($4::text IS NULL OR user_key = $4)
      AND ($5::job_status IS NULL OR state = $5)
      AND ($6::text IS NULL OR error_code = $6)
      AND ($7::text IS NULL OR strpos(error_text, $7) > 0)
      AND ($8::timestamptz IS NULL OR received_at >= $8)
      AND ($9::timestamptz IS NULL OR received_at < $9)
      AND ($10::bigint IS NULL OR (event_id, destination_id) > ($10, $11::text))
      AND ($12::job_status[] IS NULL OR state = ANY ($12))
    ORDER BY event_id, destination_id
    LIMIT $13";

fn summary(r: &PgRow) -> JobSummary {
    JobSummary {
        workspace: r.get("workspace_id"),
        destination: r.get("destination_id"),
        event_id: r.get("event_id"),
        source: r.get("source_id"),
        user: r.get("user_key"),
        message_id: r.get("message_id"),
        state: r.get("state"),
        attempt: r.get("attempt"),
        error_code: r.get("error_code"),
        error: r.get("error"),
        received_at: r.get("received_at"),
        last_attempt_at: r.get("last_attempt_at"),
        next_attempt_at: r.get("next_attempt_at"),
    }
}

impl Store {
    /// One page of jobs matching `filter`, after `cursor`, in (event id, destination) order;
    /// `states` narrows further (used by the operator actions).
    pub async fn admin_jobs(
        &self,
        filter: &JobFilter,
        cursor: Option<&JobCursor>,
        states: Option<&[JobState]>,
        limit: i64,
    ) -> Result<Vec<JobSummary>, StoreError> {
        let rows = sqlx::query(LIST)
            .bind(&filter.workspace)
            .bind(&filter.source)
            .bind(&filter.destination)
            .bind(&filter.user)
            .bind(filter.state)
            .bind(&filter.error_code)
            .bind(&filter.error)
            .bind(filter.since)
            .bind(filter.until)
            .bind(cursor.map(|c| c.event_id))
            .bind(cursor.map(|c| c.destination.as_str()))
            .bind(states)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx("listing jobs"))?;
        Ok(rows.iter().map(summary).collect())
    }

    /// One job with its attempts and event; `None` if the lane has no such job.
    pub async fn admin_job(
        &self,
        lane: &LaneId,
        event_id: i64,
    ) -> Result<Option<JobDetail>, StoreError> {
        let row = sqlx::query(
            "SELECT workspace_id, destination_id, event_id, source_id, user_key, message_id,
                    state, attempt, error_code, left(error_text, 500) AS error, error_text,
                    received_at, first_attempt_at, last_attempt_at, next_attempt_at, order_key,
                    event
             FROM job_overview
             WHERE workspace_id = $1 AND destination_id = $2 AND event_id = $3",
        )
        .bind(&lane.workspace_id)
        .bind(&lane.destination_id)
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("reading a job"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let job = summary(&row);
        let mut attempts: Vec<Attempt> = sqlx::query(
            "SELECT attempt, at, outcome, error_code, error_text FROM job_attempts
             WHERE workspace_id = $1 AND destination_id = $2 AND event_id = $3
             ORDER BY at, attempt",
        )
        .bind(&lane.workspace_id)
        .bind(&lane.destination_id)
        .bind(event_id)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("reading a job's attempts"))?
        .iter()
        .map(|r| Attempt {
            attempt: r.get("attempt"),
            at: Some(r.get("at")),
            outcome: r.get("outcome"),
            error_code: r.get("error_code"),
            error_text: r.get("error_text"),
            implied: false,
        })
        .collect();
        // Delivered at the first try: the store keeps no row, the cursor moved past it.
        if attempts.is_empty() && job.state == JobState::Delivered && job.attempt <= 1 {
            attempts.push(Attempt {
                attempt: 1,
                at: None,
                outcome: "delivered".into(),
                error_code: None,
                error_text: None,
                implied: true,
            });
        }
        Ok(Some(JobDetail {
            error_text: row.get("error_text"),
            order_key: row.get("order_key"),
            first_attempt_at: row.get("first_attempt_at"),
            event: row.get("event"),
            attempts,
            job,
        }))
    }
}
