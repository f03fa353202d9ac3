//! `lane_stats` (migrations 0005 and 0009): per lane, minute and host, the outcomes a host counted in
//! memory (the engine's `delivery::stats`), added up flush by flush; read by the admin API.

use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::{LaneId, Store, StoreError};

/// What one lane did since the last flush, and its current limit and breaker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaneCounters {
    pub delivered: i64,
    pub failed: i64,
    pub aborted: i64,
    pub throttled: i64,
    /// Jobs the destination's filter kept from it (finished without a plugin call).
    pub filtered: i64,
    pub concurrency_limit: Option<i32>,
    pub breaker_open: bool,
}

impl Store {
    /// Adds a host's counts to the rows of the minute of `now` (one statement).
    pub async fn lane_stats_add(
        &self,
        host: Uuid,
        now: OffsetDateTime,
        rows: &[(LaneId, LaneCounters)],
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let ws: Vec<&str> = rows.iter().map(|(l, _)| l.workspace_id.as_str()).collect();
        let dest: Vec<&str> = rows
            .iter()
            .map(|(l, _)| l.destination_id.as_str())
            .collect();
        let delivered: Vec<i64> = rows.iter().map(|(_, c)| c.delivered).collect();
        let failed: Vec<i64> = rows.iter().map(|(_, c)| c.failed).collect();
        let aborted: Vec<i64> = rows.iter().map(|(_, c)| c.aborted).collect();
        let throttled: Vec<i64> = rows.iter().map(|(_, c)| c.throttled).collect();
        let filtered: Vec<i64> = rows.iter().map(|(_, c)| c.filtered).collect();
        let limit: Vec<Option<i32>> = rows.iter().map(|(_, c)| c.concurrency_limit).collect();
        let breaker: Vec<bool> = rows.iter().map(|(_, c)| c.breaker_open).collect();
        sqlx::query(
            "INSERT INTO lane_stats (workspace_id, destination_id, minute, host_id, delivered,
                                     failed, aborted, throttled, concurrency_limit, breaker_open,
                                     filtered)
             SELECT u.ws, u.dest, date_trunc('minute', $1::timestamptz), $2, u.d, u.f, u.a, u.t,
                    u.l, u.b, u.x
             FROM UNNEST($3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[],
                         $8::bigint[], $9::int[], $10::bool[], $11::bigint[])
                  AS u(ws, dest, d, f, a, t, l, b, x)
             ON CONFLICT (workspace_id, destination_id, minute, host_id) DO UPDATE
             SET delivered = lane_stats.delivered + excluded.delivered,
                 failed = lane_stats.failed + excluded.failed,
                 aborted = lane_stats.aborted + excluded.aborted,
                 throttled = lane_stats.throttled + excluded.throttled,
                 filtered = lane_stats.filtered + excluded.filtered,
                 concurrency_limit = coalesce(excluded.concurrency_limit,
                                              lane_stats.concurrency_limit),
                 breaker_open = excluded.breaker_open",
        )
        .bind(now)
        .bind(host)
        .bind(&ws)
        .bind(&dest)
        .bind(&delivered)
        .bind(&failed)
        .bind(&aborted)
        .bind(&throttled)
        .bind(&limit)
        .bind(&breaker)
        .bind(&filtered)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("writing lane stats"))?;
        Ok(())
    }

    /// Removes rows older than `keep`. Returns how many.
    pub async fn lane_stats_expire(
        &self,
        now: OffsetDateTime,
        keep: Duration,
    ) -> Result<u64, StoreError> {
        let before = time::Duration::try_from(keep)
            .ok()
            .and_then(|k| now.checked_sub(k))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let done = sqlx::query("DELETE FROM lane_stats WHERE minute < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx("expiring lane stats"))?;
        Ok(done.rows_affected())
    }
}
