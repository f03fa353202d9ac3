use std::time::Duration;

use time::OffsetDateTime;

use super::*;
use sluice_store::{
    AcquiredLane, CommitResult, LaneCommit, LaneId, Lease, LogEvent, OrderingScope,
};

fn lease() -> Lease {
    Lease {
        lane: LaneId {
            workspace_id: "w".into(),
            destination_id: "d".into(),
        },
        owner: uuid::Uuid::nil(),
        epoch: 1,
    }
}

fn lane_at(cursor: i64, blocked: &[&str], limits: LaneLimits) -> Lane {
    Lane::resume(
        &AcquiredLane {
            lease: lease(),
            ordering: OrderingScope::User,
            cursor,
            claimed_to: cursor,
            blocked_keys: blocked.iter().map(|s| s.to_string()).collect(),
        },
        limits,
    )
}

fn lane() -> Lane {
    lane_at(0, &[], LaneLimits::default())
}

fn ev(id: i64, user: &str) -> LogEvent {
    LogEvent {
        dataset: 1,
        id,
        source_id: "s".into(),
        user_key: user.into(),
        message_id: format!("m{id}"),
        received_at: OffsetDateTime::UNIX_EPOCH,
        event: "{}".into(),
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1)
}

fn ids(jobs: &[Job]) -> Vec<i64> {
    jobs.iter().map(|j| j.event_id).collect()
}

fn retry() -> Decision {
    Decision::Retry {
        code: "http_500".into(),
        text: "boom".into(),
        at: now() + time::Duration::seconds(10),
    }
}

fn commit(lane: &mut Lane) -> LaneCommit {
    let c = lane
        .take_commit(&lease(), now(), Duration::from_secs(30))
        .expect("no commit under way");
    lane.commit_written(&c, CommitResult::default());
    c
}

/// Reads events and records the claim, as the runner does before handing any of them out.
fn read(lane: &mut Lane, events: Vec<LogEvent>, to: i64) -> LaneCommit {
    lane.accept_log(events, to, now());
    commit(lane)
}

#[test]
fn a_read_job_goes_out_only_once_its_claim_is_written() {
    let mut l = lane();
    l.accept_log(vec![ev(1, "a")], 1, now());
    assert!(l.take_call(10, usize::MAX, 1).is_empty());
    let c = commit(&mut l);
    assert_eq!(c.claimed_to, 1);
    assert_eq!(ids(&l.take_call(10, usize::MAX, 1)), vec![1]);
}

#[test]
fn a_call_takes_one_job_per_key_in_id_order() {
    let mut l = lane();
    read(
        &mut l,
        vec![ev(1, "a"), ev(2, "b"), ev(3, "a"), ev(4, "c")],
        4,
    );
    let call = l.take_call(10, usize::MAX, 1);
    assert_eq!(
        ids(&call),
        vec![1, 2, 4],
        "a's second job waits for its first"
    );
    assert!(
        l.take_call(10, usize::MAX, 1).is_empty(),
        "every key is busy"
    );
    for j in call {
        l.complete(j, Decision::Delivered, now());
    }
    assert_eq!(ids(&l.take_call(10, usize::MAX, 1)), vec![3]);
}

#[test]
fn a_failure_parks_the_rest_of_its_key_and_later_events_of_it() {
    let mut l = lane();
    read(&mut l, vec![ev(1, "a"), ev(2, "a"), ev(3, "b")], 3);
    let call = l.take_call(10, usize::MAX, 1);
    assert_eq!(ids(&call), vec![1, 3]);
    let mut call = call.into_iter();
    l.complete(call.next().unwrap(), retry(), now());
    l.complete(call.next().unwrap(), Decision::Delivered, now());
    // A later event of the blocked key goes straight to a row.
    l.accept_log(vec![ev(4, "a"), ev(5, "b")], 5, now());
    let c = commit(&mut l);
    assert_eq!(ids(&l.take_call(10, usize::MAX, 1)), vec![5]);

    let rows: Vec<(i64, JobState)> = c.new_rows.iter().map(|r| (r.event_id, r.state)).collect();
    assert_eq!(
        rows,
        vec![
            (1, JobState::Failed),
            (2, JobState::Pending),
            (4, JobState::Pending)
        ]
    );
    assert_eq!(c.new_rows[0].attempt, 1);
    assert_eq!(c.new_rows[0].error_code.as_deref(), Some("http_500"));
    assert_eq!(
        c.block_keys,
        vec![("a".to_string(), now() + time::Duration::seconds(10))]
    );
    assert!(
        c.ensure_keys.is_empty(),
        "the failure's block covers the parks"
    );
    // 1, 2, 3 and 4 are finished or have rows; 5 is in flight.
    assert_eq!(c.cursor, 4);
}

