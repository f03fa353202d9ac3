//! The admin job list (`store::admin::job_list`) reads rows and the log separately so that a
//! page costs a page. It must list exactly the jobs of `job_overview`, in the same order,
//! for every filter and page size.

use libtest_mimic::Trial;
use sluice_store::admin::{JobCursor, JobFilter, JobSummary};
use sluice_store::{JobState, LaneCommit, NewJobRow, OrderingScope};

use crate::fixtures::*;
use crate::harness::{Db, trial};

pub fn tests() -> Vec<Trial> {
    vec![trial(
        "job_list_pages_match_job_overview_for_every_filter",
        matches_overview,
    )]
}

/// What a job looks like in a list, for comparison.
type Job = (i64, String, JobState, i32, Option<String>, String, String);

fn key(j: &JobSummary) -> Job {
    (
        j.event_id,
        j.destination.clone(),
        j.state,
        j.attempt,
        j.error_code.clone(),
        j.source.clone(),
        j.user.clone(),
    )
}

async fn matches_overview(db: Db) {
    // Two lanes: `hook` reads `web`, `mirror` reads `web` and `app`.
    db.store
        .lanes_sync(&[
            spec("hook", &["web"], OrderingScope::User),
            spec("mirror", &["web", "app"], OrderingScope::User),
        ])
        .await
        .expect("lanes sync");
    let users = ["a", "a", "b", "c", "d", "e", "b", "f"];
    for (i, user) in users.iter().enumerate() {
        let source = if i % 3 == 2 { "app" } else { "web" };
        let id = (i + 1).to_string();
        let at = t0() + secs(i as i64 * 10);
        append(&db.store, source, at, vec![event(user, &id, 10)]).await;
    }
    // web: 1 2 4 5 7 8; app: 3 6.
    // hook: 1 failed (2 parked behind it), 4 delivered after a retry, 5 aborted; cursor at 5,
    // 7 read and in flight, 8 unread.
    let hook = acquire(&db.store, "hook", t0()).await.lease;
    commit(
        &db,
        hook,
        5,
        7,
        vec![
            job_row(1, "web", "a", JobState::Failed, 1),
            job_row(2, "web", "a", JobState::Pending, 0),
            job_row(4, "web", "c", JobState::Delivered, 2),
            job_row(5, "web", "d", JobState::Aborted, 3),
        ],
    )
    .await;
    // mirror: 3 failed ahead of its cursor (2), 4..6 read, the rest unread.
    let mirror = acquire(&db.store, "mirror", t0()).await.lease;
    commit(
        &db,
        mirror,
        2,
        6,
        vec![job_row(3, "app", "b", JobState::Failed, 2)],
    )
    .await;

    let all: Vec<JobSummary> = db
        .store
        .admin_jobs(&JobFilter::default(), None, None, 1000)
        .await
        .expect("list");
    let overview: Vec<Job> = sqlx::query_as(
        "SELECT event_id, destination_id, state, attempt, error_code, source_id, user_key
             FROM job_overview ORDER BY event_id, destination_id",
    )
    .fetch_all(&db.pool)
    .await
    .expect("read job_overview");
    assert_eq!(all.iter().map(key).collect::<Vec<_>>(), overview);
    // One job, read on its own, is the job of the list.
    for job in &all {
        let one = db
            .store
            .admin_job(&lane(&job.destination), job.event_id)
            .await
            .expect("read a job")
            .expect("the job exists");
        assert_eq!(key(&one.job), key(job));
    }
    let other_lane = db.store.admin_job(&lane("hook"), 3).await.expect("read");
    assert!(
        other_lane.is_none(),
        "event 3 is not hook's: {other_lane:?}"
    );
    let expected_states: Vec<(i64, &str, JobState)> = vec![
        (1, "hook", JobState::Failed),
        (1, "mirror", JobState::Delivered),
        (2, "hook", JobState::Pending),
        (2, "mirror", JobState::Delivered),
        (3, "mirror", JobState::Failed),
        (4, "hook", JobState::Delivered),
        (4, "mirror", JobState::Executing),
        (5, "hook", JobState::Aborted),
        (5, "mirror", JobState::Executing),
        (6, "mirror", JobState::Executing),
        (7, "hook", JobState::Executing),
        (7, "mirror", JobState::Pending),
        (8, "hook", JobState::Pending),
        (8, "mirror", JobState::Pending),
    ];
    assert_eq!(
        all.iter()
            .map(|j| (j.event_id, j.destination.as_str(), j.state))
            .collect::<Vec<_>>(),
        expected_states
    );

    // Every filter shape, every page size: the pages, joined, are the full list filtered.
    let states = [
        None,
        Some(JobState::Pending),
        Some(JobState::Executing),
        Some(JobState::Failed),
        Some(JobState::Delivered),
        Some(JobState::Aborted),
    ];
    let mut shapes = Vec::new();
    for state in states {
        for destination in [None, Some("hook"), Some("mirror")] {
            for (source, user, error_code) in [
                (None, None, None),
                (Some("app"), None, None),
                (None, Some("a"), None),
                (None, Some("b"), None),
                (None, None, Some("http_502")),
                (Some("web"), Some("zz"), None),
            ] {
                shapes.push(JobFilter {
                    workspace: Some(WS.into()),
                    destination: destination.map(Into::into),
                    source: source.map(Into::into),
                    user: user.map(Into::into),
                    error_code: error_code.map(Into::into),
                    state,
                    ..Default::default()
                });
            }
        }
    }
    shapes.push(JobFilter {
        since: Some(t0() + secs(25)),
        until: Some(t0() + secs(65)),
        ..Default::default()
    });
    shapes.push(JobFilter {
        error: Some("said".into()),
        ..Default::default()
    });
    for filter in &shapes {
        let expected: Vec<Job> = all.iter().filter(|j| matches(filter, j)).map(key).collect();
        for page in [1, 2, 5, 100] {
            let got = pages(&db, filter, None, page).await;
            assert_eq!(got, expected, "filter {filter:?}, page size {page}");
        }
    }

    // State lists (the operator actions' own, and one whose states are not adjacent along
    // a lane) narrow the same way.
    let lists: [&[JobState]; 3] = [
        &[JobState::Pending, JobState::Failed],
        &[JobState::Aborted],
        &[JobState::Delivered, JobState::Pending],
    ];
    for list in lists {
        let expected: Vec<Job> = all
            .iter()
            .filter(|j| list.contains(&j.state))
            .map(key)
            .collect();
        for page in [1, 3] {
            let got = pages(&db, &JobFilter::default(), Some(list), page).await;
            assert_eq!(got, expected, "states {list:?}, page size {page}");
        }
    }
}

