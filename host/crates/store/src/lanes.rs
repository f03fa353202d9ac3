//! Lanes, routes, leases and hosts.
//!
//! A lane is the jobs of one destination of one workspace. At most one host incarnation holds
//! a lane at a time: it acquires a lease (`owner`, a fresh `owner_epoch`, `lease_until`),
//! renews it with every commit, and releases it when the lane runs dry. Another host may take
//! a lane only when it is free, when its lease has expired, or when its owner is known dead
//! (an incarnation on this same machine whose process is gone). Every write of the owner is
//! fenced on (owner, epoch), so a host that lost its lane cannot record anything more in it.

use std::time::Duration;

use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::append::EVENTS_CHANNEL;
use super::{LaneId, Lease, OrderingScope, Store, StoreError};

/// A destination as the config describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneSpec {
    pub lane: LaneId,
    pub ordering: OrderingScope,
    /// The sources feeding it.
    pub sources: Vec<String>,
}

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

/// This process, as the hosts table knows it.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub incarnation: Uuid,
    /// Identifies the machine *and* pid namespace, so that a pid can be checked for liveness.
    pub host_name: String,
    pub pid: u32,
}

/// A wake-up from another host: its ingest wrote events, or it just started.
#[derive(Debug, Clone, PartialEq)]
pub struct Wake {
    pub from: Option<Uuid>,
    pub workspaces: Vec<String>,
    /// A host joined: shares of lanes change.
    pub joined: bool,
    /// An operator changed a lane (`sluice_retry_now`, `sluice_pause`, ...): workspace and
    /// destination.
    pub operator: Option<(String, String)>,
}

impl Store {
    /// Makes routes and lanes match the config. New lanes start at the current head: events
    /// accepted before a destination existed are not its jobs. Lanes that left the config are
    /// retired (their jobs no longer hold datasets back); a lane that comes back is revived.
    pub async fn lanes_sync(&self, specs: &[LaneSpec]) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::from_sqlx("starting the lane sync"))?;
        let (mut ws, mut dest, mut src) = (Vec::new(), Vec::new(), Vec::new());
        for s in specs {
            for source in &s.sources {
                ws.push(s.lane.workspace_id.as_str());
                dest.push(s.lane.destination_id.as_str());
                src.push(source.as_str());
            }
        }
        sqlx::query(
            "DELETE FROM routes r WHERE NOT EXISTS (
                 SELECT 1 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS c(w, d, s)
                 WHERE c.w = r.workspace_id AND c.d = r.destination_id AND c.s = r.source_id)",
        )
        .bind(&ws)
        .bind(&dest)
        .bind(&src)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx("removing old routes"))?;
        sqlx::query(
            "INSERT INTO routes (workspace_id, destination_id, source_id)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])
             ON CONFLICT DO NOTHING",
        )
        .bind(&ws)
        .bind(&dest)
        .bind(&src)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx("writing routes"))?;

        let lane_ws: Vec<&str> = specs.iter().map(|s| s.lane.workspace_id.as_str()).collect();
        let lane_dest: Vec<&str> = specs
            .iter()
            .map(|s| s.lane.destination_id.as_str())
            .collect();
        let ordering: Vec<OrderingScope> = specs.iter().map(|s| s.ordering).collect();
        sqlx::query(
            "INSERT INTO lanes (workspace_id, destination_id, ordering, start_id, cursor, claimed_to)
             SELECT c.w, c.d, c.o, h.last_id, h.last_id, h.last_id
             FROM UNNEST($1::text[], $2::text[], $3::ordering_scope[]) AS c(w, d, o), ingest_head h
             ON CONFLICT (workspace_id, destination_id) DO UPDATE
             SET ordering = excluded.ordering, retired_at = NULL, updated_at = now()
             WHERE lanes.ordering IS DISTINCT FROM excluded.ordering
                OR lanes.retired_at IS NOT NULL",
        )
        .bind(&lane_ws)
        .bind(&lane_dest)
        .bind(&ordering)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx("writing lanes"))?;
        sqlx::query(
            "UPDATE lanes l SET retired_at = now(), owner = NULL, lease_until = NULL
             WHERE l.retired_at IS NULL AND NOT EXISTS (
                 SELECT 1 FROM UNNEST($1::text[], $2::text[]) AS c(w, d)
                 WHERE c.w = l.workspace_id AND c.d = l.destination_id)",
        )
        .bind(&lane_ws)
        .bind(&lane_dest)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx("retiring lanes"))?;
        tx.commit()
            .await
            .map_err(StoreError::from_sqlx("committing the lane sync"))
    }

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
    /// Whether an operator paused the lane (`sluice_pause`).
    pub async fn lane_paused(&self, lane: &LaneId) -> Result<bool, StoreError> {
        let paused: Option<bool> = sqlx::query_scalar(
            "SELECT paused_at IS NOT NULL FROM lanes WHERE workspace_id = $1 AND destination_id = $2",
        )
        .bind(&lane.workspace_id)
        .bind(&lane.destination_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("reading whether a lane is paused"))?;
        Ok(paused.unwrap_or(false))
    }

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
             FROM ingest_head h
             WHERE l.retired_at IS NULL AND l.owner IS NULL AND l.cursor < h.last_id
               AND l.claimed_to <= l.cursor
               AND NOT EXISTS (
                   SELECT 1 FROM routes r
                   WHERE r.workspace_id = l.workspace_id AND r.destination_id = l.destination_id
                     AND EXISTS (SELECT 1 FROM events e
                                 WHERE e.workspace_id = r.workspace_id
                                   AND e.source_id = r.source_id
                                   AND e.id > l.cursor AND e.id <= h.last_id))",
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
                    l.owner IS NOT NULL OR l.next_due IS NOT NULL OR l.cursor < h.last_id AS busy
             FROM lanes l, ingest_head h
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

    /// Tells the other hosts that lanes of `workspace` want an owner (a lane handed over).
    pub async fn lane_announce(&self, me: Uuid, workspace: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(wake_payload(me, &[workspace]))
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx("announcing a free lane"))?;
        Ok(())
    }

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
                    (SELECT count(*) FROM lanes l, ingest_head h
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

    /// A LISTEN connection for other hosts' ingest wake-ups.
    pub async fn wake_listener(&self) -> Result<WakeListener, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool)
            .await
            .map_err(StoreError::from_sqlx("opening a LISTEN connection"))?;
        listener
            .listen(EVENTS_CHANNEL)
            .await
            .map_err(StoreError::from_sqlx("listening for new events"))?;
        Ok(WakeListener { listener })
    }
}

