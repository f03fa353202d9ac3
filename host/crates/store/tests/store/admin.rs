//! What the admin API needs from the store: operator actions audited with the caller's filter
//! (migration 0005's `sluice_audit`), lane stats summed per minute and expired, and job lists
//! whose filters are data.

use libtest_mimic::Trial;
use sluice_store::admin::{JobCursor, JobFilter, OperatorAction};
use sluice_store::lane_stats::LaneCounters;
use sluice_store::{JobState, LaneCommit, NewJobRow};
use uuid::Uuid;

use crate::fixtures::*;
use crate::harness::{Db, trial};

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "admin_actions_are_audited_with_the_token_name_filter_and_job_count",
            audited,
        ),
        trial(
            "admin_lane_stats_add_up_per_minute_and_host_and_expire_after_a_day",
            stats,
        ),
        trial(
            "admin_job_filters_match_exactly_and_pages_follow_the_cursor",
            filters,
        ),
    ]
}

fn failed(event_id: i64, key: &str) -> NewJobRow {
    NewJobRow {
        dataset: 1,
        event_id,
        source_id: "web".into(),
        order_key: key.into(),
        state: JobState::Failed,
        attempt: 1,
        error_code: Some("http_500".into()),
        error_text: Some("boom".into()),
        first_attempt_at: Some(t0()),
        last_attempt_at: Some(t0()),
        next_attempt_at: t0() + secs(3600),
    }
}

async fn audited(db: Db) {
    let lease = hook_with_events(&db.store, &[("a", "1"), ("b%_", "2")]).await;
    db.store
        .lane_commit(&LaneCommit {
            lease: lease.clone(),
            now: t0(),
            lease_ttl: TTL,
            cursor: 2,
            claimed_to: 2,
            new_rows: vec![failed(1, "a"), failed(2, "b%_")],
            row_updates: vec![],
            block_keys: vec![
                ("a".into(), t0() + secs(3600)),
                ("b%_".into(), t0() + secs(3600)),
            ],
            ensure_keys: vec![],
            check_keys: vec![],
        })
        .await
        .unwrap();
    let filter = serde_json::json!({ "user": "a" });
    let n = db
        .store
        .operator_jobs(
            &lease.lane,
            OperatorAction::RetryNow,
            Some(&[1]),
            "ops",
            &filter,
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    db.store
        .operator_pause(&lease.lane, true, "ops")
        .await
        .unwrap();
    // From SQL, afterwards on the same pool: no filter leaks from the API's transaction.
    sqlx::query("SELECT sluice_resume('acme', 'hook', 'psql')")
        .execute(&db.pool)
        .await
        .unwrap();
    let rows: Vec<(String, String, Option<serde_json::Value>, i32)> =
        sqlx::query_as("SELECT actor, action, filter, jobs FROM operator_audit ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            ("ops".into(), "retry_now".into(), Some(filter), 1),
            ("ops".into(), "pause".into(), None, 0),
            ("psql".into(), "resume".into(), None, 0),
        ]
    );
    let audit = db
        .store
        .admin_audit(Some("acme"), None, None, 10)
        .await
        .unwrap();
    assert_eq!(audit.len(), 3);
    assert_eq!(audit[0].action, "resume", "newest first");
}

async fn stats(db: Db) {
    hook_with_events(&db.store, &[]).await;
    let host = Uuid::new_v4();
    let lane = lane("hook");
    let counts = |delivered, failed, filtered| LaneCounters {
        delivered,
        failed,
        filtered,
        concurrency_limit: Some(8),
        ..Default::default()
    };
    let now = time::OffsetDateTime::now_utc();
    let old = now - time::Duration::hours(25);
    for (at, c) in [
        (now, counts(5, 1, 3)),
        (now, counts(2, 0, 4)),
        (old, counts(9, 9, 9)),
    ] {
        db.store
            .lane_stats_add(host, at, &[(lane.clone(), c)])
            .await
            .unwrap();
    }
    let series = db.store.admin_lane_stats(&lane, 60).await.unwrap();
    assert_eq!(series.len(), 60);
    // Summed, since the test may straddle a minute boundary.
    let delivered: i64 = series.iter().map(|m| m.delivered).sum();
    let failed: i64 = series.iter().map(|m| m.failed).sum();
    assert_eq!((delivered, failed), (7, 1), "{series:?}");
    assert!(series.iter().any(|m| m.concurrency_limit == Some(8)));
    // Filtered jobs (0009) have their own column: neither deliveries nor failures.
    let filtered: i64 = series.iter().map(|m| m.filtered).sum();
    assert_eq!(filtered, 7, "{series:?}");
    let lanes = db.store.admin_lanes().await.unwrap();
    let hook = lanes.iter().find(|l| l.destination == "hook").unwrap();
    assert_eq!(
        (hook.delivered_5m, hook.failed_5m, hook.filtered_5m),
        (7, 1, 7),
        "{hook:?}"
    );
    assert!((hook.failure_rate - 1.0 / 8.0).abs() < 1e-9, "{hook:?}");
    let removed = db
        .store
        .lane_stats_expire(now, std::time::Duration::from_secs(24 * 3600))
        .await
        .unwrap();
    assert_eq!(removed, 1);
}

async fn filters(db: Db) {
    let events: Vec<(String, String)> = (0..7)
        .map(|i| (format!("u{}", i % 2), format!("m{i}")))
        .collect();
    let mut refs: Vec<(&str, &str)> = events
        .iter()
        .map(|(u, m)| (u.as_str(), m.as_str()))
        .collect();
    refs.push(("50%_off", "nasty"));
    hook_with_events(&db.store, &refs).await;
    let by = |user: &str| JobFilter {
        user: Some(user.into()),
        ..Default::default()
    };
    for (user, n) in [("u0", 4), ("50%_off", 1), ("%", 0), ("u_", 0), ("50%", 0)] {
        let jobs = db
            .store
            .admin_jobs(&by(user), None, None, 100)
            .await
            .unwrap();
        assert_eq!(jobs.len(), n, "user {user}");
    }
    let mut cursor: Option<JobCursor> = None;
    let mut seen = Vec::new();
    loop {
        let page = db
            .store
            .admin_jobs(&JobFilter::default(), cursor.as_ref(), None, 3)
            .await
            .unwrap();
        seen.extend(page.iter().map(|j| j.event_id));
        match page.last() {
            Some(j) if page.len() == 3 => {
                cursor = JobCursor::decode(
                    &JobCursor {
                        event_id: j.event_id,
                        destination: j.destination.clone(),
                    }
                    .encode(),
                )
            }
            _ => break,
        }
    }
    assert_eq!(seen, (1..=8).collect::<Vec<i64>>());
}
