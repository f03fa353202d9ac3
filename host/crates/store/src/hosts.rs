//! The host registry: one row per host incarnation (a process), with a heartbeat.
//!
//! Live hosts share the lanes with work between them (a fair share each); a host that joins
//! tells the others at once so that they rebalance. An incarnation on this machine that is not
//! marked stopped but whose process is gone is reaped: its lanes are freed without waiting for
//! their leases to expire.

use std::time::Duration;

use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::notify::EVENTS_CHANNEL;
use super::{Store, StoreError};

/// This process, as the hosts table knows it.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub incarnation: Uuid,
    /// Identifies the machine *and* pid namespace, so that a pid can be checked for liveness.
    pub host_name: String,
    pub pid: u32,
}

impl Store {
    /// Records this process in the hosts table and tells the other hosts (they rebalance).
    pub async fn host_register(&self, host: &HostInfo) -> Result<(), StoreError> {
        sqlx::query(
            "WITH h AS (INSERT INTO hosts (incarnation, host_name, pid) VALUES ($1, $2, $3))
             SELECT pg_notify($4, 'join ' || $1::text)",
        )
        .bind(host.incarnation)
        .bind(&host.host_name)
        .bind(host.pid as i32)
        .bind(EVENTS_CHANNEL)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("registering this host"))?;
        Ok(())
    }

    /// Marks this host alive (while there is work anywhere) and returns how many hosts are
    /// alive and how many lanes have work or an owner: what a fair share of lanes is made of.
    pub async fn host_heartbeat(
        &self,
        me: Uuid,
        now: OffsetDateTime,
        stale_after: Duration,
    ) -> Result<(i64, i64), StoreError> {
        sqlx::query("UPDATE hosts SET seen_at = $2 WHERE incarnation = $1")
            .bind(me)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx("recording a heartbeat"))?;
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM hosts
                     WHERE stopped_at IS NULL
                       AND seen_at > $1 - make_interval(secs => $2)) AS live,
                    (SELECT count(*) FROM lanes l
                     LEFT JOIN workspace_heads h ON h.workspace_id = l.workspace_id
                     WHERE l.retired_at IS NULL AND l.paused_at IS NULL
                       AND (l.owner IS NOT NULL OR l.cursor < h.last_id
                            OR l.next_due IS NOT NULL)) AS lanes",
        )
        .bind(now)
        .bind(super::secs(stale_after))
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("counting hosts and lanes"))?;
        Ok((row.get("live"), row.get("lanes")))
    }

    /// Marks this process stopped and frees any lane it still holds.
    pub async fn host_stop(&self, incarnation: Uuid) -> Result<(), StoreError> {
        sqlx::query(
            "WITH s AS (UPDATE hosts SET stopped_at = now() WHERE incarnation = $1)
             UPDATE lanes SET owner = NULL, lease_until = NULL WHERE owner = $1",
        )
        .bind(incarnation)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("marking this host stopped"))?;
        Ok(())
    }

    /// Earlier incarnations on this machine (same `host_name`) that are not marked stopped.
    pub async fn host_local_incarnations(
        &self,
        host: &HostInfo,
    ) -> Result<Vec<(Uuid, u32)>, StoreError> {
        let rows = sqlx::query(
            "SELECT incarnation, pid FROM hosts
             WHERE host_name = $1 AND incarnation <> $2 AND stopped_at IS NULL",
        )
        .bind(&host.host_name)
        .bind(host.incarnation)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("listing earlier incarnations"))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get("incarnation"), r.get::<i32, _>("pid").max(0) as u32))
            .collect())
    }

    /// Frees the lanes of an incarnation known to be dead (its process is gone), so that they
    /// are taken over at once instead of after their lease expires. Returns how many.
    pub async fn host_reap(&self, dead: Uuid) -> Result<u64, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::from_sqlx("starting a reap"))?;
        sqlx::query("UPDATE hosts SET stopped_at = now() WHERE incarnation = $1")
            .bind(dead)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("marking a dead host"))?;
        let freed =
            sqlx::query("UPDATE lanes SET owner = NULL, lease_until = NULL WHERE owner = $1")
                .bind(dead)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx("freeing a dead host's lanes"))?;
        tx.commit()
            .await
            .map_err(StoreError::from_sqlx("committing a reap"))?;
        Ok(freed.rows_affected())
    }
}
