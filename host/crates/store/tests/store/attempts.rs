//! Attempt history (`job_attempts`, migration 0005): written by the lane commit for every
//! attempt of a job that left the fast path, never for a first-try delivery.

use libtest_mimic::Trial;
use sluice_store::{AttemptOutcome, JobState, LaneCommit, Lease, NewJobRow, RowUpdate};
use time::OffsetDateTime;

use crate::fixtures::*;
use crate::harness::{Db, trial};

pub fn tests() -> Vec<Trial> {
    vec![trial(
        "attempts_are_recorded_for_jobs_off_the_fast_path_and_not_for_first_try_deliveries",
        recorded,
    )]
}

fn commit(
    lease: &Lease,
    now: OffsetDateTime,
    rows: Vec<NewJobRow>,
    ups: Vec<RowUpdate>,
) -> LaneCommit {
    LaneCommit {
        lease: lease.clone(),
        now,
        lease_ttl: TTL,
        cursor: 4,
        claimed_to: 4,
        new_rows: rows,
        row_updates: ups,
        block_keys: vec![],
        ensure_keys: vec![],
        check_keys: vec![],
    }
}

fn new_row(
    event_id: i64,
    key: &str,
    state: JobState,
    attempt: i32,
    err: Option<(&str, &str)>,
) -> NewJobRow {
    let tried = state != JobState::Pending;
    NewJobRow {
        dataset: 1,
        event_id,
        source_id: "web".into(),
        order_key: key.into(),
        state,
        attempt,
        error_code: err.map(|e| e.0.to_string()),
        error_text: err.map(|e| e.1.to_string()),
        first_attempt_at: tried.then_some(t0()),
        last_attempt_at: tried.then_some(t0()),
        next_attempt_at: t0() + secs(10),
    }
}

fn update(
    event_id: i64,
    state: JobState,
    inc: i32,
    err: Option<(&str, &str)>,
    at: OffsetDateTime,
) -> RowUpdate {
    RowUpdate {
        event_id,
        state,
        attempt_inc: inc,
        error_code: err.map(|e| e.0.to_string()),
        error_text: err.map(|e| e.1.to_string()),
        attempted_at: Some(at),
        next_attempt_at: at + secs(10),
    }
}

type Attempt = (i64, i32, AttemptOutcome, Option<String>, Option<String>);

async fn attempts(db: &Db) -> Vec<Attempt> {
    sqlx::query_as(
        "SELECT event_id, attempt, outcome, error_code, error_text FROM job_attempts
         ORDER BY event_id, at, attempt",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

async fn recorded(db: Db) {
    // a:1 fails, b:2 is delivered at the first try, c:3 is throttled, a:4 is parked behind 1.
    let lease =
        hook_with_events(&db.store, &[("a", "1"), ("b", "2"), ("c", "3"), ("a", "4")]).await;
    db.store
        .lane_commit(&commit(
            &lease,
            t0(),
            vec![
                new_row(1, "a", JobState::Failed, 1, Some(("http_503", "down"))),
                new_row(
                    3,
                    "c",
                    JobState::Failed,
                    0,
                    Some(("throttled", "slow down")),
                ),
                new_row(4, "a", JobState::Pending, 0, None),
            ],
            vec![],
        ))
        .await
        .unwrap();
    // 1 fails again with a long body, then is delivered; 3 is aborted.
    let long = "é".repeat(8000);
    let t1 = t0() + secs(20);
    let t2 = t0() + secs(40);
    db.store
        .lane_commit(&commit(
            &lease,
            t1,
            vec![],
            vec![
                update(1, JobState::Failed, 1, Some(("http_500", &long)), t1),
                update(3, JobState::Aborted, 1, Some(("http_400", "bad")), t1),
            ],
        ))
        .await
        .unwrap();
    db.store
        .lane_commit(&commit(
            &lease,
            t2,
            vec![],
            vec![update(1, JobState::Delivered, 1, None, t2)],
        ))
        .await
        .unwrap();

    let got = attempts(&db).await;
    let s = |x: &str| Some(x.to_string());
    let kept = sluice_store::commit::trim(&long).to_string();
    assert_eq!(
        got,
        vec![
            (1, 1, AttemptOutcome::Retry, s("http_503"), s("down")),
            (1, 2, AttemptOutcome::Retry, s("http_500"), Some(kept)),
            (1, 3, AttemptOutcome::Delivered, None, None),
            (
                3,
                0,
                AttemptOutcome::Throttled,
                s("throttled"),
                s("slow down")
            ),
            (3, 1, AttemptOutcome::Abort, s("http_400"), s("bad")),
        ],
        "no row for the first-try delivery (2) or the parked job (4)"
    );
    let text_len: i32 = sqlx::query_scalar(
        "SELECT octet_length(error_text) FROM job_attempts WHERE event_id = 1 AND attempt = 2",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(text_len as usize <= sluice_store::commit::MAX_ERROR_TEXT);
    // The job row keeps the last failure once delivered (docs/sql.md).
    let (attempt, code): (i32, Option<String>) =
        sqlx::query_as("SELECT attempt, error_code FROM job_state WHERE event_id = 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((attempt, code.as_deref()), (3, Some("http_500")));
    // The admin API reads the outcomes back through the same type.
    for (event_id, want) in [
        (
            1,
            [
                AttemptOutcome::Retry,
                AttemptOutcome::Retry,
                AttemptOutcome::Delivered,
            ]
            .as_slice(),
        ),
        (3, &[AttemptOutcome::Throttled, AttemptOutcome::Abort]),
    ] {
        let job = db.store.admin_job(&lane("hook"), event_id).await.unwrap();
        let outcomes: Vec<AttemptOutcome> = job
            .expect("the job")
            .attempts
            .iter()
            .map(|a| a.outcome)
            .collect();
        assert_eq!(outcomes, want, "job {event_id}");
    }
}