async fn commit(
    db: &Db,
    lease: sluice_store::Lease,
    cursor: i64,
    claimed_to: i64,
    rows: Vec<NewJobRow>,
) {
    let block_keys = rows
        .iter()
        .filter(|r| matches!(r.state, JobState::Failed))
        .map(|r| (r.order_key.clone(), t0() + secs(3600)))
        .collect();
    db.store
        .lane_commit(&LaneCommit {
            lease,
            now: t0(),
            lease_ttl: TTL,
            cursor,
            claimed_to,
            new_rows: rows,
            row_updates: vec![],
            block_keys,
            ensure_keys: vec![],
            check_keys: vec![],
        })
        .await
        .expect("commit");
}

/// Every page of `filter`, `size` at a time, following the cursor.
async fn pages(db: &Db, filter: &JobFilter, states: Option<&[JobState]>, size: i64) -> Vec<Job> {
    let mut cursor: Option<JobCursor> = None;
    let mut seen = Vec::new();
    loop {
        let page = db
            .store
            .admin_jobs(filter, cursor.as_ref(), states, size)
            .await
            .expect("list a page");
        seen.extend(page.iter().map(key));
        match page.last() {
            Some(j) if page.len() as i64 == size => {
                cursor = Some(JobCursor {
                    event_id: j.event_id,
                    destination: j.destination.clone(),
                })
            }
            _ => return seen,
        }
    }
}

/// The filter's meaning (docs/admin.md), applied to a listed job.
fn matches(f: &JobFilter, j: &JobSummary) -> bool {
    let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    eq(&f.workspace, &j.workspace)
        && eq(&f.destination, &j.destination)
        && eq(&f.source, &j.source)
        && eq(&f.user, &j.user)
        && f.state.is_none_or(|s| s == j.state)
        && f.error_code
            .as_ref()
            .is_none_or(|c| j.error_code.as_ref() == Some(c))
        && f.error
            .as_ref()
            .is_none_or(|e| j.error.as_ref().is_some_and(|t| t.contains(e.as_str())))
        && f.since.is_none_or(|t| j.received_at >= t)
        && f.until.is_none_or(|t| j.received_at < t)
}
