//! `store::read` and `read_cache`: a lane's log reads, bounded, skipping parked rows, shared
//! between the lanes of a source and handed over by ingest.

use libtest_mimic::Trial;
use sluice_store::{LaneId, OrderingScope, ReadFrom, ReadLimits};

use crate::fixtures::*;
use crate::harness::{Db, trial};

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "read_is_bounded_by_count_and_bytes_sees_only_its_sources_and_reports_the_head",
            read_bounds,
        ),
        trial(
            "read_skips_events_a_previous_owner_parked",
            read_skips_parked,
        ),
        trial(
            "read_lanes_of_one_source_share_a_read_and_parked_or_mixed_reads_go_to_the_store",
            read_shared,
        ),
        trial(
            "read_a_lane_at_the_head_is_handed_what_ingest_commits_until_another_host_writes",
            read_handed_over,
        ),
    ]
}

/// Reads of at most ten events.
const TEN: ReadLimits = ReadLimits {
    max_events: 10,
    max_bytes: 1 << 20,
};

/// The ids a read returned.
fn ids(read: &sluice_store::LogRead) -> Vec<i64> {
    read.events.iter().map(|e| e.id).collect()
}

/// `lane`'s read of `links` above `after` (rows up to `skip` may be parked).
async fn read_at(
    store: &sluice_store::Store,
    lane: &LaneId,
    links: &[sluice_core::catalog::Link],
    after: i64,
    skip: i64,
    limits: ReadLimits,
) -> sluice_store::LogRead {
    store
        .log_read(lane, links, after, skip, limits)
        .await
        .unwrap()
}

async fn read_bounds(db: Db) {
    db.store
        .lanes_sync(&[spec("hook", &["web", "app"], OrderingScope::User)])
        .await
        .unwrap();
    let l: LaneId = lane("hook");
    let sources = links(&["web", "app"]);
    append(
        &db.store,
        "web",
        t0(),
        vec![event("a", "1", 100), event("b", "2", 100)],
    )
    .await;
    append(&db.store, "other", t0(), vec![event("c", "3", 100)]).await;
    append(
        &db.store,
        "app",
        t0(),
        vec![event("a", "4", 1000), event("d", "5", 100)],
    )
    .await;

    let all = read_at(&db.store, &l, &sources, 0, 0, TEN).await;
    assert_eq!(ids(&all), vec![1, 2, 4, 5]);
    assert!(all.exhausted);
    assert_eq!(
        all.read_to, 5,
        "up to the head, past the other source's event"
    );

    let counted = read_at(
        &db.store,
        &l,
        &sources,
        0,
        0,
        ReadLimits {
            max_events: 3,
            max_bytes: 1 << 20,
        },
    )
    .await;
    assert_eq!(ids(&counted), vec![1, 2, 4]);
    assert!(!counted.exhausted);
    assert_eq!(counted.read_to, 4);

    // The byte budget cuts after the event that crosses it; the first event always comes.
    let small = event("a", "1", 100).json.len();
    let budget = small + small / 2;
    let by_bytes = read_at(
        &db.store,
        &l,
        &sources,
        0,
        0,
        ReadLimits {
            max_events: 10,
            max_bytes: budget,
        },
    )
    .await;
    assert_eq!(ids(&by_bytes), vec![1, 2]);
    assert!(!by_bytes.exhausted);
    let one = read_at(
        &db.store,
        &l,
        &sources,
        2,
        0,
        ReadLimits {
            max_events: 10,
            max_bytes: 1,
        },
    )
    .await;
    assert_eq!(ids(&one), vec![4]);

    let none = read_at(&db.store, &l, &sources, 5, 0, TEN).await;
    assert!(none.events.is_empty() && none.exhausted);
    assert_eq!(none.read_to, 5);
}

async fn read_skips_parked(db: Db) {
    db.store
        .lanes_sync(&[spec("hook", &["web"], OrderingScope::User)])
        .await
        .unwrap();
    append_users(&db.store, "web", &[("a", "1"), ("a", "2"), ("b", "3")]).await;
    // A previous owner parked event 2 (its key was blocked), then died before moving its cursor.
    sqlx::query(
        "INSERT INTO job_state (dataset, workspace_id, destination_id, event_id, source_id, order_key,
                                state, next_attempt_at)
         VALUES (1, 'acme', 'hook', 2, 'web', 'a', 'pending', now())",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let sources = links(&["web"]);
    let limits = TEN;
    let read = read_at(&db.store, &lane("hook"), &sources, 0, 3, limits).await;
    assert_eq!(ids(&read), vec![1, 3]);
    // Beyond what the previous owner read, nothing is skipped.
    let read = read_at(&db.store, &lane("hook"), &sources, 0, 1, limits).await;
    assert_eq!(ids(&read), vec![1, 2, 3]);
}

