//! `read_cache`'s rules: what is kept, served, waited for and handed over by ingest.

use super::*;
use futures_util::FutureExt;
use time::OffsetDateTime;

fn event(id: i64, bytes: usize) -> LogEvent {
    LogEvent {
        dataset: 1,
        id,
        source_id: "src".into(),
        user_key: format!("u{id}"),
        message_id: format!("m{id}"),
        received_at: OffsetDateTime::UNIX_EPOCH,
        event: "x".repeat(bytes),
    }
}

fn read(ids: &[i64], read_to: i64) -> LogRead {
    LogRead {
        events: ids.iter().map(|&id| event(id, 10)).collect(),
        read_to,
        exhausted: true,
        from: ReadFrom::Store,
    }
}

const ALL: ReadLimits = ReadLimits {
    max_events: 1000,
    max_bytes: 1 << 20,
};

fn ids(r: &LogRead) -> Vec<i64> {
    r.events.iter().map(|e| e.id).collect()
}

/// `destination` read `(after, read.read_to]` of `source` from the store.
fn store_read(cache: &Arc<ReadCache>, source: &str, destination: &str, after: i64, read: &LogRead) {
    match cache.lookup("ws", source, destination, after, ALL, false) {
        Lookup::Read(ticket) => ticket.record(after, read),
        _ => panic!("expected a store read at {after}"),
    }
}

fn served(
    cache: &Arc<ReadCache>,
    source: &str,
    destination: &str,
    after: i64,
    limits: ReadLimits,
) -> Option<LogRead> {
    match cache.lookup("ws", source, destination, after, limits, false) {
        Lookup::Served(read) => Some(read),
        _ => None,
    }
}

#[test]
fn a_source_read_by_one_destination_is_not_kept() {
    let cache = Arc::new(ReadCache::default());
    store_read(&cache, "src", "d1", 0, &read(&[2, 5], 9));
    store_read(&cache, "src", "d1", 9, &read(&[12], 15));
    assert!(served(&cache, "src", "d1", 0, ALL).is_none());
    assert!(served(&cache, "src", "d1", 9, ALL).is_none());
    assert_eq!(cache.served(), 0);
}

#[test]
fn a_second_destination_is_served_what_the_first_read_after_it() {
    let cache = Arc::new(ReadCache::default());
    store_read(&cache, "src", "d1", 0, &read(&[2, 5], 9));
    // d2 reads from the store (nothing kept yet) and makes the source shared.
    store_read(&cache, "src", "d2", 0, &read(&[2, 5], 9));
    store_read(&cache, "src", "d1", 9, &read(&[12, 14], 20));
    let shared = served(&cache, "src", "d2", 9, ALL).expect("(9, 20] is kept");
    assert_eq!(ids(&shared), [12, 14]);
    assert_eq!(
        shared.read_to, 20,
        "everything of the source up to 20 was seen"
    );
    assert!(!shared.exhausted, "the head may be further on");
    assert_eq!(shared.from, ReadFrom::Shared);
    // From the middle of the stretch, and nothing past its end.
    let middle = served(&cache, "src", "d2", 12, ALL).expect("kept");
    assert_eq!(ids(&middle), [14]);
    assert!(served(&cache, "src", "d2", 20, ALL).is_none());
    // Another source is not served.
    assert!(served(&cache, "other", "d2", 9, ALL).is_none());
}

#[test]
fn a_served_read_is_cut_like_the_stores() {
    let cache = Arc::new(ReadCache::default());
    store_read(&cache, "src", "d1", 0, &read(&[], 0));
    store_read(&cache, "src", "d2", 0, &read(&[1, 2, 3, 4], 10));
    let limits = |max_events, max_bytes| ReadLimits {
        max_events,
        max_bytes,
    };
    let by_count = served(&cache, "src", "d1", 0, limits(2, 1 << 20)).expect("kept");
    assert_eq!(ids(&by_count), [1, 2]);
    assert_eq!(
        by_count.read_to, 2,
        "cut: only as far as the last event returned"
    );
    // 10 bytes each: the third starts at 20 bytes, at the budget.
    let by_bytes = served(&cache, "src", "d1", 0, limits(100, 20)).expect("kept");
    assert_eq!(ids(&by_bytes), [1, 2]);
    assert_eq!(by_bytes.read_to, 2);
    // The first event always comes, however large.
    let one = served(&cache, "src", "d1", 0, limits(100, 1)).expect("kept");
    assert_eq!(ids(&one), [1]);
}

