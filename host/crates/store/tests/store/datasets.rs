//! `store::datasets`: rotation, dropping, compaction, and each step interrupted.

use std::time::Duration;

use libtest_mimic::Trial;
use sluice_store::datasets::{DatasetChange, DatasetPolicy, StopAfter};
use sluice_store::{
    AttemptOutcome, FetchLimits, JobState, LaneCommit, Lease, NewJobRow, OrderingScope, ReadLimits,
};

use crate::fixtures::*;
use crate::harness::{Db, trial};

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "datasets_a_finished_one_is_dropped_and_one_with_few_live_jobs_is_compacted",
            drop_and_compact,
        ),
        trial(
            "datasets_are_kept_while_a_lane_is_behind_them",
            kept_while_behind,
        ),
        trial(
            "datasets_are_kept_for_retain_after_they_close_delivered_events_and_all",
            kept_for_retain,
        ),
        trial(
            "datasets_an_interrupted_rotation_or_retirement_leaves_the_store_as_it_was",
            interrupted,
        ),
    ]
}

/// Rotates after every event; compacts up to 10 live jobs; keeps aborted jobs an hour.
fn policy() -> DatasetPolicy {
    DatasetPolicy {
        max_events: 1,
        max_bytes: i64::MAX,
        max_age: Duration::from_secs(3600),
        compact_below: 10,
        aborted_retention: Duration::from_secs(3600),
        retain: Duration::ZERO,
    }
}

