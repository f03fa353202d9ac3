//! Leases: which host incarnation owns a lane.
//!
//! A lane is the jobs of one destination of one workspace. At most one host incarnation holds
//! a lane at a time: it acquires a lease (`owner`, a fresh `owner_epoch`, `lease_until`),
//! renews it with every commit, and releases it when the lane runs dry. Another host may take
//! a lane only when it is free, when its lease has expired, or when its owner is known dead
//! (an incarnation on this same machine whose process is gone, see `hosts`). Every write of the
//! owner is fenced on (owner, epoch), so a host that lost its lane cannot record anything more
//! in it (see `commit`).

use std::time::Duration;

use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{LaneId, Lease, OrderingScope, Store, StoreError};

/// A lane just acquired, with what its new owner needs to resume it.
#[derive(Debug, Clone)]
pub struct AcquiredLane {
    pub lease: Lease,
    pub ordering: OrderingScope,
    /// Every job at or below this is finished or has a row.
    pub cursor: i64,
    /// What the previous owner had read: jobs above the cursor and up to here may already have
    /// rows (they were parked), which a re-read must skip.
    pub claimed_to: i64,
    /// Keys with unfinished rows: new events of these keys are parked behind them.
    pub blocked_keys: Vec<String>,
}

/// A lane that needs an owner (found by maintenance).
#[derive(Debug, Clone, PartialEq)]
pub struct OrphanLane {
    pub lane: LaneId,
    /// Why: its owner's lease expired, a retry fell due, or events wait.
    pub reason: &'static str,
}

impl Store {
    /// Takes the lane if it is free, expired, or already ours. `None` if another live owner
    /// holds it (or it was retired).
    pub async fn lane_acquire(
        &self,
        lane: &LaneId,
        me: Uuid,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<Option<AcquiredLane>, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::from_sqlx("starting a lane acquisition"))?;
        let row = sqlx::query(
            "UPDATE lanes SET owner = $3, owner_epoch = owner_epoch + 1,
                 lease_until = $4 + make_interval(secs => $5), updated_at = $4
             WHERE workspace_id = $1 AND destination_id = $2 AND retired_at IS NULL
               AND (owner IS NULL OR owner = $3 OR lease_until < $4)
               AND paused_at IS NULL
             RETURNING owner_epoch, ordering, cursor, claimed_to",
        )
        .bind(&lane.workspace_id)
        .bind(&lane.destination_id)
        .bind(me)
        .bind(now)
        .bind(super::secs(ttl))
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx("acquiring a lane"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let blocked_keys: Vec<String> = sqlx::query_scalar(
            "SELECT order_key FROM blocked_keys WHERE workspace_id = $1 AND destination_id = $2",
        )
        .bind(&lane.workspace_id)
        .bind(&lane.destination_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx("loading blocked keys"))?;
        tx.commit()
            .await
            .map_err(StoreError::from_sqlx("committing a lane acquisition"))?;
        Ok(Some(AcquiredLane {
            lease: Lease {
                lane: lane.clone(),
                owner: me,
                epoch: row.get("owner_epoch"),
            },
            ordering: row.get("ordering"),
            cursor: row.get("cursor"),
            claimed_to: row.get("claimed_to"),
            blocked_keys,
        }))
    }

    /// Extends the lease; `false` if it was lost.
    pub async fn lane_renew(
        &self,
        lease: &Lease,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE lanes SET lease_until = $5 + make_interval(secs => $6)
             WHERE workspace_id = $1 AND destination_id = $2 AND owner = $3 AND owner_epoch = $4",
        )
        .bind(&lease.lane.workspace_id)
        .bind(&lease.lane.destination_id)
        .bind(lease.owner)
        .bind(lease.epoch)
        .bind(now)
        .bind(super::secs(ttl))
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("renewing a lease"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the lane up; `next_due` tells other hosts when a blocked key falls due.
    pub async fn lane_release(
        &self,
        lease: &Lease,
        next_due: Option<OffsetDateTime>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE lanes SET owner = NULL, lease_until = NULL, next_due = $5, updated_at = now()
             WHERE workspace_id = $1 AND destination_id = $2 AND owner = $3 AND owner_epoch = $4",
        )
        .bind(&lease.lane.workspace_id)
        .bind(&lease.lane.destination_id)
        .bind(lease.owner)
        .bind(lease.epoch)
        .bind(next_due)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("releasing a lane"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Lanes that need an owner: expired leases (their owner died or hung), retries that fell
    /// due on a free lane, and free lanes with events beyond their cursor. Free lanes with
    /// nothing to do are moved up to the head on the way, so that idle destinations never hold
    /// a dataset back. Returns the lanes, and whether any lane holds work at all.
    pub async fn lanes_orphaned(
        &self,
        now: OffsetDateTime,
    ) -> Result<(Vec<OrphanLane>, bool), StoreError> {
        // Free lanes behind the head whose sources wrote nothing since: catch them up.
        sqlx::query(
            "UPDATE lanes l SET cursor = h.last_id, claimed_to = greatest(l.claimed_to, h.last_id)
             FROM workspace_heads h
             WHERE h.workspace_id = l.workspace_id
               AND l.retired_at IS NULL AND l.owner IS NULL AND l.cursor < h.last_id
               AND l.claimed_to <= l.cursor
               AND NOT EXISTS (
                   SELECT 1 FROM routes r
                   WHERE r.workspace_id = l.workspace_id AND r.destination_id = l.destination_id
                     AND EXISTS (SELECT 1 FROM events e
                                 WHERE e.workspace_id = r.workspace_id
                                   AND e.source_id = r.source_id
                                   AND e.id > l.cursor AND e.id <= h.last_id
                                   AND e.id > r.from_id
                                   AND (r.until_id IS NULL OR e.id <= r.until_id)))",
        )
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("catching idle lanes up"))?;

        let rows = sqlx::query(
            "SELECT l.workspace_id, l.destination_id,
                    CASE WHEN l.owner IS NOT NULL AND l.lease_until < $1 THEN 'lease expired'
                         WHEN l.owner IS NULL AND l.next_due <= $1 THEN 'retry due'
                         WHEN l.owner IS NULL AND l.cursor < h.last_id THEN 'events waiting'
                    END AS reason,
                    l.owner IS NOT NULL OR l.next_due IS NOT NULL
                        OR l.cursor < coalesce(h.last_id, 0) AS busy
             FROM lanes l
             LEFT JOIN workspace_heads h ON h.workspace_id = l.workspace_id
             WHERE l.retired_at IS NULL AND l.paused_at IS NULL",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("finding lanes without an owner"))?;
        let mut any_work = false;
        let mut orphans = Vec::new();
        for r in rows {
            any_work |= r.get::<bool, _>("busy");
            let reason: Option<String> = r.get("reason");
            let reason = match reason.as_deref() {
                Some("lease expired") => "lease expired",
                Some("retry due") => "retry due",
                Some("events waiting") => "events waiting",
                _ => continue,
            };
            orphans.push(OrphanLane {
                lane: LaneId {
                    workspace_id: r.get("workspace_id"),
                    destination_id: r.get("destination_id"),
                },
                reason,
            });
        }
        Ok((orphans, any_work))
    }
}