/// `read_cache`: the second lane of a source is served what the first read. The proof that it
/// did not reach the store: an event removed behind the store's back after the first lane's
/// read still comes, while a read the cache must not serve no longer sees it.
async fn read_shared(db: Db) {
    db.store
        .lanes_sync(&[
            spec("h1", &["web"], OrderingScope::User),
            spec("h2", &["web"], OrderingScope::User),
            spec("h3", &["web", "app"], OrderingScope::User),
        ])
        .await
        .unwrap();
    let web = links(&["web"]);
    let limits = TEN;
    append_users(&db.store, "web", &[("a", "1"), ("b", "2")]).await;
    // Both lanes read from the store first: a source read by one destination is not kept.
    let first = read_at(&db.store, &lane("h1"), &web, 0, 0, limits).await;
    let second = read_at(&db.store, &lane("h2"), &web, 0, 0, limits).await;
    assert_eq!((ids(&first), ids(&second)), (vec![1, 2], vec![1, 2]));

    // Written by another host: this one's ingest hands nothing over (`read_handed_over`), and
    // h1 reads the store.
    let writer = sluice_store::Store::connect(&db.url).await.unwrap();
    append_users(&writer, "web", &[("a", "3"), ("c", "4")]).await;
    append_users(&writer, "other", &[("a", "5")]).await;
    let ahead = read_at(&db.store, &lane("h1"), &web, 2, 0, limits).await;
    assert_eq!(ids(&ahead), vec![3, 4]);
    assert_eq!(ahead.read_to, 5);
    sqlx::query("DELETE FROM events WHERE id = 4")
        .execute(&db.pool)
        .await
        .unwrap();

    // h2 is served h1's read: event 4 too, with the same stopping point.
    let shared = read_at(&db.store, &lane("h2"), &web, 2, 0, limits).await;
    assert_eq!(ids(&shared), vec![3, 4], "served from h1's read");
    assert_eq!(shared.read_to, 5);
    assert!(
        !shared.exhausted,
        "the head may have moved on: the lane reads again"
    );
    // Cut by count, as the store cuts.
    let cut = read_at(
        &db.store,
        &lane("h2"),
        &web,
        2,
        0,
        ReadLimits {
            max_events: 1,
            max_bytes: 1 << 20,
        },
    )
    .await;
    assert_eq!((ids(&cut), cut.read_to), (vec![3], 3));

    // Rows a previous owner may have parked are per destination: the store answers.
    let parked = read_at(&db.store, &lane("h2"), &web, 2, 4, limits).await;
    assert_eq!(ids(&parked), vec![3], "read from the store");
    // So does a lane of two sources.
    let mixed = read_at(
        &db.store,
        &lane("h3"),
        &links(&["web", "app"]),
        2,
        0,
        limits,
    )
    .await;
    assert_eq!(ids(&mixed), vec![3]);
    // Past the shared stretch, the store again, and the lane sees the head.
    let caught_up = read_at(&db.store, &lane("h2"), &web, 5, 0, limits).await;
    assert!(caught_up.events.is_empty() && caught_up.exhausted);
    assert_eq!(caught_up.read_to, 5);
}

/// `read_cache::feed`: a lane that has read its source up to the workspace's head is handed
/// what this host's ingest commits next, as the store would return it; a write by another host
/// in between breaks the chain and the lane reads the store. The proof a read did not reach the
/// store: an event removed behind the store's back still comes. On Citus ingest hands nothing
/// over (its steps do not return the heads before), and every read is the store's.
async fn read_handed_over(db: Db) {
    let fed = !db.store.is_distributed();
    db.store
        .lanes_sync(&[spec("hook", &["web"], OrderingScope::User)])
        .await
        .unwrap();
    let web = links(&["web"]);
    let limits = TEN;
    append_users(&db.store, "web", &[("a", "1")]).await;
    let first = read_at(&db.store, &lane("hook"), &web, 0, 0, limits).await;
    assert_eq!(
        (ids(&first), first.read_to, first.exhausted),
        (vec![1], 1, true)
    );

    // One group: two events of the lane's source (received at a time finer than the store
    // keeps) and one of another source of the workspace.
    let at = t0() + time::Duration::nanoseconds(123_456_789);
    let web_request = request("web", at, vec![event("b", "2", 50), event("a", "3", 50)]);
    let app_request = request("app", at, vec![event("c", "4", 10)]);
    db.store
        .event_append(&[&web_request, &app_request], Some(DEDUP), None)
        .await
        .unwrap();
    // What the store holds, read by another host (its own reads, nothing handed over).
    let other = sluice_store::Store::connect(&db.url).await.unwrap();
    let stored = read_at(&other, &lane("hook"), &web, 1, 0, limits).await;
    assert_eq!((ids(&stored), stored.read_to), (vec![2, 3], 4));
    if fed {
        sqlx::query("DELETE FROM events WHERE id = 3")
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let handed = read_at(&db.store, &lane("hook"), &web, 1, 0, limits).await;
    let from = if fed {
        ReadFrom::Ingest
    } else {
        ReadFrom::Store
    };
    assert_eq!(handed.from, from, "handed over by ingest");
    let fields = |r: &sluice_store::LogRead| {
        r.events
            .iter()
            .map(|e| {
                (
                    e.dataset,
                    e.id,
                    e.source_id.clone(),
                    e.user_key.clone(),
                    e.message_id.clone(),
                    e.received_at,
                    e.event.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    if fed {
        assert_eq!(
            fields(&handed),
            fields(&stored),
            "as the store returns them"
        );
        assert_eq!(handed.read_to, 4, "up to the workspace's head");
        assert!(!handed.exhausted, "the lane reads the store once more");
    }

    // Another host writes, then this one: the chain is broken, and the lane reads the store.
    append_users(&other, "web", &[("d", "5")]).await;
    append_users(&db.store, "web", &[("e", "6")]).await;
    let next = read_at(&db.store, &lane("hook"), &web, 4, 0, limits).await;
    assert_eq!(next.from, ReadFrom::Store, "read from the store");
    assert_eq!(
        (ids(&next), next.read_to, next.exhausted),
        (vec![5, 6], 6, true)
    );
}
