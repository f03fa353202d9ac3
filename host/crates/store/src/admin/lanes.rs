//! Lanes for operators: depth, lease, pause and plugin (`lane_status`, `lane_backlog`),
//! rates from `lane_stats`, blocked keys, plugins and the audit log.

use sqlx::Row;

use super::{AuditRow, BlockedKey, HostPlugin, LaneOverview, LanePlugin, StatsMinute};
use crate::{LaneId, Store, StoreError};

/// Rates and failure rates are taken over this many minutes (the current one included).
pub const RATE_MINUTES: i32 = 5;

impl Store {
    /// Every live lane, with depth, rates over the last [`RATE_MINUTES`] and lease state.
    pub async fn admin_lanes(&self) -> Result<Vec<LaneOverview>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.workspace_id, s.destination_id, s.ids_behind, s.blocked_keys,
                    s.owner_host, s.owner_pid, s.lease_until, coalesce(s.leased, false) AS leased,
                    s.paused_at, s.paused_by, s.plugin, s.plugin_sha256, s.plugin_error,
                    d.parked + d.queued - d.executing AS pending, d.executing, d.failed,
                    d.queued_capped, d.oldest_age_seconds AS oldest_age,
                    st.delivered, st.failed5, st.aborted, st.throttled, st.filtered,
                    s.concurrency_limit, coalesce(s.breaker_open, false) AS breaker_open
             FROM lane_status s
             JOIN lane_backlog d
                 ON d.workspace_id = s.workspace_id AND d.destination_id = s.destination_id
             CROSS JOIN LATERAL (
                 SELECT coalesce(sum(x.delivered), 0)::bigint AS delivered,
                        coalesce(sum(x.failed), 0)::bigint AS failed5,
                        coalesce(sum(x.aborted), 0)::bigint AS aborted,
                        coalesce(sum(x.throttled), 0)::bigint AS throttled,
                        coalesce(sum(x.filtered), 0)::bigint AS filtered
                 FROM lane_stats x
                 WHERE x.workspace_id = s.workspace_id AND x.destination_id = s.destination_id
                   AND x.minute > date_trunc('minute', now()) - make_interval(mins => $1)
             ) st
             WHERE s.retired_at IS NULL
             ORDER BY s.workspace_id, s.destination_id",
        )
        .bind(RATE_MINUTES)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("reading lanes"))?;
        Ok(rows
            .iter()
            .map(|r| {
                let delivered: i64 = r.get("delivered");
                let failed: i64 = r.get("failed5");
                let aborted: i64 = r.get("aborted");
                let attempts = delivered + failed + aborted;
                let paused_at: Option<time::OffsetDateTime> = r.get("paused_at");
                LaneOverview {
                    workspace: r.get("workspace_id"),
                    destination: r.get("destination_id"),
                    pending: r.get("pending"),
                    executing: r.get("executing"),
                    failed: r.get("failed"),
                    depth_capped: r.get("queued_capped"),
                    oldest_age_seconds: r.get("oldest_age"),
                    ids_behind: r.get::<Option<i64>, _>("ids_behind").unwrap_or(0),
                    blocked_keys: r.get::<Option<i64>, _>("blocked_keys").unwrap_or(0),
                    rate_per_minute: delivered as f64 / f64::from(RATE_MINUTES),
                    failure_rate: if attempts == 0 {
                        0.0
                    } else {
                        (failed + aborted) as f64 / attempts as f64
                    },
                    delivered_5m: delivered,
                    failed_5m: failed,
                    aborted_5m: aborted,
                    throttled_5m: r.get("throttled"),
                    filtered_5m: r.get("filtered"),
                    concurrency_limit: r.get("concurrency_limit"),
                    breaker_open: r.get("breaker_open"),
                    owner_host: r.get("owner_host"),
                    owner_pid: r.get("owner_pid"),
                    lease_until: r.get("lease_until"),
                    leased: r.get("leased"),
                    paused: paused_at.is_some(),
                    paused_at,
                    paused_by: r.get("paused_by"),
                    plugin: r.get("plugin"),
                    plugin_sha256: r.get("plugin_sha256"),
                    plugin_error: r.get("plugin_error"),
                }
            })
            .collect())
    }

    /// Whether the lane exists (and is not retired).
    pub async fn admin_lane_exists(&self, lane: &LaneId) -> Result<bool, StoreError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM lanes WHERE workspace_id = $1 AND destination_id = $2
                                                  AND retired_at IS NULL)",
        )
        .bind(&lane.workspace_id)
        .bind(&lane.destination_id)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("finding a lane"))
    }

    /// The last `minutes` minutes of a lane, one entry per minute (zeros where nothing
    /// happened), oldest first.
    pub async fn admin_lane_stats(
        &self,
        lane: &LaneId,
        minutes: i32,
    ) -> Result<Vec<StatsMinute>, StoreError> {
        let rows = sqlx::query(
            "SELECT g.minute,
                    coalesce(sum(x.delivered), 0)::bigint AS delivered,
                    coalesce(sum(x.failed), 0)::bigint AS failed,
                    coalesce(sum(x.aborted), 0)::bigint AS aborted,
                    coalesce(sum(x.throttled), 0)::bigint AS throttled,
                    coalesce(sum(x.filtered), 0)::bigint AS filtered,
                    max(x.concurrency_limit) AS concurrency_limit,
                    coalesce(bool_or(x.breaker_open), false) AS breaker_open
             FROM generate_series(date_trunc('minute', now()) - make_interval(mins => $3 - 1),
                                  date_trunc('minute', now()), interval '1 minute') AS g(minute)
             LEFT JOIN lane_stats x ON x.workspace_id = $1 AND x.destination_id = $2
                                   AND x.minute = g.minute
             GROUP BY g.minute
             ORDER BY g.minute",
        )
        .bind(&lane.workspace_id)
        .bind(&lane.destination_id)
        .bind(minutes)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("reading lane stats"))?;
        Ok(rows
            .iter()
            .map(|r| StatsMinute {
                minute: r.get("minute"),
                delivered: r.get("delivered"),
                failed: r.get("failed"),
                aborted: r.get("aborted"),
                throttled: r.get("throttled"),
                filtered: r.get("filtered"),
                concurrency_limit: r.get("concurrency_limit"),
                breaker_open: r.get("breaker_open"),
            })
            .collect())
    }

    /// A lane's blocked keys, soonest due first, each with the job at its head.
    pub async fn admin_blocked(
        &self,
        lane: &LaneId,
        limit: i64,
    ) -> Result<Vec<BlockedKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT b.order_key, b.next_attempt_at, b.blocked_since,
                    h.event_id, h.state, h.attempt, h.error_code, left(h.error_text, 500) AS error,
                    (SELECT count(*) FROM job_state w
                     WHERE w.workspace_id = b.workspace_id AND w.destination_id = b.destination_id
                       AND w.order_key = b.order_key AND w.state IN ('pending', 'failed'))
                        AS waiting
             FROM blocked_keys b
             LEFT JOIN LATERAL (
                 SELECT s.event_id, s.state, s.attempt, s.error_code, s.error_text
                 FROM job_state s
                 WHERE s.workspace_id = b.workspace_id AND s.destination_id = b.destination_id
                   AND s.order_key = b.order_key AND s.state IN ('pending', 'failed')
                 ORDER BY s.event_id LIMIT 1
             ) h ON true
             WHERE b.workspace_id = $1 AND b.destination_id = $2
             ORDER BY b.next_attempt_at, b.order_key
             LIMIT $3",
        )
        .bind(&lane.workspace_id)
        .bind(&lane.destination_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("reading blocked keys"))?;
        Ok(rows
            .iter()
            .map(|r| BlockedKey {
                order_key: r.get("order_key"),
                next_attempt_at: r.get("next_attempt_at"),
                blocked_since: r.get("blocked_since"),
                waiting: r.get("waiting"),
                head_event_id: r.get("event_id"),
                head_state: r.get("state"),
                head_attempt: r.get("attempt"),
                head_error_code: r.get("error_code"),
                head_error: r.get("error"),
            })
            .collect())
    }

    /// Plugins live hosts run, and each destination's plugin status.
    pub async fn admin_plugins(&self) -> Result<(Vec<HostPlugin>, Vec<LanePlugin>), StoreError> {
        let hosts = sqlx::query(
            "SELECT p.plugin, p.version, p.sha256, p.loaded_at, h.host_name, h.pid
             FROM host_plugins p
             JOIN hosts h ON h.incarnation = p.incarnation AND h.stopped_at IS NULL
             ORDER BY p.plugin, h.host_name, h.pid",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("reading host plugins"))?
        .iter()
        .map(|r| HostPlugin {
            plugin: r.get("plugin"),
            version: r.get("version"),
            sha256: r.get("sha256"),
            host: r.get("host_name"),
            pid: r.get("pid"),
            loaded_at: r.get("loaded_at"),
        })
        .collect();
        let lanes = sqlx::query(
            "SELECT workspace_id, destination_id, plugin, plugin_sha256, plugin_error,
                    plugin_checked_at
             FROM lane_status WHERE retired_at IS NULL
             ORDER BY workspace_id, destination_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("reading lane plugins"))?
        .iter()
        .map(|r| LanePlugin {
            workspace: r.get("workspace_id"),
            destination: r.get("destination_id"),
            plugin: r.get("plugin"),
            sha256: r.get("plugin_sha256"),
            error: r.get("plugin_error"),
            checked_at: r.get("plugin_checked_at"),
        })
        .collect();
        Ok((hosts, lanes))
    }

    /// Audit rows, newest first, before `before` (an audit id).
    pub async fn admin_audit(
        &self,
        workspace: Option<&str>,
        destination: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, workspace_id, destination_id, event_ids, filter, jobs
             FROM operator_audit
             WHERE ($1::text IS NULL OR workspace_id = $1)
               AND ($2::text IS NULL OR destination_id = $2)
               AND ($3::bigint IS NULL OR id < $3)
             ORDER BY id DESC
             LIMIT $4",
        )
        .bind(workspace)
        .bind(destination)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("reading the audit log"))?;
        Ok(rows
            .iter()
            .map(|r| AuditRow {
                id: r.get("id"),
                at: r.get("at"),
                actor: r.get("actor"),
                action: r.get("action"),
                workspace: r.get("workspace_id"),
                destination: r.get("destination_id"),
                event_ids: r.get("event_ids"),
                filter: r.get("filter"),
                jobs: r.get("jobs"),
            })
            .collect())
    }
}