async fn datasets(db: &Db) -> Vec<i32> {
    sqlx::query_scalar("SELECT dataset FROM datasets ORDER BY dataset")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

async fn table_exists(db: &Db, name: &str) -> bool {
    sqlx::query_scalar::<_, Option<String>>("SELECT to_regclass($1)::text")
        .bind(name)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .is_some()
}

fn job_row(event_id: i64, dataset: i32, key: &str, state: JobState) -> NewJobRow {
    NewJobRow {
        dataset,
        event_id,
        source_id: "web".into(),
        order_key: key.into(),
        state,
        attempt: 1,
        error_code: Some("http_500".into()),
        error_text: Some("boom".into()),
        first_attempt_at: Some(t0()),
        last_attempt_at: Some(t0()),
        next_attempt_at: t0(),
    }
}

fn commit(lease: &Lease, cursor: i64, rows: Vec<NewJobRow>, block: &[&str]) -> LaneCommit {
    LaneCommit {
        lease: lease.clone(),
        now: t0(),
        lease_ttl: TTL,
        cursor,
        claimed_to: cursor,
        new_rows: rows,
        row_updates: vec![],
        block_keys: block.iter().map(|k| (k.to_string(), t0())).collect(),
        ensure_keys: vec![],
        check_keys: vec![],
    }
}

/// Three datasets: events 1-2 in dataset 1, 3-4 in dataset 2, and dataset 3 open.
async fn three_datasets(db: &Db) -> Lease {
    db.store
        .lanes_sync(&[spec("hook", &["web"], OrderingScope::User)])
        .await
        .unwrap();
    append_users(&db.store, "web", &[("a", "1"), ("b", "2")]).await;
    let r = db
        .store
        .dataset_rotate(&policy(), t0(), None)
        .await
        .unwrap();
    assert_eq!(
        r,
        Some(DatasetChange::Rotated {
            closed: 1,
            opened: 2
        })
    );
    append_users(&db.store, "web", &[("c", "3"), ("d", "4")]).await;
    db.store
        .dataset_rotate(&policy(), t0(), None)
        .await
        .unwrap();
    assert_eq!(datasets(db).await, vec![1, 2, 3]);
    acquire(&db.store, "hook", t0()).await.lease
}

async fn drop_and_compact(db: Db) {
    let lease = three_datasets(&db).await;
    // Event 2 failed and waits for a retry; event 3 was aborted (kept an hour).
    db.store
        .lane_commit(&commit(
            &lease,
            4,
            vec![
                job_row(2, 1, "b", JobState::Failed),
                job_row(3, 2, "c", JobState::Aborted),
            ],
            &["b"],
        ))
        .await
        .unwrap();
    let changes = db
        .store
        .dataset_retire(&policy(), t0(), None)
        .await
        .unwrap();
    assert_eq!(
        changes,
        vec![
            DatasetChange::Compacted {
                dataset: 1,
                into: 3,
                jobs: 1
            },
            DatasetChange::Compacted {
                dataset: 2,
                into: 3,
                jobs: 1
            },
        ]
    );
    assert_eq!(datasets(&db).await, vec![3]);
    assert!(!table_exists(&db, "events_ds_1").await && !table_exists(&db, "job_state_ds_2").await);
    assert!(!table_exists(&db, "job_attempts_ds_1").await);
    // Their attempt history moved with them.
    let attempts: Vec<(i64, i32, AttemptOutcome)> =
        sqlx::query_as("SELECT event_id, dataset, outcome FROM job_attempts ORDER BY event_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        attempts,
        vec![(2, 3, AttemptOutcome::Retry), (3, 3, AttemptOutcome::Abort)]
    );
    // The moved jobs keep their ids, and the failed one comes back with its event.
    let fetch = db
        .store
        .blocked_fetch(
            &lease.lane,
            t0(),
            &[],
            FetchLimits {
                max_keys: 10,
                max_jobs_per_key: 10,
                max_bytes: 1 << 20,
            },
        )
        .await
        .unwrap();
    assert_eq!(fetch.jobs.len(), 1);
    assert_eq!(
        (
            fetch.jobs[0].event_id,
            fetch.jobs[0].dataset,
            fetch.jobs[0].message_id.as_str()
        ),
        (2, 3, "2")
    );
    let aborted: Vec<i64> = sqlx::query_scalar("SELECT event_id FROM aborted_jobs")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(aborted, vec![3], "aborted jobs stay queryable");
    // Moved events are never read again as new.
    let read = db
        .store
        .log_read(
            &lease.lane,
            &links(&["web"]),
            4,
            4,
            ReadLimits {
                max_events: 10,
                max_bytes: 1 << 20,
            },
        )
        .await
        .unwrap();
    assert!(read.events.is_empty());

    // Once the aborted job is older than the retention and the failed one is delivered, the
    // open dataset can go too, after a rotation.
    sqlx::query("UPDATE job_state SET state = 'delivered' WHERE event_id = 2")
        .execute(&db.pool)
        .await
        .unwrap();
    append_users(&db.store, "web", &[("e", "5")]).await;
    db.store
        .dataset_rotate(&policy(), t0(), None)
        .await
        .unwrap();
    db.store
        .lane_commit(&commit(&lease, 5, vec![], &[]))
        .await
        .unwrap();
    let later = t0() + time::Duration::hours(2);
    let changes = db
        .store
        .dataset_retire(&policy(), later, None)
        .await
        .unwrap();
    assert_eq!(changes, vec![DatasetChange::Dropped { dataset: 3 }]);
    assert_eq!(datasets(&db).await, vec![4]);
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM job_attempts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 0, "dropped with their dataset");
}

