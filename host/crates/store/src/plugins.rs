//! Which plugin versions hosts run, and each destination's plugin status, for operators
//! (`lane_status`, `plugin_versions`). Written at start and at every reload, never on the
//! delivery path.

use uuid::Uuid;

use super::{LaneId, Store, StoreError};

/// One plugin a host has loaded.
#[derive(Debug, Clone)]
pub struct LoadedVersion {
    pub plugin: String,
    pub sha256: String,
    pub version: String,
}

impl Store {
    /// Replaces the list of plugins this host incarnation runs.
    pub async fn host_plugins_set(
        &self,
        incarnation: Uuid,
        loaded: &[LoadedVersion],
    ) -> Result<(), StoreError> {
        let names: Vec<&str> = loaded.iter().map(|l| l.plugin.as_str()).collect();
        let shas: Vec<&str> = loaded.iter().map(|l| l.sha256.as_str()).collect();
        let versions: Vec<&str> = loaded.iter().map(|l| l.version.as_str()).collect();
        sqlx::query(
            "WITH gone AS (
                 DELETE FROM host_plugins WHERE incarnation = $1 AND plugin <> ALL($2::text[])
             )
             INSERT INTO host_plugins (incarnation, plugin, sha256, version)
             SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[])
             ON CONFLICT (incarnation, plugin) DO UPDATE
                 SET sha256 = excluded.sha256, version = excluded.version,
                     loaded_at = excluded.loaded_at
                 WHERE host_plugins.sha256 <> excluded.sha256
                    OR host_plugins.version <> excluded.version",
        )
        .bind(incarnation)
        .bind(&names)
        .bind(&shas)
        .bind(&versions)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("recording this host's plugins"))?;
        Ok(())
    }

    /// Records a destination's plugin: configured (`error` None) or why not.
    pub async fn lane_plugin_status(
        &self,
        lane: &LaneId,
        plugin: &str,
        sha256: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE lanes SET plugin = $3, plugin_sha256 = $4, plugin_error = $5,
                              plugin_checked_at = now()
             WHERE workspace_id = $1 AND destination_id = $2",
        )
        .bind(&lane.workspace_id)
        .bind(&lane.destination_id)
        .bind(plugin)
        .bind(sha256)
        .bind(error)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx(
            "recording a destination's plugin status",
        ))?;
        Ok(())
    }
}

/// One lane's state for the metrics page.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LaneGauge {
    pub workspace_id: String,
    pub destination_id: String,
    pub ids_behind: i64,
    pub blocked_keys: i64,
    pub leased: bool,
    pub paused: bool,
    /// Unfinished jobs: failed and parked rows, and jobs past the cursor counted up to 10,000.
    pub depth: i64,
    pub failed: i64,
    /// Seconds since the oldest unfinished job was received; 0 when there is none.
    pub oldest_age_seconds: f64,
}

impl Store {
    /// Lane state for `/metrics`, from `lane_status` and `lane_backlog`: index probes per
    /// lane, never a scan of the backlog (migration 0006).
    pub async fn lane_gauges(&self) -> Result<Vec<LaneGauge>, StoreError> {
        sqlx::query_as(
            "SELECT s.workspace_id, s.destination_id,
                    greatest(coalesce(s.ids_behind, 0), 0) AS ids_behind,
                    coalesce(s.blocked_keys, 0) AS blocked_keys,
                    coalesce(s.leased, false) AS leased,
                    s.paused_at IS NOT NULL AS paused,
                    b.failed + b.parked + b.queued AS depth, b.failed,
                    coalesce(greatest(b.oldest_age_seconds, 0), 0) AS oldest_age_seconds
             FROM lane_status s
             JOIN lane_backlog b
                 ON b.workspace_id = s.workspace_id AND b.destination_id = s.destination_id
             WHERE s.retired_at IS NULL",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("reading lane state for metrics"))
    }

    /// (pool, connections, idle connections) of each connection pool.
    pub fn pool_stats(&self) -> [(&'static str, u32, usize); 2] {
        [
            ("store", self.pool.size(), self.pool.num_idle()),
            ("lanes", self.lane_pool.size(), self.lane_pool.num_idle()),
        ]
    }
}
