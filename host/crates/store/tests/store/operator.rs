//! The operator functions (migrations/0004): retry now, abort, replay, pause, resume. Each
//! changes only jobs with rows and the due time of their keys, so the lane's next fetch of due
//! keys serves them in order; each writes an audit row and tells the lane's owner.

use libtest_mimic::Trial;
use sluice_store::{FetchLimits, JobState, LaneCommit, Lease, NewJobRow};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::fixtures::*;
use crate::harness::{Db, trial};

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "operator_retry_now_makes_a_failed_key_due_with_its_parked_jobs_in_order",
            retry_now,
        ),
        trial(
            "operator_abort_finishes_rows_and_lets_the_next_job_of_the_key_go",
            abort,
        ),
        trial(
            "operator_replay_puts_an_aborted_job_back_before_the_later_jobs_of_its_key",
            replay,
        ),
        trial(
            "operator_pause_keeps_every_host_off_the_lane_until_resume_and_tells_the_owner",
            pause,
        ),
        trial(
            "operator_calls_wait_for_a_lane_commit_holding_no_job_row_so_none_deadlocks",
            lane_row_first,
        ),
    ]
}

const LIMITS: FetchLimits = FetchLimits {
    max_keys: 10,
    max_jobs_per_key: 10,
    max_bytes: 1 << 20,
};

fn row(event_id: i64, key: &str, state: JobState, next: OffsetDateTime) -> NewJobRow {
    let failed = state == JobState::Failed;
    NewJobRow {
        dataset: 1,
        event_id,
        source_id: "web".into(),
        order_key: key.into(),
        state,
        attempt: i32::from(failed),
        error_code: failed.then(|| "http_500".into()),
        error_text: failed.then(|| "boom".into()),
        first_attempt_at: failed.then_some(t0()),
        last_attempt_at: failed.then_some(t0()),
        next_attempt_at: next,
    }
}