async fn kept_while_behind(db: Db) {
    let lease = three_datasets(&db).await;
    // The lane has finished dataset 1 only.
    db.store
        .lane_commit(&commit(&lease, 2, vec![], &[]))
        .await
        .unwrap();
    let changes = db
        .store
        .dataset_retire(&policy(), t0(), None)
        .await
        .unwrap();
    assert_eq!(changes, vec![DatasetChange::Dropped { dataset: 1 }]);
    assert_eq!(datasets(&db).await, vec![2, 3]);
    // A dataset with more live jobs than the compaction bound stays.
    let rows: Vec<NewJobRow> = (3..=4)
        .map(|id| job_row(id, 2, "k", JobState::Pending))
        .collect();
    db.store
        .lane_commit(&commit(&lease, 4, rows, &["k"]))
        .await
        .unwrap();
    let strict = DatasetPolicy {
        compact_below: 1,
        ..policy()
    };
    assert!(
        db.store
            .dataset_retire(&strict, t0(), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(datasets(&db).await, vec![2, 3]);
}

async fn interrupted(db: Db) {
    db.store
        .lanes_sync(&[spec("hook", &["web"], OrderingScope::User)])
        .await
        .unwrap();
    append_users(&db.store, "web", &[("a", "1"), ("b", "2")]).await;
    for stop in [StopAfter::RotationPartitions, StopAfter::RotationClose] {
        assert!(
            db.store
                .dataset_rotate(&policy(), t0(), Some(stop))
                .await
                .is_err()
        );
        assert_eq!(datasets(&db).await, vec![1], "after {stop:?}");
        assert!(!table_exists(&db, "events_ds_2").await, "after {stop:?}");
        let open: Option<i64> =
            sqlx::query_scalar("SELECT last_id FROM datasets WHERE dataset = 1")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(open, None, "still open after {stop:?}");
    }
    db.store
        .dataset_rotate(&policy(), t0(), None)
        .await
        .unwrap();
    append_users(&db.store, "web", &[("c", "3")]).await;
    assert_eq!(datasets(&db).await, vec![1, 2]);

    let lease = acquire(&db.store, "hook", t0()).await.lease;
    db.store
        .lane_commit(&commit(
            &lease,
            3,
            vec![job_row(1, 1, "a", JobState::Failed)],
            &["a"],
        ))
        .await
        .unwrap();
    for stop in [
        StopAfter::CompactionEvents,
        StopAfter::CompactionJobs,
        StopAfter::Drop,
    ] {
        assert!(
            db.store
                .dataset_retire(&policy(), t0(), Some(stop))
                .await
                .is_err()
        );
        assert_eq!(datasets(&db).await, vec![1, 2], "after {stop:?}");
        let events: Vec<(i32, i64)> = sqlx::query_as("SELECT dataset, id FROM events ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
        assert_eq!(events, vec![(1, 1), (1, 2), (2, 3)], "after {stop:?}");
        let rows: Vec<(i32, i64)> = sqlx::query_as("SELECT dataset, event_id FROM job_state")
            .fetch_all(&db.pool)
            .await
            .unwrap();
        assert_eq!(rows, vec![(1, 1)], "after {stop:?}");
    }
    let changes = db
        .store
        .dataset_retire(&policy(), t0(), None)
        .await
        .unwrap();
    assert_eq!(
        changes,
        vec![DatasetChange::Compacted {
            dataset: 1,
            into: 2,
            jobs: 1
        }]
    );
    let events: Vec<(i32, i64)> = sqlx::query_as("SELECT dataset, id FROM events ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(events, vec![(2, 1), (2, 3)]);
}

/// `retain`: a finished dataset stays, with its delivered events, until it closed `retain`
/// ago; then it goes like any other.
async fn kept_for_retain(db: Db) {
    let lease = three_datasets(&db).await;
    // The lane has finished datasets 1 and 2: without retention both would go.
    db.store
        .lane_commit(&commit(&lease, 4, vec![], &[]))
        .await
        .unwrap();
    let week = DatasetPolicy {
        retain: Duration::from_secs(7 * 24 * 3600),
        ..policy()
    };
    let day = time::Duration::days(1);
    for now in [
        t0(),
        t0() + day,
        t0() + 7 * day - time::Duration::seconds(1),
    ] {
        let changes = db.store.dataset_retire(&week, now, None).await.unwrap();
        assert!(changes.is_empty(), "retained at {now}: {changes:?}");
    }
    assert_eq!(datasets(&db).await, vec![1, 2, 3]);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        events, 4,
        "the delivered events are still there to backfill from"
    );
    let changes = db
        .store
        .dataset_retire(&week, t0() + 7 * day, None)
        .await
        .unwrap();
    assert_eq!(
        changes,
        vec![
            DatasetChange::Dropped { dataset: 1 },
            DatasetChange::Dropped { dataset: 2 }
        ]
    );
    assert_eq!(datasets(&db).await, vec![3]);
}
