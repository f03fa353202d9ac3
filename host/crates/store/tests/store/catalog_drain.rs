//! `store::catalog::drain`: a destination deleted with `drain` takes no new events, delivers
//! what it had, cannot be changed meanwhile, and is deleted once its lane is past every link's
//! end with no unfinished job.

use libtest_mimic::Trial;
use sluice_store::CatalogError;

use crate::catalog::{audit, commit_to, dest, failed_and_parked, lane_row, source_write};
use crate::fixtures::*;
use crate::harness::{Db, trial};

pub fn tests() -> Vec<Trial> {
    vec![trial(
        "catalog_drain_ends_the_links_refuses_changes_and_deletes_once_delivered",
        drain,
    )]
}

async fn routes(db: &Db, destination: &str) -> Vec<(String, i64, Option<i64>)> {
    sqlx::query_as(
        "SELECT source_id, from_id, until_id FROM routes WHERE destination_id = $1
         ORDER BY source_id",
    )
    .bind(destination)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

async fn drain(db: Db) {
    // `hook` read both events of `u`: the first failed and parked the second. `late` read
    // nothing yet.
    failed_and_parked(&db, &["hook", "late"]).await;

    for id in ["hook", "late"] {
        let v = db.store.destination_drain(WS, id, &audit()).await.unwrap();
        assert!(v.is_some(), "{id} starts draining");
    }
    assert_eq!(
        db.store
            .destination_drain(WS, "hook", &audit())
            .await
            .unwrap(),
        None,
        "a second drain changes nothing"
    );
    // The links end at the head of the drain: event 3 goes to neither.
    assert_eq!(routes(&db, "hook").await, vec![("web".into(), 0, Some(2))]);
    append_users(&db.store, "web", &[("u", "3")]).await;
    let catalog = db.store.catalog_load().await.unwrap();
    assert!(catalog.draining_since("hook").is_some());
    assert!(catalog.destinations_of("web").is_empty());

    // Nothing may change it while it drains.
    let update = db
        .store
        .destination_update(&dest("hook", "https://y.example"), &audit())
        .await;
    assert!(matches!(update, Err(CatalogError::Conflict(ref m)) if m.contains("draining")));
    let relink = db
        .store
        .source_update(&source_write("web", &["hook"]), &audit())
        .await;
    assert!(matches!(relink, Err(CatalogError::Conflict(ref m)) if m.contains("draining")));

    // Not drained: `hook` has open jobs, `late` has not read up to its links' end.
    let pass = db.store.catalog_finish_drains().await.unwrap();
    assert_eq!((pass.finished, pass.draining), (None, 2));
    sqlx::query("UPDATE job_state SET state = 'delivered' WHERE destination_id = 'hook'")
        .execute(&db.pool)
        .await
        .unwrap();
    let pass = db.store.catalog_finish_drains().await.unwrap();
    assert_eq!(pass.draining, 1, "late still drains");
    let (version, done) = pass.finished.expect("hook is drained");
    assert_eq!(done, vec![(WS.to_string(), "hook".to_string())]);
    let (_, _, retired, _) = lane_row(&db.store, "hook").await;
    assert!(retired, "the drained destination's lane retires");
    let delivered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM job_state WHERE destination_id = 'hook' AND state = 'delivered'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(delivered, 2, "nothing was aborted");
    let audited: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT version, actor, action FROM catalog_audit WHERE item_id = 'hook'
         ORDER BY version DESC LIMIT 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        audited[0],
        (version, "sluice (drained)".into(), "delete".into())
    );
    assert_eq!(audited[1].2, "drain");

    // `late` once its lane has read past its links' end (event 2).
    let pass = db.store.catalog_finish_drains().await.unwrap();
    assert_eq!((pass.finished, pass.draining), (None, 1));
    let lease = acquire(&db.store, "late", t0()).await.lease;
    db.store
        .lane_commit(&commit_to(lease, 3, vec![]))
        .await
        .unwrap();
    let (_, done) = db
        .store
        .catalog_finish_drains()
        .await
        .unwrap()
        .finished
        .expect("late is drained");
    assert_eq!(done, vec![(WS.to_string(), "late".to_string())]);
    assert!(
        db.store
            .catalog_load()
            .await
            .unwrap()
            .destinations
            .is_empty()
    );
}
