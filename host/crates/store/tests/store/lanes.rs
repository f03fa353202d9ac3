//! `store::lanes`: leases, fencing, lane sync, orphans (log reads: `read.rs`).

use libtest_mimic::Trial;
use sluice_store::{HostInfo, LaneCommit, OrderingScope, StoreError};
use uuid::Uuid;

use crate::fixtures::*;
use crate::harness::{Db, trial};

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "lease_a_held_lane_is_taken_only_after_its_lease_expires_and_the_old_owner_is_fenced",
            lease_and_fence,
        ),
        trial(
            "lanes_sync_starts_new_lanes_at_the_head_and_retires_removed_ones",
            sync,
        ),
        trial(
            "orphans_idle_lanes_are_caught_up_and_expired_or_waiting_ones_reported",
            orphans,
        ),
        trial("reap_a_dead_incarnation_frees_its_lanes_at_once", reap),
    ]
}

fn progress(lease: &sluice_store::Lease, at: time::OffsetDateTime, cursor: i64) -> LaneCommit {
    LaneCommit {
        lease: lease.clone(),
        now: at,
        lease_ttl: TTL,
        cursor,
        claimed_to: cursor,
        new_rows: vec![],
        row_updates: vec![],
        block_keys: vec![],
        ensure_keys: vec![],
        check_keys: vec![],
    }
}

async fn lease_and_fence(db: Db) {
    db.store
        .lanes_sync(&[spec("hook", &["web"], OrderingScope::User)])
        .await
        .unwrap();
    append_users(&db.store, "web", &[("u", "1"), ("u", "2")]).await;
    let (h1, h2) = (Uuid::new_v4(), Uuid::new_v4());
    let first = db
        .store
        .lane_acquire(&lane("hook"), h1, t0(), TTL)
        .await
        .unwrap()
        .unwrap();
    assert!(
        db.store
            .lane_acquire(&lane("hook"), h2, t0() + secs(29), TTL)
            .await
            .unwrap()
            .is_none(),
        "a live lease is never taken"
    );
    // The owner renews by committing; the lease now runs from t0+20.
    db.store
        .lane_commit(&progress(&first.lease, t0() + secs(20), 1))
        .await
        .unwrap();
    assert!(
        db.store
            .lane_acquire(&lane("hook"), h2, t0() + secs(40), TTL)
            .await
            .unwrap()
            .is_none()
    );
    let second = db
        .store
        .lane_acquire(&lane("hook"), h2, t0() + secs(51), TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.lease.epoch, first.lease.epoch + 1);
    assert_eq!(
        second.cursor, 1,
        "the new owner resumes where the old one got to"
    );
    // The old owner can no longer write anything.
    let err = db
        .store
        .lane_commit(&progress(&first.lease, t0() + secs(52), 2))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost(_)), "{err}");
    assert!(
        !db.store
            .lane_renew(&first.lease, t0() + secs(52), TTL)
            .await
            .unwrap()
    );
    let cursor: i64 = sqlx::query_scalar("SELECT cursor FROM lanes")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(cursor, 1);
    // Releasing frees it for anyone at once.
    assert!(db.store.lane_release(&second.lease, None).await.unwrap());
    assert!(
        db.store
            .lane_acquire(&lane("hook"), h1, t0() + secs(53), TTL)
            .await
            .unwrap()
            .is_some()
    );
}

async fn sync(db: Db) {
    append_users(&db.store, "web", &[("u", "1"), ("u", "2")]).await;
    db.store
        .lanes_sync(&[
            spec("hook", &["web"], OrderingScope::User),
            spec("crm", &["web", "app"], OrderingScope::SourceUser),
        ])
        .await
        .unwrap();
    let lanes: Vec<(String, i64, i64, String)> = sqlx::query_as(
        "SELECT destination_id, start_id, cursor, ordering::text FROM lanes ORDER BY destination_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        lanes,
        vec![
            ("crm".into(), 2, 2, "source_user".into()),
            ("hook".into(), 2, 2, "user".into())
        ],
        "events from before a lane existed are not its jobs"
    );
    let routes: i64 = sqlx::query_scalar("SELECT count(*) FROM routes")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(routes, 3);
    db.store
        .lanes_sync(&[spec("hook", &["web"], OrderingScope::None)])
        .await
        .unwrap();
    let rows: Vec<(String, bool, String)> = sqlx::query_as(
        "SELECT destination_id, retired_at IS NOT NULL, ordering::text FROM lanes ORDER BY destination_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("crm".into(), true, "source_user".into()),
            ("hook".into(), false, "none".into())
        ]
    );
    assert!(
        db.store
            .lane_acquire(&lane("crm"), Uuid::new_v4(), t0(), TTL)
            .await
            .unwrap()
            .is_none(),
        "a retired lane is not delivered"
    );
}

async fn orphans(db: Db) {
    db.store
        .lanes_sync(&[
            spec("idle", &["quiet"], OrderingScope::User),
            spec("busy", &["web"], OrderingScope::User),
            spec("held", &["web"], OrderingScope::User),
        ])
        .await
        .unwrap();
    append_users(&db.store, "web", &[("u", "1")]).await;
    let held = acquire(&db.store, "held", t0()).await;
    let (orphans, any_work) = db.store.lanes_orphaned(t0() + secs(1)).await.unwrap();
    let names: Vec<(&str, &str)> = orphans
        .iter()
        .map(|o| (o.lane.destination_id.as_str(), o.reason))
        .collect();
    assert_eq!(names, vec![("busy", "events waiting")]);
    assert!(any_work);
    let idle: i64 = sqlx::query_scalar("SELECT cursor FROM lanes WHERE destination_id = 'idle'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        idle, 1,
        "a lane whose sources wrote nothing follows the head"
    );
    let (orphans, _) = db.store.lanes_orphaned(t0() + secs(31)).await.unwrap();
    let mut names: Vec<(&str, &str)> = orphans
        .iter()
        .map(|o| (o.lane.destination_id.as_str(), o.reason))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![("busy", "events waiting"), ("held", "lease expired")]
    );
    drop(held);
}

async fn reap(db: Db) {
    db.store
        .lanes_sync(&[spec("hook", &["web"], OrderingScope::User)])
        .await
        .unwrap();
    let dead = HostInfo {
        incarnation: Uuid::new_v4(),
        host_name: "box".into(),
        pid: 4_000_000,
    };
    db.store.host_register(&dead).await.unwrap();
    db.store
        .lane_acquire(&lane("hook"), dead.incarnation, t0(), TTL)
        .await
        .unwrap()
        .unwrap();
    let me = HostInfo {
        incarnation: Uuid::new_v4(),
        host_name: "box".into(),
        pid: 1,
    };
    db.store.host_register(&me).await.unwrap();
    let earlier = db.store.host_local_incarnations(&me).await.unwrap();
    assert_eq!(earlier, vec![(dead.incarnation, dead.pid)]);
    assert_eq!(db.store.host_reap(dead.incarnation).await.unwrap(), 1);
    assert!(
        db.store
            .lane_acquire(&lane("hook"), me.incarnation, t0() + secs(1), TTL)
            .await
            .unwrap()
            .is_some(),
        "taken over without waiting for the lease"
    );
    assert!(
        db.store
            .host_local_incarnations(&me)
            .await
            .unwrap()
            .is_empty()
    );
}