#[test]
fn a_read_that_does_not_adjoin_starts_the_stretch_again_unless_it_lies_behind() {
    let cache = Arc::new(ReadCache::default());
    store_read(&cache, "src", "d1", 0, &read(&[], 0));
    store_read(&cache, "src", "d2", 100, &read(&[105], 110));
    // Behind what is kept: ignored.
    store_read(&cache, "src", "d1", 0, &read(&[3], 50));
    assert!(served(&cache, "src", "d1", 0, ALL).is_none());
    let kept = served(&cache, "src", "d1", 100, ALL).expect("kept");
    assert_eq!(ids(&kept), [105]);
    // Ahead, with a gap: the stretch restarts there (the gap was never seen).
    store_read(&cache, "src", "d2", 200, &read(&[201], 210));
    assert!(served(&cache, "src", "d1", 100, ALL).is_none());
    let ahead = served(&cache, "src", "d1", 200, ALL).expect("kept");
    assert_eq!(ids(&ahead), [201]);
}

#[test]
fn the_stretch_keeps_at_most_its_bytes_from_the_front() {
    let cache = Arc::new(ReadCache::default());
    store_read(&cache, "src", "d1", 0, &read(&[], 0));
    let big = MAX_SEGMENT_BYTES / 4 + 1;
    let events: Vec<LogEvent> = (1..=5).map(|id| event(id, big)).collect();
    let whole = LogRead {
        events,
        read_to: 5,
        exhausted: true,
        from: ReadFrom::Store,
    };
    store_read(&cache, "src", "d2", 0, &whole);
    // Four of them do not fit: the first two went, and the stretch starts after them.
    let unbounded = ReadLimits {
        max_events: 1000,
        max_bytes: usize::MAX,
    };
    assert!(served(&cache, "src", "d1", 0, unbounded).is_none());
    assert!(served(&cache, "src", "d1", 1, unbounded).is_none());
    let rest = served(&cache, "src", "d1", 2, unbounded).expect("kept");
    assert_eq!(ids(&rest), [3, 4, 5]);
}

/// What ingest committed for workspace "ws": events by source.
fn commit(cache: &ReadCache, before: i64, after: i64, by_source: &[(&str, &[i64])]) -> Vec<String> {
    let sources: Vec<&str> = by_source.iter().map(|(s, _)| *s).collect();
    let mut asked = Vec::new();
    cache.feed("ws", before, after, &sources, |source| {
        asked.push(source.to_owned());
        let ids = by_source.iter().find(|(s, _)| *s == source).unwrap().1;
        ids.iter().map(|&id| event(id, 10)).collect()
    });
    asked
}

fn kept_bytes(cache: &ReadCache, source: &str) -> usize {
    let segments = cache.segments.lock().unwrap();
    let key = Key {
        workspace: "ws".into(),
        source: source.into(),
    };
    segments.by_source.get(&key).map_or(0, |s| s.bytes)
}

#[test]
fn ingest_hands_a_stretch_read_up_to_the_head_the_events_it_committed() {
    let cache = Arc::new(ReadCache::default());
    // One destination, caught up at the head (9): nothing kept, but the stretch ends there.
    store_read(&cache, "src", "d1", 0, &read(&[2, 5], 9));
    let asked = commit(&cache, 9, 15, &[("src", &[12, 14]), ("app", &[13])]);
    assert_eq!(
        asked,
        ["src"],
        "events are copied only for a stretch at the head"
    );
    let handed = served(&cache, "src", "d1", 9, ALL).expect("handed over by ingest");
    assert_eq!(ids(&handed), [12, 14]);
    assert_eq!(
        handed.read_to, 15,
        "every event of the workspace up to 15 is known"
    );
    assert!(
        !handed.exhausted,
        "a served read never claims the head: the lane reads the store once more"
    );
    assert_eq!(handed.from, ReadFrom::Ingest);
    // A source no lane read is not kept.
    assert!(served(&cache, "app", "d2", 9, ALL).is_none());
    // The next commit carries on from 15.
    commit(&cache, 15, 20, &[("src", &[17])]);
    let next = served(&cache, "src", "d1", 15, ALL).expect("handed over");
    assert_eq!((ids(&next), next.read_to), (vec![17], 20));
    assert_eq!(
        next.from,
        ReadFrom::Ingest,
        "one stretch handed over by two commits"
    );
    // A store read beyond what was handed over: a read starting there is another lane's.
    store_read(&cache, "src", "d2", 20, &read(&[22], 25));
    let after_feed = served(&cache, "src", "d1", 20, ALL).expect("d2's read");
    assert_eq!(
        (ids(&after_feed), after_feed.from),
        (vec![22], ReadFrom::Shared)
    );
    let from_fed = served(&cache, "src", "d2", 15, ALL).expect("still kept");
    assert_eq!(
        (ids(&from_fed), from_fed.from),
        (vec![17, 22], ReadFrom::Ingest)
    );
}