/// Wake-ups sent by ingest on any host (see `append`).
pub struct WakeListener {
    listener: sqlx::postgres::PgListener,
}

impl WakeListener {
    /// The next wake-up. After a lost connection it reconnects by itself and returns a wake
    /// for every workspace (`workspaces` empty), since notifications may have been missed.
    pub async fn next(&mut self) -> Result<Wake, StoreError> {
        match self.listener.try_recv().await {
            Ok(Some(n)) => Ok(parse_wake(n.payload())),
            Ok(None) => Ok(Wake {
                from: None,
                workspaces: Vec::new(),
                joined: false,
                operator: None,
            }),
            Err(e) => Err(StoreError::from_sqlx("waiting for notifications")(e)),
        }
    }
}

/// The payload of an ingest NOTIFY: `<incarnation> <workspace> <workspace>...`.
pub fn wake_payload(from: Uuid, workspaces: &[&str]) -> String {
    let mut s = from.to_string();
    for w in workspaces {
        s.push(' ');
        s.push_str(w);
    }
    s
}

fn parse_wake(payload: &str) -> Wake {
    if let Some(host) = payload.strip_prefix("join ") {
        return Wake {
            from: Uuid::parse_str(host.trim()).ok(),
            workspaces: Vec::new(),
            joined: true,
            operator: None,
        };
    }
    // Written by the operator functions (migrations/0004): `op <workspace> <destination>`.
    if let Some(lane) = payload.strip_prefix("op ") {
        let mut parts = lane.splitn(2, ' ');
        let workspace = parts.next().unwrap_or_default().to_string();
        let destination = parts.next().unwrap_or_default().to_string();
        return Wake {
            from: None,
            workspaces: Vec::new(),
            joined: false,
            operator: Some((workspace, destination)),
        };
    }
    let mut parts = payload.split(' ');
    let from = parts.next().and_then(|p| Uuid::parse_str(p).ok());
    Wake {
        from,
        workspaces: parts
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
        joined: false,
        operator: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_payload_round_trips() {
        let me = Uuid::new_v4();
        let w = parse_wake(&wake_payload(me, &["acme", "beta"]));
        assert_eq!(w.from, Some(me));
        assert_eq!(w.workspaces, vec!["acme", "beta"]);
        assert!(!w.joined);
        assert_eq!(parse_wake("garbage").from, None);
        let op = parse_wake("op acme hook");
        assert_eq!(op.operator, Some(("acme".into(), "hook".into())));
        let j = parse_wake(&format!("join {me}"));
        assert!(j.joined && j.from == Some(me));
    }
}
