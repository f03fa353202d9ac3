//! A lane reading its sources' events from the log, in id order.
//!
//! The read is bounded by count and by bytes (the first event is always returned, however
//! large, so a lane never stalls). It also returns the ingest head seen in the same snapshot:
//! when the read was not cut short, the lane has seen every event of its sources up to the
//! head, and may move its read position there even if its sources wrote nothing.
//!
//! Events in `(after, skip_rows_to]` that already have a `job_state` row for this destination
//! are skipped: a previous owner parked them, and they are retried from their rows.

use sqlx::Row;
use time::OffsetDateTime;

use super::{LaneId, Store, StoreError};

/// One event of the log.
#[derive(Debug, Clone)]
pub struct LogEvent {
    pub dataset: i32,
    pub id: i64,
    pub source_id: String,
    pub user_key: String,
    pub message_id: String,
    pub received_at: OffsetDateTime,
    pub event: String,
}

/// What a read returned.
#[derive(Debug, Clone, Default)]
pub struct LogRead {
    pub events: Vec<LogEvent>,
    /// How far the lane may move its read position: the head if the read was not cut short,
    /// else the last id returned.
    pub read_to: i64,
    /// The read was not cut short: the lane has seen everything committed so far.
    pub exhausted: bool,
}

/// Limits of one read.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub max_events: usize,
    pub max_bytes: usize,
}

impl Store {
    /// Reads the events of `sources` with ids above `after`, in id order.
    pub async fn log_read(
        &self,
        lane: &LaneId,
        sources: &[String],
        after: i64,
        skip_rows_to: i64,
        limits: ReadLimits,
    ) -> Result<LogRead, StoreError> {
        let rows = sqlx::query(
            "SELECT h.last_id AS head, r.*
             FROM ingest_head h
             LEFT JOIN LATERAL (
                 SELECT w.* FROM (
                     SELECT e.*, sum(e.size) OVER (ORDER BY e.id) AS running FROM (
                         SELECT x.* FROM unnest($3::text[]) AS s(src) CROSS JOIN LATERAL (
                             SELECT v.dataset, v.id, v.source_id, v.user_key, v.message_id,
                                    v.received_at, v.size, v.event
                             FROM events v
                             WHERE v.workspace_id = $1 AND v.source_id = s.src AND v.id > $4
                               AND v.id <= h.last_id
                               AND (v.id > $5 OR NOT EXISTS (
                                   SELECT 1 FROM job_state js
                                   WHERE js.workspace_id = $1 AND js.destination_id = $2
                                     AND js.event_id = v.id))
                             ORDER BY v.id LIMIT $6) x
                         ORDER BY x.id LIMIT $6) e
                     ) w
                 WHERE w.running - w.size < $7
             ) r ON true
             ORDER BY r.id",
        )
        .bind(&lane.workspace_id)
        .bind(&lane.destination_id)
        .bind(sources)
        .bind(after)
        .bind(skip_rows_to)
        .bind(limits.max_events.max(1) as i64)
        .bind(limits.max_bytes.max(1) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("reading the event log"))?;

        let head: i64 = rows.first().map(|r| r.get("head")).unwrap_or(after);
        let mut events = Vec::with_capacity(rows.len());
        let mut last_running: i64 = 0;
        for r in rows {
            let Some(id) = r.get::<Option<i64>, _>("id") else {
                continue;
            };
            last_running = r.get("running");
            events.push(LogEvent {
                dataset: r.get("dataset"),
                id,
                source_id: r.get("source_id"),
                user_key: r.get("user_key"),
                message_id: r.get("message_id"),
                received_at: r.get("received_at"),
                event: r.get("event"),
            });
        }
        let cut_by_count = events.len() >= limits.max_events.max(1);
        // The byte cut dropped rows when the last kept row did not end the window; we cannot see
        // the dropped rows, so treat a read that reached the byte budget as cut.
        let cut_by_bytes = last_running as usize >= limits.max_bytes.max(1);
        let exhausted = !(cut_by_count || cut_by_bytes);
        let read_to = match events.last() {
            Some(last) if !exhausted => last.id,
            _ => head.max(after),
        };
        Ok(LogRead {
            events,
            read_to,
            exhausted,
        })
    }
}
