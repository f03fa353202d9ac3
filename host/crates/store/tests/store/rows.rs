//! `store::commit` and `store::blocked`: job rows, blocked keys, due fetches.

use libtest_mimic::Trial;
use sluice_store::{FetchLimits, JobState, LaneCommit, Lease, NewJobRow, RowUpdate};
use time::OffsetDateTime;

use crate::fixtures::*;
use crate::harness::{Db, trial};

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "rows_of_a_blocked_key_come_back_in_order_only_once_due_and_not_while_excluded",
            fetch_when_due,
        ),
        trial(
            "rows_a_key_is_unblocked_only_when_no_unfinished_row_is_left",
            unblock,
        ),
        trial(
            "rows_a_park_never_moves_an_existing_due_time",
            ensure_keeps_due_time,
        ),
        trial(
            "rows_an_outcome_never_overwrites_an_operator_abort",
            operator_abort_wins,
        ),
    ]
}

fn commit(lease: &Lease, at: OffsetDateTime, cursor: i64) -> LaneCommit {
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

fn row(event_id: i64, key: &str, state: JobState, attempt: i32, next: OffsetDateTime) -> NewJobRow {
    NewJobRow {
        dataset: 1,
        event_id,
        source_id: "web".into(),
        order_key: key.into(),
        state,
        attempt,
        error_code: (state == JobState::Failed).then(|| "http_500".into()),
        error_text: (state == JobState::Failed).then(|| "boom".into()),
        first_attempt_at: (attempt > 0).then_some(t0()),
        last_attempt_at: (attempt > 0).then_some(t0()),
        next_attempt_at: next,
    }
}

const LIMITS: FetchLimits = FetchLimits {
    max_keys: 10,
    max_jobs_per_key: 10,
    max_bytes: 1 << 20,
};

async fn setup(db: &Db) -> Lease {
    hook_with_events(
        &db.store,
        &[("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("a", "5")],
    )
    .await
}

async fn fetch_when_due(db: Db) {
    let lease = setup(&db).await;
    let mut c = commit(&lease, t0(), 5);
    c.new_rows = vec![
        row(1, "a", JobState::Failed, 1, t0() + secs(10)),
        row(3, "a", JobState::Pending, 0, t0()),
        row(5, "a", JobState::Pending, 0, t0()),
        row(4, "c", JobState::Failed, 2, t0() + secs(20)),
    ];
    c.block_keys = vec![("a".into(), t0() + secs(10)), ("c".into(), t0() + secs(20))];
    db.store.lane_commit(&c).await.unwrap();

    let early = db
        .store
        .blocked_fetch(&lease.lane, t0() + secs(5), &[], LIMITS)
        .await
        .unwrap();
    assert!(early.jobs.is_empty());
    assert_eq!(early.next_due, Some(t0() + secs(10)));

    let due = db
        .store
        .blocked_fetch(&lease.lane, t0() + secs(15), &[], LIMITS)
        .await
        .unwrap();
    let got: Vec<(i64, JobState, i32)> = due
        .jobs
        .iter()
        .map(|j| (j.event_id, j.state, j.attempt))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, JobState::Failed, 1),
            (3, JobState::Pending, 0),
            (5, JobState::Pending, 0)
        ]
    );
    assert_eq!(due.jobs[0].message_id, "1");
    assert_eq!(
        due.next_due,
        Some(t0() + secs(20)),
        "the next key not fetched"
    );

    let excluded = db
        .store
        .blocked_fetch(&lease.lane, t0() + secs(25), &["a".into()], LIMITS)
        .await
        .unwrap();
    assert_eq!(
        excluded.jobs.iter().map(|j| j.event_id).collect::<Vec<_>>(),
        vec![4]
    );

    let one_each = FetchLimits {
        max_jobs_per_key: 1,
        ..LIMITS
    };
    let firsts = db
        .store
        .blocked_fetch(&lease.lane, t0() + secs(25), &[], one_each)
        .await
        .unwrap();
    assert_eq!(
        firsts.jobs.iter().map(|j| j.event_id).collect::<Vec<_>>(),
        vec![1, 4]
    );

    // The blocked_jobs view shows what waits behind what.
    let blocked: Vec<(i64, i64)> =
        sqlx::query_as("SELECT event_id, blocked_by FROM blocked_jobs ORDER BY event_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(blocked, vec![(3, 1), (5, 1)]);
}

async fn unblock(db: Db) {
    let lease = setup(&db).await;
    let mut c = commit(&lease, t0(), 5);
    c.new_rows = vec![
        row(1, "a", JobState::Failed, 1, t0()),
        row(3, "a", JobState::Pending, 0, t0()),
    ];
    c.block_keys = vec![("a".into(), t0())];
    db.store.lane_commit(&c).await.unwrap();

    // The head is delivered; the parked job is still there: the key stays blocked, due now.
    let mut c = commit(&lease, t0() + secs(1), 5);
    c.row_updates = vec![RowUpdate {
        event_id: 1,
        state: JobState::Delivered,
        attempt_inc: 0,
        error_code: None,
        error_text: None,
        attempted_at: Some(t0() + secs(1)),
        next_attempt_at: t0() + secs(1),
    }];
    c.check_keys = vec!["a".into()];
    let r = db.store.lane_commit(&c).await.unwrap();
    assert!(r.unblocked.is_empty());
    let (state, code): (String, Option<String>) =
        sqlx::query_as("SELECT state::text, error_code FROM job_state WHERE event_id = 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (state.as_str(), code.as_deref()),
        ("delivered", Some("http_500")),
        "the last error is kept"
    );

    // The parked one is delivered, and in the same commit another event of `a` is parked: the
    // key stays blocked.
    let mut c = commit(&lease, t0() + secs(2), 5);
    c.row_updates = vec![RowUpdate {
        event_id: 3,
        state: JobState::Delivered,
        attempt_inc: 0,
        error_code: None,
        error_text: None,
        attempted_at: Some(t0() + secs(2)),
        next_attempt_at: t0() + secs(2),
    }];
    c.new_rows = vec![row(5, "a", JobState::Pending, 0, t0())];
    c.ensure_keys = vec!["a".into()];
    c.check_keys = vec!["a".into()];
    assert!(db.store.lane_commit(&c).await.unwrap().unblocked.is_empty());

    let mut c = commit(&lease, t0() + secs(3), 5);
    c.row_updates = vec![RowUpdate {
        event_id: 5,
        state: JobState::Delivered,
        attempt_inc: 0,
        error_code: None,
        error_text: None,
        attempted_at: Some(t0() + secs(3)),
        next_attempt_at: t0() + secs(3),
    }];
    c.check_keys = vec!["a".into()];
    assert_eq!(
        db.store.lane_commit(&c).await.unwrap().unblocked,
        vec!["a".to_string()]
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM blocked_keys")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

async fn ensure_keeps_due_time(db: Db) {
    let lease = setup(&db).await;
    let mut c = commit(&lease, t0(), 5);
    c.new_rows = vec![row(1, "a", JobState::Failed, 1, t0() + secs(60))];
    c.block_keys = vec![("a".into(), t0() + secs(60))];
    db.store.lane_commit(&c).await.unwrap();
    let mut c = commit(&lease, t0() + secs(1), 5);
    c.new_rows = vec![row(3, "a", JobState::Pending, 0, t0() + secs(1))];
    c.ensure_keys = vec!["a".into()];
    db.store.lane_commit(&c).await.unwrap();
    let due: OffsetDateTime =
        sqlx::query_scalar("SELECT next_attempt_at FROM blocked_keys WHERE order_key = 'a'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        due,
        t0() + secs(60),
        "a parked job does not hurry its failed head"
    );
}

async fn operator_abort_wins(db: Db) {
    let lease = setup(&db).await;
    let mut c = commit(&lease, t0(), 5);
    c.new_rows = vec![row(1, "a", JobState::Failed, 1, t0())];
    c.block_keys = vec![("a".into(), t0())];
    db.store.lane_commit(&c).await.unwrap();
    sqlx::query(
        "UPDATE job_state SET state = 'aborted', error_code = 'operator' WHERE event_id = 1",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut c = commit(&lease, t0() + secs(1), 5);
    c.row_updates = vec![RowUpdate {
        event_id: 1,
        state: JobState::Failed,
        attempt_inc: 1,
        error_code: Some("http_503".into()),
        error_text: Some("later".into()),
        attempted_at: Some(t0() + secs(1)),
        next_attempt_at: t0() + secs(30),
    }];
    db.store.lane_commit(&c).await.unwrap();
    let (state, code, attempt): (String, String, i32) =
        sqlx::query_as("SELECT state::text, error_code, attempt FROM job_state WHERE event_id = 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (state.as_str(), code.as_str(), attempt),
        ("aborted", "operator", 1)
    );
}