#[test]
fn the_cursor_stops_below_the_oldest_job_in_flight() {
    let mut l = lane();
    read(&mut l, vec![ev(1, "a"), ev(2, "b"), ev(3, "c")], 10);
    let mut call = l.take_call(10, usize::MAX, 1).into_iter();
    let first = call.next().unwrap();
    for j in call {
        l.complete(j, Decision::Delivered, now());
    }
    let c = commit(&mut l);
    assert_eq!((c.cursor, c.claimed_to), (0, 10));
    l.complete(first, Decision::Delivered, now());
    assert!(l.wants_commit());
    let c = commit(&mut l);
    assert_eq!(
        c.cursor, 10,
        "nothing unfinished: the cursor reaches what was read"
    );
    assert!(l.is_drained());
}

#[test]
fn a_hot_key_beyond_the_limit_is_parked_due_at_once() {
    let mut l = lane_at(
        0,
        &[],
        LaneLimits {
            max_jobs_per_key: 2,
        },
    );
    let c = read(
        &mut l,
        (1..=5)
            .map(|i| ev(i, "hot"))
            .chain([ev(6, "cold")])
            .collect(),
        6,
    );
    assert_eq!(
        l.held().0,
        3,
        "two of the hot key and the cold one stay in memory"
    );
    assert_eq!(
        c.new_rows.iter().map(|r| r.event_id).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(c.ensure_keys, vec!["hot".to_string()]);
    // Its rows are not fetched while its in-memory jobs are still going.
    assert_eq!(l.fetch_exclusions(), vec!["hot".to_string()]);
    let call = l.take_call(10, usize::MAX, 1);
    assert_eq!(ids(&call), vec![1, 6]);
    for j in call {
        l.complete(j, Decision::Delivered, now());
    }
    let j = l.take_call(10, usize::MAX, 1).pop().unwrap();
    assert_eq!(j.event_id, 2);
    l.complete(j, Decision::Delivered, now());
    let c = commit(&mut l);
    assert_eq!(
        c.check_keys,
        vec!["hot".to_string()],
        "drained: the store decides what is left"
    );
}

#[test]
fn rows_of_a_blocked_key_go_in_order_and_unblock_it() {
    let mut l = lane_at(10, &["a"], LaneLimits::default());
    let row = |id: i64, state: JobState, attempt: i32| RowJob {
        dataset: 1,
        event_id: id,
        source_id: "s".into(),
        order_key: "a".into(),
        state,
        attempt,
        first_attempt_at: Some(now()),
        user_key: "a".into(),
        message_id: format!("m{id}"),
        received_at: now(),
        event: "{}".into(),
    };
    l.accept_rows(vec![
        row(3, JobState::Failed, 2),
        row(7, JobState::Pending, 0),
    ]);
    let j = l.take_call(10, usize::MAX, 1).pop().unwrap();
    assert_eq!((j.event_id, j.attempt), (3, 2));
    assert!(l.take_call(10, usize::MAX, 1).is_empty());
    l.complete(j, Decision::Delivered, now());
    let j = l.take_call(10, usize::MAX, 1).pop().unwrap();
    assert_eq!(j.event_id, 7);
    l.complete(j, Decision::Delivered, now());
    let c = l
        .take_commit(&lease(), now(), Duration::from_secs(30))
        .unwrap();
    assert_eq!(c.row_updates.len(), 2);
    assert!(c.row_updates.iter().all(|u| u.state == JobState::Delivered));
    assert_eq!(c.check_keys, vec!["a".to_string()]);
    l.commit_written(
        &c,
        CommitResult {
            unblocked: vec!["a".into()],
        },
    );
    assert_eq!(l.blocked_keys(), 0);
    // The key is free again: its next event takes the fast path.
    read(&mut l, vec![ev(11, "a")], 11);
    assert_eq!(ids(&l.take_call(10, usize::MAX, 1)), vec![11]);
}

#[test]
fn a_park_staged_while_an_unblock_commits_keeps_the_key_blocked() {
    let mut l = lane_at(0, &["a"], LaneLimits::default());
    l.accept_empty_keys(vec!["a".into()]);
    let c = l
        .take_commit(&lease(), now(), Duration::from_secs(30))
        .unwrap();
    assert_eq!(c.check_keys, vec!["a".to_string()]);
    // Meanwhile the log brings an event of `a`: parked, since `a` is still blocked.
    l.accept_log(vec![ev(1, "a")], 1, now());
    l.commit_written(
        &c,
        CommitResult {
            unblocked: vec!["a".into()],
        },
    );
    assert_eq!(l.blocked_keys(), 1, "the staged park keeps it blocked");
    let c = commit(&mut l);
    assert_eq!(
        c.ensure_keys,
        vec!["a".to_string()],
        "and blocks it again in the store"
    );
    assert_eq!(c.new_rows[0].state, JobState::Pending);
}

#[test]
fn a_failed_commit_is_retried_with_what_came_after() {
    let mut l = lane();
    read(&mut l, vec![ev(1, "a"), ev(2, "b")], 2);
    let mut call = l.take_call(10, usize::MAX, 1).into_iter();
    l.complete(call.next().unwrap(), retry(), now());
    let c = l
        .take_commit(&lease(), now(), Duration::from_secs(30))
        .unwrap();
    assert_eq!(c.cursor, 1);
    l.commit_failed(c);
    l.complete(call.next().unwrap(), retry(), now());
    let c = commit(&mut l);
    assert_eq!(c.new_rows.len(), 2);
    assert_eq!(c.block_keys.len(), 2);
    assert_eq!(c.cursor, 2);
}

#[test]
fn a_released_job_goes_back_to_the_front_of_its_key() {
    let mut l = lane();
    read(&mut l, vec![ev(1, "a"), ev(2, "a")], 2);
    let j = l.take_call(10, usize::MAX, 1).pop().unwrap();
    l.complete(j, Decision::Released, now());
    assert_eq!(ids(&l.take_call(10, usize::MAX, 1)), vec![1]);
}

#[test]
fn a_call_respects_its_byte_budget_but_always_takes_one_job() {
    let mut l = lane();
    let mut big = ev(1, "a");
    big.event = "x".repeat(100);
    let mut small = ev(2, "b");
    small.event = "y".repeat(10);
    read(&mut l, vec![big, small], 2);
    assert_eq!(ids(&l.take_call(10, 50, 1)), vec![1]);
    assert_eq!(ids(&l.take_call(10, 50, 1)), vec![2]);
}

#[test]
fn an_aborted_log_job_gets_a_row_and_its_key_goes_on() {
    let mut l = lane();
    read(&mut l, vec![ev(1, "a"), ev(2, "a")], 2);
    let j = l.take_call(10, usize::MAX, 1).pop().unwrap();
    l.complete(
        j,
        Decision::Aborted {
            code: "http_400".into(),
            text: "bad".into(),
        },
        now(),
    );
    assert_eq!(ids(&l.take_call(10, usize::MAX, 1)), vec![2]);
    let c = commit(&mut l);
    assert_eq!(c.new_rows[0].state, JobState::Aborted);
    assert!(c.block_keys.is_empty() && c.ensure_keys.is_empty());
}

#[test]
fn a_skipped_job_finishes_like_a_delivered_one_and_frees_its_key() {
    let mut l = lane();
    read(&mut l, vec![ev(1, "a"), ev(2, "a")], 2);
    let j = l.take_call(10, usize::MAX, 1).pop().unwrap();
    l.complete(j, Decision::Skipped, now());
    let j = l.take_call(10, usize::MAX, 1).pop().unwrap();
    assert_eq!(j.event_id, 2, "the key goes on");
    l.complete(j, Decision::Skipped, now());
    let c = commit(&mut l);
    assert!(c.new_rows.is_empty(), "nothing to record but the cursor");
    assert_eq!(c.cursor, 2);
    assert!(l.is_drained());

    // A skipped job with a row (from a blocked key) is written as delivered.
    let mut l = lane_at(10, &["a"], LaneLimits::default());
    l.accept_rows(vec![RowJob {
        dataset: 1,
        event_id: 3,
        source_id: "s".into(),
        order_key: "a".into(),
        state: JobState::Failed,
        attempt: 1,
        first_attempt_at: Some(now()),
        user_key: "a".into(),
        message_id: "m3".into(),
        received_at: now(),
        event: "{}".into(),
    }]);
    let j = l.take_call(10, usize::MAX, 1).pop().unwrap();
    l.complete(j, Decision::Skipped, now());
    let c = commit(&mut l);
    let states: Vec<JobState> = c.row_updates.iter().map(|u| u.state).collect();
    assert_eq!(states, vec![JobState::Delivered]);
    assert_eq!(c.check_keys, vec!["a".to_string()]);
}

#[test]
fn a_filtered_job_finishes_without_an_attempt_and_frees_its_key() {
    let mut l = lane();
    read(&mut l, vec![ev(1, "a"), ev(2, "a")], 2);
    let j = l.take_call(10, usize::MAX, 1).pop().unwrap();
    l.complete(j, Decision::Filtered, now());
    let j = l.take_call(10, usize::MAX, 1).pop().unwrap();
    assert_eq!(j.event_id, 2, "the key goes on at once");
    l.complete(j, Decision::Delivered, now());
    let c = commit(&mut l);
    assert!(c.new_rows.is_empty() && c.row_updates.is_empty());
    assert_eq!(c.cursor, 2);
    assert!(l.is_drained());

    // One with a row (it waited behind a failed job) is finished, with no attempt recorded.
    let mut l = lane_at(10, &["a"], LaneLimits::default());
    l.accept_rows(vec![RowJob {
        dataset: 1,
        event_id: 3,
        source_id: "s".into(),
        order_key: "a".into(),
        state: JobState::Pending,
        attempt: 0,
        first_attempt_at: None,
        user_key: "a".into(),
        message_id: "m3".into(),
        received_at: now(),
        event: "{}".into(),
    }]);
    let j = l.take_call(10, usize::MAX, 1).pop().unwrap();
    l.complete(j, Decision::Filtered, now());
    let c = commit(&mut l);
    let updates: Vec<(JobState, i32, Option<OffsetDateTime>)> = c
        .row_updates
        .iter()
        .map(|u| (u.state, u.attempt_inc, u.attempted_at))
        .collect();
    assert_eq!(updates, vec![(JobState::Delivered, 0, None)]);
    assert_eq!(c.check_keys, vec!["a".to_string()], "the key may unblock");
}

#[test]
fn a_job_filtered_out_of_an_ordered_batch_is_finished_whatever_its_neighbours_become() {
    let mut l = lane();
    read(&mut l, vec![ev(1, "a"), ev(2, "a"), ev(3, "a")], 3);
    let mut call = l.take_call(10, usize::MAX, 10);
    assert_eq!(ids(&call), vec![1, 2, 3]);
    // The filter takes 2 out before the call; 1 then fails, and 3 waits behind it.
    let filtered = call.remove(1);
    l.complete(filtered, Decision::Filtered, now());
    let results: Vec<(Job, Decision)> = call
        .into_iter()
        .zip([retry(), Decision::Delivered])
        .collect();
    let taken = l.complete_call(results, now());
    assert_eq!(taken[1], Decision::Parked);
    let c = commit(&mut l);
    let rows: Vec<(i64, JobState)> = c.new_rows.iter().map(|r| (r.event_id, r.state)).collect();
    assert_eq!(rows, vec![(1, JobState::Failed), (3, JobState::Pending)]);
    assert_eq!(c.cursor, 3, "2 is finished, 1 and 3 have rows");
}

// Ordered batches: a call may carry a run of one key's jobs.

#[test]
fn an_ordered_batch_takes_a_run_of_each_keys_jobs_in_order() {
    let mut l = lane();
    read(
        &mut l,
        vec![ev(1, "a"), ev(2, "a"), ev(3, "b"), ev(4, "a")],
        4,
    );
    // Jobs read but not yet claimed stay behind.
    l.accept_log(vec![ev(5, "a")], 5, now());
    let call = l.take_call(10, usize::MAX, 10);
    assert_eq!(ids(&call), vec![1, 2, 4, 3], "a's run, then b");
    assert!(
        l.take_call(10, usize::MAX, 10).is_empty(),
        "one call per key at a time"
    );
    for (j, d) in call.into_iter().map(|j| (j, Decision::Delivered)) {
        l.complete_call(vec![(j, d)], now());
    }
    commit(&mut l);
    assert_eq!(ids(&l.take_call(10, usize::MAX, 10)), vec![5]);
}

#[test]
fn an_ordered_batch_respects_the_per_key_call_and_byte_limits() {
    let mut l = lane();
    read(&mut l, (1..=5).map(|i| ev(i, "a")).collect(), 5);
    assert_eq!(ids(&l.take_call(10, usize::MAX, 3)), vec![1, 2, 3]);

    let mut l = lane();
    let mut events: Vec<LogEvent> = (1..=3).map(|i| ev(i, "a")).collect();
    for e in &mut events {
        e.event = "x".repeat(40);
    }
    read(&mut l, events, 3);
    assert_eq!(
        ids(&l.take_call(10, 100, 10)),
        vec![1, 2],
        "80 bytes fit, 120 not"
    );
}

#[test]
fn in_an_ordered_batch_a_failure_parks_the_keys_later_jobs_whatever_their_outcome() {
    let mut l = lane();
    read(
        &mut l,
        vec![ev(1, "a"), ev(2, "a"), ev(3, "a"), ev(4, "b")],
        4,
    );
    let call = l.take_call(10, usize::MAX, 10);
    assert_eq!(ids(&call), vec![1, 2, 3, 4]);
    let given = [
        Decision::Delivered,
        retry(),
        Decision::Delivered,
        Decision::Delivered,
    ];
    let taken = l.complete_call(call.into_iter().zip(given).collect(), now());
    assert_eq!(
        taken,
        vec![
            Decision::Delivered,
            retry(),
            Decision::Parked,
            Decision::Delivered
        ],
        "3 was sent after 2, which must go again: it goes again after 2; b is unaffected"
    );
    let c = commit(&mut l);
    let rows: Vec<(i64, JobState, i32)> = c
        .new_rows
        .iter()
        .map(|r| (r.event_id, r.state, r.attempt))
        .collect();
    assert_eq!(
        rows,
        vec![(2, JobState::Failed, 1), (3, JobState::Pending, 0)],
        "the parked job spent no attempt"
    );
    assert_eq!(c.block_keys.len(), 1);
    assert_eq!(c.cursor, 4);
    assert!(l.is_drained());
}

#[test]
fn in_an_ordered_batch_a_throttle_parks_the_keys_later_jobs_too() {
    let mut l = lane();
    read(&mut l, vec![ev(1, "a"), ev(2, "a")], 2);
    let call = l.take_call(10, usize::MAX, 10);
    let throttled = Decision::Throttled {
        at: now() + time::Duration::seconds(5),
    };
    let taken = l.complete_call(
        call.into_iter()
            .zip([throttled.clone(), Decision::Delivered])
            .collect(),
        now(),
    );
    assert_eq!(taken, vec![throttled, Decision::Parked]);
}

#[test]
fn in_an_ordered_batch_an_abort_finishes_its_job_and_the_next_ones_stand() {
    let mut l = lane();
    read(&mut l, vec![ev(1, "a"), ev(2, "a"), ev(3, "a")], 3);
    let call = l.take_call(10, usize::MAX, 10);
    let abort = Decision::Aborted {
        code: "http_400".into(),
        text: "bad".into(),
    };
    let given = vec![Decision::Delivered, abort.clone(), retry()];
    let taken = l.complete_call(call.into_iter().zip(given.clone()).collect(), now());
    assert_eq!(taken, given);
    let c = commit(&mut l);
    let rows: Vec<(i64, JobState)> = c.new_rows.iter().map(|r| (r.event_id, r.state)).collect();
    assert_eq!(rows, vec![(2, JobState::Aborted), (3, JobState::Failed)]);
}

#[test]
fn jobs_of_an_ordered_batch_handed_back_keep_their_order() {
    let mut l = lane();
    read(&mut l, (1..=4).map(|i| ev(i, "a")).collect(), 4);
    let call = l.take_call(3, usize::MAX, 10);
    assert_eq!(ids(&call), vec![1, 2, 3]);
    // Not attempted (a 413 for the call): the later ones go back with it, whatever they say.
    let given = vec![Decision::Released, Decision::Delivered, retry()];
    let taken = l.complete_call(call.into_iter().zip(given).collect(), now());
    assert_eq!(taken, vec![Decision::Released; 3]);
    assert_eq!(ids(&l.take_call(10, usize::MAX, 10)), vec![1, 2, 3, 4]);
}

#[test]
fn jobs_handed_back_one_by_one_in_any_order_keep_their_order() {
    // Cancelling calls hands their jobs back in no particular order.
    let mut l = lane();
    read(&mut l, (1..=3).map(|i| ev(i, "a")).collect(), 3);
    let call = l.take_call(10, usize::MAX, 10);
    for j in call.into_iter().rev() {
        l.complete(j, Decision::Released, now());
    }
    assert_eq!(ids(&l.take_call(10, usize::MAX, 10)), vec![1, 2, 3]);
}
