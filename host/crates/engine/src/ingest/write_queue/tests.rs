use std::sync::Arc;

use super::{Bounds, PER_WORKSPACE, Queued, WriteQueue};

/// A request: its workspace, a number to follow it by, its events (one byte each), and
/// whether it was abandoned.
#[derive(Debug, Clone, PartialEq)]
struct R(Arc<str>, u32, usize, bool);

impl Queued for R {
    fn workspace(&self) -> &Arc<str> {
        &self.0
    }
    fn size(&self) -> (usize, usize) {
        (self.2, self.2)
    }
    fn abandoned(&self) -> bool {
        self.3
    }
}

fn r(workspace: &str, n: u32, events: usize) -> R {
    R(Arc::from(workspace), n, events, false)
}

fn abandoned(workspace: &str, n: u32) -> R {
    R(Arc::from(workspace), n, 10, true)
}

fn queue() -> WriteQueue<R> {
    queue_of_at_most(8)
}

fn queue_of_at_most(max_in_flight: usize) -> WriteQueue<R> {
    WriteQueue::new(
        Bounds {
            events: 100,
            bytes: 1000,
        },
        max_in_flight,
    )
}

fn numbers(group: &[R]) -> Vec<u32> {
    group.iter().map(|r| r.1).collect()
}

#[test]
fn a_group_is_one_workspace_s_requests_in_arrival_order() {
    let mut q = queue();
    for n in 0..5 {
        q.push(r(if n % 2 == 0 { "a" } else { "b" }, n, 10));
    }
    // The workspace waiting longest first, each group one workspace's.
    let (group, workspace) = q.next_group().expect("a group");
    assert_eq!((numbers(&group), &*workspace), (vec![0, 2, 4], "a"));
    let (group, workspace) = q.next_group().expect("a group");
    assert_eq!((numbers(&group), &*workspace), (vec![1, 3], "b"));
    assert!(q.is_empty());
    assert!(q.next_group().is_none());
}

#[test]
fn a_workspace_at_its_limit_in_flight_does_not_hold_up_another() {
    let mut q = queue();
    // The stuck workspace's groups: its first request, then its client's retry.
    for n in 0..PER_WORKSPACE as u32 {
        q.push(r("stuck", n, 10));
        let (group, _) = q.next_group().expect("a group of the stuck workspace");
        assert_eq!(numbers(&group), [n]);
    }
    q.push(r("stuck", 10, 10));
    q.push(r("other", 20, 10));
    let (group, workspace) = q.next_group().expect("the other workspace's group");
    assert_eq!((numbers(&group), &*workspace), (vec![20], "other"));
    // The stuck workspace's request waits for one of its groups to finish, and then goes.
    assert!(q.next_group().is_none());
    assert!(!q.is_empty());
    q.finished("stuck");
    let (group, _) = q.next_group().expect("the stuck workspace's next group");
    assert_eq!(numbers(&group), [10]);
}

#[test]
fn a_group_is_cut_at_its_bounds_and_the_rest_goes_next_in_order() {
    let mut q = queue();
    for n in 0..4 {
        q.push(r("a", n, 40));
    }
    let (group, _) = q.next_group().expect("a group");
    assert_eq!(numbers(&group), [0, 1]);
    let (group, _) = q.next_group().expect("a second group in flight");
    assert_eq!(numbers(&group), [2, 3]);
}

#[test]
fn a_request_over_the_bounds_goes_alone() {
    let mut q = queue();
    q.push(r("a", 0, 500));
    q.push(r("a", 1, 10));
    let (group, _) = q.next_group().expect("a group");
    assert_eq!(numbers(&group), [0]);
    let (group, _) = q.next_group().expect("the next");
    assert_eq!(numbers(&group), [1]);
}

#[test]
fn finished_groups_free_their_places_once_each() {
    let mut q = queue();
    for n in 0..3 {
        q.push(r("a", n, 60));
    }
    assert!(q.next_group().is_some());
    assert!(q.next_group().is_some());
    assert!(q.next_group().is_none(), "two groups of `a` are in flight");
    q.finished("a");
    q.finished("a");
    q.finished("a"); // one too many: no place below zero
    let (group, _) = q.next_group().expect("a place is free");
    assert_eq!(numbers(&group), [2]);
    q.push(r("a", 3, 60));
    q.push(r("a", 4, 60));
    assert!(q.next_group().is_some());
    assert!(q.next_group().is_none(), "two in flight again, not three");
}

#[test]
fn abandoned_requests_are_dropped_not_written() {
    let mut q = queue();
    q.push(abandoned("a", 0));
    q.push(r("a", 1, 10));
    q.push(abandoned("a", 2));
    q.push(abandoned("b", 3));
    q.push(r("c", 4, 10));
    let (group, workspace) = q.next_group().expect("a group");
    assert_eq!((numbers(&group), &*workspace), (vec![1], "a"));
    // `b` has nothing left to write: no group, no place taken; `c` goes.
    let (group, workspace) = q.next_group().expect("c's group");
    assert_eq!((numbers(&group), &*workspace), (vec![4], "c"));
    assert!(q.is_empty());
    q.finished("a");
    q.finished("c");
    q.push(r("b", 5, 10));
    q.push(r("b", 6, 10));
    let (group, _) = q.next_group().expect("b's group");
    assert_eq!(numbers(&group), [5, 6]);
}

#[test]
fn the_writer_has_at_most_its_groups_on_their_way() {
    let mut q = queue_of_at_most(2);
    q.push(r("a", 0, 10));
    q.push(r("b", 1, 10));
    q.push(r("c", 2, 10));
    assert!(q.next_group().is_some());
    assert!(q.next_group().is_some());
    assert!(
        q.next_group().is_none(),
        "two groups on their way, the most"
    );
    assert!(!q.is_idle());
    q.finished("a");
    let (group, workspace) = q.next_group().expect("a place is free");
    assert_eq!((numbers(&group), &*workspace), (vec![2], "c"));
    q.finished("b");
    q.finished("c");
    assert!(q.is_idle());
}
