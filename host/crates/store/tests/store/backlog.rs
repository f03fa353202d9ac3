//! `lane_backlog` (migration 0006): depth and oldest age per lane from index entries, as read
//! by `/metrics` and the admin API. Its numbers must match the jobs' derived states (the slow
//! `destination_depth`), without reading the backlog.

use libtest_mimic::Trial;
use sluice_store::lane_stats::LaneCounters;
use sluice_store::{JobState, LaneCommit, OrderingScope};
use uuid::Uuid;

use crate::fixtures::*;
use crate::harness::{Db, trial};

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "backlog_counts_failed_parked_and_queued_jobs_and_finds_the_oldest",
            counts,
        ),
        trial(
            "backlog_counts_queued_jobs_up_to_ten_thousand_and_says_so",
            capped,
        ),
        trial(
            "backlog_lane_status_shows_the_breaker_and_limit_last_reported",
            circuit,
        ),
    ]
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Backlog {
    failed: i64,
    parked: i64,
    queued: i64,
    executing: i64,
    queued_capped: bool,
    oldest_event_id: Option<i64>,
    oldest_received_at: Option<time::OffsetDateTime>,
}

async fn backlog(db: &Db) -> Backlog {
    sqlx::query_as(
        "SELECT failed, parked, queued, executing, queued_capped, oldest_event_id,
                oldest_received_at
         FROM lane_backlog WHERE workspace_id = $1 AND destination_id = 'hook'",
    )
    .bind(WS)
    .fetch_one(&db.pool)
    .await
    .expect("read lane_backlog")
}

async fn counts(db: Db) {
    // Events 1..=6 at t0, then 7 and 8 ten seconds later; a foreign source's event (9) is not
    // the lane's.
    let lease = hook_with_events(
        &db.store,
        &[
            ("a", "1"),
            ("a", "2"),
            ("b", "3"),
            ("c", "4"),
            ("d", "5"),
            ("e", "6"),
        ],
    )
    .await;
    append(
        &db.store,
        "web",
        t0() + secs(10),
        vec![event("f", "7", 10), event("g", "8", 10)],
    )
    .await;
    append(&db.store, "other", t0(), vec![event("h", "9", 10)]).await;

    // Nothing done yet: all eight are queued, none read; the oldest is the first event.
    let empty = backlog(&db).await;
    assert_eq!(
        (empty.failed, empty.parked, empty.queued, empty.executing),
        (0, 0, 8, 0)
    );
    assert_eq!(empty.oldest_event_id, Some(1));

    // 1 failed with 2 parked behind it, 3 and 4 delivered, 5 failed ahead of the cursor,
    // 6 in flight, 7 and 8 not yet read.
    db.store
        .lane_commit(&LaneCommit {
            lease: lease.clone(),
            now: t0(),
            lease_ttl: TTL,
            cursor: 4,
            claimed_to: 6,
            new_rows: vec![
                job_row(1, "web", "a", JobState::Failed, 1),
                job_row(2, "web", "a", JobState::Pending, 0),
                job_row(5, "web", "d", JobState::Failed, 1),
            ],
            row_updates: vec![],
            block_keys: vec![
                ("a".into(), t0() + secs(3600)),
                ("d".into(), t0() + secs(3600)),
            ],
            ensure_keys: vec![],
            check_keys: vec![],
        })
        .await
        .expect("commit");
    let b = backlog(&db).await;
    assert_eq!(
        b,
        Backlog {
            failed: 2,
            parked: 1,
            // 6, 7 and 8: 5 has a row, so it is counted once, as failed.
            queued: 3,
            executing: 1,
            queued_capped: false,
            oldest_event_id: Some(1),
            oldest_received_at: Some(t0()),
        }
    );

    // The slow, exact view agrees on every count.
    let (pending, executing, failed): (i64, i64, i64) = sqlx::query_as(
        "SELECT pending, executing, failed FROM destination_depth
         WHERE workspace_id = $1 AND destination_id = 'hook'",
    )
    .bind(WS)
    .fetch_one(&db.pool)
    .await
    .expect("read destination_depth");
    assert_eq!(
        (pending, executing, failed),
        (b.parked + b.queued - b.executing, b.executing, b.failed)
    );

    // Once the rows are finished (aborted by an operator), the oldest unfinished job is the
    // first one past the cursor that has no row: 6.
    let n = db
        .store
        .operator_jobs(
            &lease.lane,
            sluice_store::admin::OperatorAction::Abort,
            None,
            "ops",
            &serde_json::Value::Null,
        )
        .await
        .expect("abort");
    assert_eq!(n, 3);
    let b = backlog(&db).await;
    assert_eq!((b.failed, b.parked, b.queued), (0, 0, 3));
    assert_eq!(b.oldest_event_id, Some(6));
}

async fn capped(db: Db) {
    db.store
        .lanes_sync(&[spec("hook", &["web"], OrderingScope::User)])
        .await
        .expect("lanes sync");
    let events = (0..10_050)
        .map(|i| event(&format!("u{}", i % 100), &format!("m{i}"), 0))
        .collect();
    append(&db.store, "web", t0(), events).await;
    let b = backlog(&db).await;
    assert_eq!((b.queued, b.queued_capped), (10_000, true));
    assert_eq!(b.oldest_event_id, Some(1));
}

async fn circuit(db: Db) {
    db.store
        .lanes_sync(&[spec("hook", &["web"], OrderingScope::User)])
        .await
        .expect("lanes sync");
    let read = || async {
        let row: (Option<bool>, Option<i32>) = sqlx::query_as(
            "SELECT breaker_open, concurrency_limit FROM lane_status
             WHERE workspace_id = $1 AND destination_id = 'hook'",
        )
        .bind(WS)
        .fetch_one(&db.pool)
        .await
        .expect("read lane_status");
        row
    };
    assert_eq!(read().await, (None, None), "nothing reported yet");
    let now = time::OffsetDateTime::now_utc();
    let report = |minutes_ago: i64, open: bool, limit: i32| {
        let store = db.store.clone();
        async move {
            let counters = LaneCounters {
                failed: 3,
                concurrency_limit: Some(limit),
                breaker_open: open,
                ..Default::default()
            };
            store
                .lane_stats_add(
                    Uuid::new_v4(),
                    now - time::Duration::minutes(minutes_ago),
                    &[(lane("hook"), counters)],
                )
                .await
                .expect("add stats");
        }
    };
    report(5, false, 16).await;
    report(1, true, 2).await;
    assert_eq!(
        read().await,
        (Some(true), Some(2)),
        "the latest report wins"
    );
}