#[test]
fn ingest_hands_nothing_over_past_a_gap_or_to_another_workspace() {
    let cache = Arc::new(ReadCache::default());
    store_read(&cache, "src", "d1", 0, &read(&[2], 9));
    // Another host wrote 10: this commit's events start after a head the lane never saw.
    let asked = commit(&cache, 10, 15, &[("src", &[12])]);
    assert!(asked.is_empty());
    assert!(served(&cache, "src", "d1", 9, ALL).is_none());
    // The same source name in another workspace is another stretch.
    cache.feed("ws2", 9, 15, &["src"], |_| vec![event(12, 10)]);
    assert!(served(&cache, "src", "d1", 9, ALL).is_none());
    assert_eq!(cache.served(), 0);
}

#[test]
fn a_source_with_one_destination_keeps_only_what_its_lane_has_not_passed() {
    let cache = Arc::new(ReadCache::default());
    store_read(&cache, "src", "d1", 0, &read(&[], 9));
    commit(&cache, 9, 15, &[("src", &[12, 14])]);
    assert_eq!(kept_bytes(&cache, "src"), 20);
    served(&cache, "src", "d1", 9, ALL).expect("handed over");
    commit(&cache, 15, 20, &[("src", &[17])]);
    // Reading from 15 drops 12 and 14: no other lane of this host reads the source.
    let next = served(&cache, "src", "d1", 15, ALL).expect("handed over");
    assert_eq!(ids(&next), [17]);
    assert_eq!(kept_bytes(&cache, "src"), 10);
    // A read from the store past it drops the rest.
    store_read(&cache, "src", "d1", 20, &read(&[], 25));
    assert_eq!(kept_bytes(&cache, "src"), 0);
    assert!(served(&cache, "src", "d1", 20, ALL).is_none());
}

#[test]
fn a_read_in_flight_is_waited_for_by_the_lanes_at_or_past_its_start() {
    let cache = Arc::new(ReadCache::default());
    let Lookup::Read(first) = cache.lookup("ws", "src", "d1", 10, ALL, true) else {
        panic!("the first read goes to the store");
    };
    // Behind its start: the read in flight will not cover it.
    assert!(matches!(
        cache.lookup("ws", "src", "d3", 5, ALL, true),
        Lookup::Read(_)
    ));
    let Lookup::Wait(done) = cache.lookup("ws", "src", "d2", 12, ALL, true) else {
        panic!("d2 waits for d1's read");
    };
    let mut done = Box::pin(done);
    assert!(done.as_mut().now_or_never().is_none(), "still reading");
    first.record(10, &read(&[11, 13, 15], 20));
    assert!(done.now_or_never().is_some(), "woken by the record");
    let shared = served(&cache, "src", "d2", 12, ALL).expect("served after waiting");
    assert_eq!(ids(&shared), [13, 15]);
    assert_eq!(shared.read_to, 20);
}

#[test]
fn a_read_that_fails_lets_its_waiters_go_and_read_themselves() {
    let cache = Arc::new(ReadCache::default());
    let Lookup::Read(first) = cache.lookup("ws", "src", "d1", 0, ALL, true) else {
        panic!("the first read goes to the store");
    };
    let Lookup::Wait(done) = cache.lookup("ws", "src", "d2", 0, ALL, true) else {
        panic!("d2 waits");
    };
    drop(first);
    assert!(
        done.now_or_never().is_some(),
        "woken when the read is dropped"
    );
    assert!(matches!(
        cache.lookup("ws", "src", "d2", 0, ALL, true),
        Lookup::Read(_)
    ));
}