/// Key `a`: failed head 1 (due in the far future), parked 3 and 5. Key `c`: failed head 4.
async fn setup(db: &Db) -> Lease {
    let lease = hook_with_events(
        &db.store,
        &[("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("a", "5")],
    )
    .await;
    let far = t0() + secs(3600);
    db.store
        .lane_commit(&LaneCommit {
            lease: lease.clone(),
            now: t0(),
            lease_ttl: TTL,
            cursor: 5,
            claimed_to: 5,
            new_rows: vec![
                row(1, "a", JobState::Failed, far),
                row(3, "a", JobState::Pending, t0()),
                row(5, "a", JobState::Pending, t0()),
                row(4, "c", JobState::Failed, far),
            ],
            row_updates: vec![],
            block_keys: vec![("a".into(), far), ("c".into(), far)],
            ensure_keys: vec![],
            check_keys: vec![],
        })
        .await
        .unwrap();
    lease
}

/// What a lane fetching due keys right now would get: (event, state) by key order.
async fn due_now(db: &Db) -> Vec<(i64, JobState)> {
    let now = OffsetDateTime::now_utc() + secs(1);
    let fetch = db
        .store
        .blocked_fetch(&lane("hook"), now, &[], LIMITS)
        .await
        .unwrap();
    fetch.jobs.iter().map(|j| (j.event_id, j.state)).collect()
}

async fn call(db: &Db, function: &'static str, ids: Option<Vec<i64>>) -> i32 {
    call_on(&db.pool, function, ids).await.unwrap()
}

async fn call_on(
    pool: &sqlx::PgPool,
    function: &'static str,
    ids: Option<Vec<i64>>,
) -> Result<i32, sqlx::Error> {
    // `function` is one of this file's literals.
    let sql = format!("SELECT {function}('acme', 'hook', $1, 'alice')");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(ids)
        .fetch_one(pool)
        .await
}

async fn audit(db: &Db) -> Vec<(String, String, Option<Vec<i64>>, i32)> {
    sqlx::query_as("SELECT actor, action, event_ids, jobs FROM operator_audit ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

async fn state(db: &Db, event_id: i64) -> (String, Option<String>) {
    sqlx::query_as("SELECT state::text, error_code FROM job_state WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn retry_now(db: Db) {
    setup(&db).await;
    assert!(due_now(&db).await.is_empty(), "nothing is due yet");
    assert_eq!(call(&db, "sluice_retry_now", Some(vec![1])).await, 1);
    assert_eq!(
        due_now(&db).await,
        vec![
            (1, JobState::Failed),
            (3, JobState::Pending),
            (5, JobState::Pending)
        ],
        "key a, in order; key c keeps its time"
    );
    assert_eq!(
        call(&db, "sluice_retry_now", None).await,
        2,
        "every failed job"
    );
    assert_eq!(
        audit(&db).await,
        vec![
            ("alice".into(), "retry_now".into(), Some(vec![1]), 1),
            ("alice".into(), "retry_now".into(), None, 2)
        ]
    );
}

async fn abort(db: Db) {
    setup(&db).await;
    // A parked job: aborted, but its failed head keeps its retry time.
    assert_eq!(call(&db, "sluice_abort", Some(vec![5])).await, 1);
    assert!(due_now(&db).await.is_empty());
    // The failed head: aborted, and the next job of its key goes now.
    assert_eq!(call(&db, "sluice_abort", Some(vec![1])).await, 1);
    assert_eq!(due_now(&db).await, vec![(3, JobState::Pending)]);
    assert_eq!(
        state(&db, 1).await,
        ("aborted".into(), Some("operator_abort".into()))
    );
    let text: String = sqlx::query_scalar("SELECT error_text FROM job_state WHERE event_id = 1")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(text, "aborted by alice after http_500: boom");
    // Finished jobs are left alone.
    assert_eq!(call(&db, "sluice_abort", Some(vec![1, 2])).await, 0);
    assert_eq!(audit(&db).await.len(), 3);
}

async fn replay(db: Db) {
    setup(&db).await;
    call(&db, "sluice_abort", Some(vec![1])).await;
    // Key a's next job goes...
    assert_eq!(
        due_now(&db).await,
        vec![(3, JobState::Pending), (5, JobState::Pending)]
    );
    // ...until the aborted head is replayed: it goes first again.
    assert_eq!(call(&db, "sluice_replay", Some(vec![1])).await, 1);
    assert_eq!(
        due_now(&db).await,
        vec![
            (1, JobState::Pending),
            (3, JobState::Pending),
            (5, JobState::Pending)
        ]
    );
    assert_eq!(
        call(&db, "sluice_replay", None).await,
        0,
        "nothing else aborted"
    );
    // A key that had no blocked row gets one back.
    sqlx::query("DELETE FROM blocked_keys WHERE order_key = 'c'")
        .execute(&db.pool)
        .await
        .unwrap();
    call(&db, "sluice_abort", Some(vec![4])).await;
    assert_eq!(call(&db, "sluice_replay", Some(vec![4])).await, 1);
    assert!(due_now(&db).await.contains(&(4, JobState::Pending)));
}

async fn pause(db: Db) {
    let lease = setup(&db).await;
    let mut listener = db.store.wake_listener().await.unwrap();
    let paused: bool = sqlx::query_scalar("SELECT sluice_pause('acme', 'hook', 'bob')")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(paused);
    let wake = listener.next().await.unwrap();
    assert_eq!(
        wake,
        sluice_store::Wake::Operator {
            workspace: "acme".into(),
            destination: "hook".into()
        }
    );
    assert!(db.store.lane_paused(&lane("hook")).await.unwrap());

    // The owner gives the lane up; no host can take it while it is paused.
    db.store.lane_release(&lease, None).await.unwrap();
    let other = db
        .store
        .lane_acquire(&lane("hook"), Uuid::new_v4(), t0(), TTL)
        .await
        .unwrap();
    assert!(other.is_none(), "paused");

    let resumed: bool = sqlx::query_scalar("SELECT sluice_resume('acme', 'hook', 'bob')")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(resumed);
    assert!(!db.store.lane_paused(&lane("hook")).await.unwrap());
    acquire(&db.store, "hook", t0()).await;
    let actions: Vec<String> = audit(&db).await.into_iter().map(|a| a.1).collect();
    assert_eq!(actions, vec!["pause", "resume"]);
}

/// A lane commit locks the lane's row (its fence) and then job rows and blocked keys; an
/// operator call that took a job row and then waited for the lane row would deadlock with it
/// (.ci/run, 2026-12-05: `40P01` on Citus). Each call must wait for the lane row first, holding
/// nothing a commit needs. The test's transaction stands in for a commit between its fence and
/// its row writes: it holds the lane row while the call waits, then takes the call's job row
/// and key without waiting.
async fn lane_row_first(db: Db) {
    setup(&db).await;
    call(&db, "sluice_abort", Some(vec![4])).await;
    let cases: [(&'static str, i64, &str); 3] = [
        ("sluice_retry_now", 1, "a"),
        ("sluice_abort", 1, "a"),
        ("sluice_replay", 4, "c"),
    ];
    for (function, event, key) in cases {
        let mut commit = db.pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM lanes WHERE workspace_id = 'acme' AND destination_id = 'hook' FOR UPDATE")
            .execute(&mut *commit)
            .await
            .unwrap();
        let pool = db.pool.clone();
        let mut operator =
            tokio::spawn(async move { call_on(&pool, function, Some(vec![event])).await });
        tokio::select! {
            _ = wait_for_a_lock_wait(&db) => {}
            r = &mut operator => panic!("{function} did not wait for the lane row: {r:?}"),
        }
        let job = lock_now(&mut commit, "job_state", "event_id = $1", event).await;
        assert!(
            job.is_ok(),
            "{function} holds job {event} while it waits: {job:?}"
        );
        let blocked = lock_now(&mut commit, "blocked_keys", "order_key = $1", key).await;
        assert!(
            blocked.is_ok(),
            "{function} holds key {key} while it waits: {blocked:?}"
        );
        commit.commit().await.unwrap();
        assert_eq!(
            operator.await.unwrap().unwrap(),
            1,
            "{function} went on after the commit"
        );
    }
}

/// Locks the lane's row of `table` that `filter` picks, failing at once if another
/// transaction holds it.
async fn lock_now<'a, T>(
    tx: &mut sqlx::PgTransaction<'_>,
    table: &'static str,
    filter: &'static str,
    value: T,
) -> Result<(), sqlx::Error>
where
    T: sqlx::Encode<'a, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + 'a,
{
    // `table` and `filter` are this file's literals.
    let sql = format!(
        "SELECT 1 FROM {table} WHERE workspace_id = 'acme' AND destination_id = 'hook'
             AND {filter} FOR UPDATE NOWAIT"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(value)
        .execute(&mut **tx)
        .await
        .map(drop)
}

/// Until a backend of this test's database waits for a lock (on Citus, on any node: the
/// call's statement waits on the worker that has the lane's shard).
async fn wait_for_a_lock_wait(db: &Db) {
    let citus: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let view = if citus {
        "citus_stat_activity"
    } else {
        "pg_stat_activity"
    };
    // The database's name is the harness's (`t_…`), not input.
    let sql = format!(
        "SELECT count(*) FROM {view} WHERE datname = '{}' AND wait_event_type = 'Lock'",
        db.name
    );
    until_counted(&db.pool, &sql, "the operator call never waited").await;
}
