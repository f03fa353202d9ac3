//! `store::append`: ids, dedup, the ingest lock.

use std::time::Duration;

use libtest_mimic::Trial;
use sluice_store::ingest_lock::{INGEST_LOCK, workspace_key};

use crate::fixtures::*;
use crate::harness::{Db, trial};

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "append_gives_each_request_increasing_ids_in_order_and_moves_the_head",
            consecutive_ids,
        ),
        trial(
            "append_drops_a_message_id_seen_within_the_window_per_source",
            dedup,
        ),
        trial(
            "a_group_of_two_workspaces_moves_each_head_to_the_last_id_it_kept",
            heads_of_a_mixed_group,
        ),
        trial(
            "append_without_a_dedup_window_keeps_resends_and_still_drops_repeats_in_the_group",
            no_dedup_window,
        ),
        trial(
            "append_finds_dedup_keys_recorded_before_they_carried_their_workspace",
            dedup_legacy_keys,
        ),
        trial("dedup_two_hosts_find_each_others_keys", dedup_across_hosts),
        trial(
            "dedup_concurrent_writers_of_one_host_store_each_message_id_once",
            dedup_concurrent_writers,
        ),
        trial(
            "dedup_a_host_with_its_memory_full_records_keys_one_by_one",
            dedup_memory_full,
        ),
        trial(
            "dedup_a_host_drops_its_memory_when_the_store_is_behind_it",
            dedup_memory_ahead_of_the_store,
        ),
        trial(
            "dedup_prepare_creates_the_next_partition_before_ingest_needs_it",
            dedup_prepare,
        ),
        trial(
            "append_waits_for_its_workspaces_lock_so_ids_follow_commit_order_and_other_workspaces_go_on",
            lock_orders_commits,
        ),
        trial(
            "append_and_a_dataset_rotation_wait_for_each_other",
            a_rotation_waits_for_ingest_in_flight_and_holds_new_ingest_back,
        ),
    ]
}

async fn consecutive_ids(db: Db) {
    let a = request(
        "web",
        t0(),
        vec![event("u1", "a1", 5), event("u2", "a2", 5)],
    );
    let b = request(
        "app",
        t0(),
        vec![
            event("u1", "b1", 5),
            event("u3", "b2", 5),
            event("u1", "b3", 5),
        ],
    );
    let out = db
        .store
        .event_append(&[&a, &b], Some(DEDUP), None)
        .await
        .unwrap();
    assert_eq!(out[0].first_id(), Some(1));
    assert_eq!(out[0].accepted, 2);
    assert_eq!(out[1].first_id(), Some(3));
    assert_eq!(out[1].accepted, 3);
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, source_id, message_id FROM events ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let got: Vec<(i64, &str, &str)> = rows
        .iter()
        .map(|(i, s, m)| (*i, s.as_str(), m.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "web", "a1"),
            (2, "web", "a2"),
            (3, "app", "b1"),
            (4, "app", "b2"),
            (5, "app", "b3")
        ]
    );
    let head: i64 = sqlx::query_scalar("SELECT last_id FROM ingest_head")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(head, 5);
    // The event is stored exactly as given.
    let text: String = sqlx::query_scalar("SELECT event FROM events WHERE id = 3")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(text, event("u1", "b1", 5).json);
}

async fn dedup(db: Db) {
    let first = append_users(&db.store, "web", &[("u", "m1"), ("u", "m2"), ("u", "m1")]).await;
    assert_eq!(
        (first.accepted, first.duplicates),
        (2, 1),
        "a repeat inside one request"
    );
    let again = append_users(&db.store, "web", &[("u", "m2"), ("u", "m3")]).await;
    assert_eq!(
        (again.accepted, again.duplicates),
        (1, 1),
        "a resend within the window"
    );
    let other_source = append_users(&db.store, "app", &[("u", "m1")]).await;
    assert_eq!(other_source.accepted, 1, "dedup is per source");
    // Past the window, the same messageId is new again.
    let later = t0() + time::Duration::hours(2);
    let after = append(&db.store, "web", later, vec![event("u", "m1", 5)]).await;
    assert_eq!(after.accepted, 1);
    // Expiry drops whole partitions.
    db.store.dedup_expire(DEDUP, later).await.unwrap();
    // This host's memory keeps only that key too (plain PostgreSQL; Citus keeps none).
    let kept = if db.store.is_distributed() { 0 } else { 1 };
    assert_eq!(db.store.dedup_memory_stats().0, kept);
    assert_eq!(
        recorded_keys(&db).await,
        1,
        "only the key written after the window is left"
    );
}

/// One group, two workspaces, interleaved, with a repeat inside the group and a resend of an
/// earlier group: the new events take ids in group order, each workspace's head moves to the
/// last id it kept (not the group's last), and NOTIFY is sent only for a group with new events.
async fn heads_of_a_mixed_group(db: Db) {
    // A request of workspace `ws`, from its source `<ws>-web`, one user.
    let in_ws = |ws: &str, messages: &[&str]| {
        let events = messages.iter().map(|m| event("u", m, 5)).collect();
        let mut r = request(&format!("{ws}-web"), t0(), events);
        r.workspace_id = ws.into();
        r
    };
    db.store
        .event_append(&[&in_ws("beta", &["old"])], Some(DEDUP), None)
        .await
        .unwrap();
    let a1 = in_ws("alpha", &["a1", "a2"]);
    let b1 = in_ws("beta", &["old", "b1"]);
    let a2 = in_ws("alpha", &["a2", "a3"]);
    let b2 = in_ws("beta", &["b2", "b1"]);
    let mut listener = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    listener
        .listen(sluice_store::notify::EVENTS_CHANNEL)
        .await
        .unwrap();
    let out = db
        .store
        .event_append(&[&a1, &b1, &a2, &b2], Some(DEDUP), Some("x alpha beta"))
        .await
        .unwrap();
    let got: Vec<(usize, usize, Vec<i64>)> = out
        .iter()
        .map(|o| (o.accepted, o.duplicates, o.ids.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (2, 0, vec![2, 3]),
            (1, 1, vec![4]),
            (1, 1, vec![5]),
            (1, 1, vec![6]),
        ],
        "`old` was seen in the window, a2 and b1 earlier in the group"
    );
    let heads: Vec<(String, i64)> =
        sqlx::query_as("SELECT workspace_id, last_id FROM workspace_heads ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(heads, vec![("alpha".into(), 5), ("beta".into(), 6)]);
    let note = listener.recv().await.unwrap();
    assert_eq!(note.payload(), "x alpha beta");
    // A group with nothing new moves no head and sends nothing.
    let out = db
        .store
        .event_append(&[&a1], Some(DEDUP), Some("resend"))
        .await
        .unwrap();
    assert_eq!((out[0].accepted, out[0].duplicates), (0, 2));
    db.store
        .event_append(&[&in_ws("beta", &["b3"])], Some(DEDUP), Some("next"))
        .await
        .unwrap();
    let note = listener.recv().await.unwrap();
    assert_eq!(note.payload(), "next", "the resend notified nobody");
}

/// A zero window turns dedup off: nothing is probed or recorded, a resend is stored again, and
/// a repeat inside one group is still dropped.
async fn no_dedup_window(db: Db) {
    let off = sluice_store::Dedup {
        window: Duration::ZERO,
    };
    let r = request("web", t0(), vec![event("u", "m1", 5), event("u", "m1", 5)]);
    let first = db.store.event_append(&[&r], Some(off), None).await.unwrap();
    let again = db.store.event_append(&[&r], Some(off), None).await.unwrap();
    assert_eq!((first[0].accepted, first[0].duplicates), (1, 1));
    assert_eq!((again[0].accepted, again[0].ids.clone()), (1, vec![2]));
    let (keys, head): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM dedup_keys) + (SELECT count(*) FROM dedup_groups),
                (SELECT last_id FROM workspace_heads)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (keys, head),
        (0, 2),
        "no key recorded; the head at the resend"
    );
}

/// Keys recorded before migration 0012 have workspace `''`. They are still found within the
/// window, by a store connected after they were written (on Citus the probe looks for them only
/// if some exist, which it learns at connect). The key is written one by one, as a host whose
/// dedup memory is full writes it (and as every host did before migration 0017).
async fn dedup_legacy_keys(db: Db) {
    let full = memory_full(&db).await;
    let first = append_users(&full, "web", &[("u", "m1")]).await;
    assert_eq!(first.accepted, 1);
    // Rewrite the key as an old host wrote it (Citus cannot update a distribution column).
    sqlx::raw_sql(
        "INSERT INTO dedup_keys (bucket, workspace_id, hash)
             SELECT bucket, '', hash FROM dedup_keys;
         DELETE FROM dedup_keys WHERE workspace_id <> '';",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let store = sluice_store::Store::connect(&db.url).await.unwrap();
    let again = append_users(&store, "web", &[("u", "m1"), ("u", "m2")]).await;
    assert_eq!(
        (again.accepted, again.duplicates),
        (1, 1),
        "the key without a workspace is found"
    );
}

/// A store whose dedup memory holds no key: it records keys one by one in `dedup_keys`.
async fn memory_full(db: &Db) -> sluice_store::Store {
    let opts = sluice_store::StoreOptions {
        dedup_memory: 0,
        ..Default::default()
    };
    sluice_store::Store::connect_with(&db.url, &opts)
        .await
        .unwrap()
}

/// Keys recorded: one by one (`dedup_keys`) and a group at a time (`dedup_groups`).
async fn recorded_keys(db: &Db) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM dedup_keys)
              + (SELECT coalesce(sum(cardinality(hashes)), 0) FROM dedup_groups)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// Two hosts ingest into one workspace, turn about; each has its own dedup memory. Each finds
/// the keys the other recorded: a host loads the window before it serves (`dedup_warm`), and
/// each call catches up on what the other recorded since. On plain PostgreSQL each group with new
/// events is one row; on Citus (per-key probe) there are none.
async fn dedup_across_hosts(db: Db) {
    let a = &db.store;
    let b = sluice_store::Store::connect(&db.url).await.unwrap();
    let counts = |o: sluice_store::append::AppendOutcome| (o.accepted, o.duplicates);
    assert_eq!(counts(append_users(a, "web", &[("u", "m1")]).await), (1, 0));
    // What a host does before it listens: b loads a's key (plain PostgreSQL; on Citus the
    // probe is per shard and nothing is kept).
    b.dedup_warm(&[WS], DEDUP, t0()).await.unwrap();
    let kept = if a.is_distributed() { 0 } else { 1 };
    assert_eq!(b.dedup_memory_stats().0, kept);
    let got = append_users(&b, "web", &[("u", "m1"), ("u", "m2")]).await;
    assert_eq!(counts(got), (1, 1), "b's first call finds a's key");
    let got = append_users(a, "web", &[("u", "m2"), ("u", "m3")]).await;
    assert_eq!(counts(got), (1, 1), "a catches up on b's group");
    let got = append_users(&b, "web", &[("u", "m3"), ("u", "m1"), ("u", "m4")]).await;
    assert_eq!(counts(got), (1, 2), "b catches up on a's second group");
    let got = append_users(a, "web", &[("u", "m4"), ("u", "m1")]).await;
    assert_eq!(counts(got), (0, 2));
    assert_eq!(recorded_keys(&db).await, 4);
    let groups: i64 = sqlx::query_scalar("SELECT count(*) FROM dedup_groups")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let expected = if a.is_distributed() { 0 } else { 4 };
    assert_eq!(groups, expected, "one row per group with new events");
}

/// Sixteen concurrent requests into one workspace through one store, overlapping in their
/// messageIds (each sends 20 ids from a sliding range of 60): each id is stored once. Writers
/// of one host race on the workspace's lock, so most calls pass a memory head that another
/// writer's group has already moved past, and find its keys through the catch-up.
async fn dedup_concurrent_writers(db: Db) {
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            let events = (0..20)
                .map(|k| event("u", &format!("m{}", (i * 3 + k) % 60), 5))
                .collect();
            append(&store, "web", t0(), events).await
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap().accepted;
    }
    let (stored, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT message_id) FROM events")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((accepted as i64, stored), (distinct, distinct));
    assert_eq!(distinct, 60, "every id of the range was sent");
}

/// A host whose dedup memory is full records keys one by one (`dedup_keys`), and they are
/// found, by it and by a host with room.
async fn dedup_memory_full(db: Db) {
    let full = memory_full(&db).await;
    let got = append_users(&full, "web", &[("u", "m1"), ("u", "m2")]).await;
    assert_eq!(got.accepted, 2);
    let (keys, groups): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM dedup_keys), (SELECT count(*) FROM dedup_groups)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((keys, groups), (2, 0), "recorded one by one");
    let got = append_users(&full, "web", &[("u", "m1"), ("u", "m3")]).await;
    assert_eq!((got.accepted, got.duplicates), (1, 1));
    let got = append_users(&db.store, "web", &[("u", "m2"), ("u", "m3"), ("u", "m4")]).await;
    assert_eq!((got.accepted, got.duplicates), (1, 2));
}

/// The database's heads go back below what a host's memory covers (restored from a backup
/// taken before the host's last writes): the host drops that memory, and a messageId the
/// database no longer has is stored again instead of being dropped on the memory's word.
async fn dedup_memory_ahead_of_the_store(db: Db) {
    let first = append_users(&db.store, "web", &[("u", "m1"), ("u", "m2")]).await;
    assert_eq!(first.accepted, 2);
    sqlx::raw_sql(
        "DELETE FROM events; DELETE FROM dedup_keys; DELETE FROM dedup_groups;
         UPDATE workspace_heads SET last_id = 0;",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let again = append_users(&db.store, "web", &[("u", "m1")]).await;
    assert_eq!((again.accepted, again.duplicates), (1, 0));
    let resend = append_users(&db.store, "web", &[("u", "m1"), ("u", "m2")]).await;
    assert_eq!((resend.accepted, resend.duplicates), (1, 1));
}

/// Maintenance keeps the partition after the current one ready, so that ingest at the
/// boundary finds it there.
async fn dedup_prepare(db: Db) {
    let buckets = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, (i32, i32)>("SELECT lo, hi FROM dedup_buckets ORDER BY lo")
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    let m0 = sluice_store::minute_of(t0());
    // Partitions hold the keys recorded one by one.
    let store = memory_full(&db).await;
    append_users(&store, "web", &[("u", "m1")]).await;
    assert_eq!(buckets(db.pool.clone()).await, vec![(m0, m0 + 60)]);
    let minutes = |n| t0() + time::Duration::minutes(n);
    assert!(db.store.dedup_prepare(DEDUP, minutes(1)).await.unwrap());
    assert!(
        !db.store.dedup_prepare(DEDUP, minutes(52)).await.unwrap(),
        "it is there already"
    );
    let both = vec![(m0, m0 + 60), (m0 + 60, m0 + 120)];
    assert_eq!(buckets(db.pool.clone()).await, both);
    // Ingest past the boundary uses it, and the window spans both.
    append(&store, "web", minutes(30), vec![event("u", "m2", 5)]).await;
    let later = append(&store, "web", minutes(61), vec![event("u", "m2", 5)]).await;
    assert_eq!(
        later.duplicates, 1,
        "m2, 31 minutes old, is within the window"
    );
    assert_eq!(buckets(db.pool.clone()).await, both);
}

/// Waits until some advisory lock request is waiting (seen from the server).
async fn until_a_lock_waits(db: &Db) {
    until_counted(
        &db.pool,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        "the append never waited for the lock",
    )
    .await;
}

async fn lock_orders_commits(db: Db) {
    // Another writer of the workspace holds its ingest locks in an open transaction, as an
    // ingest transaction does.
    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(INGEST_LOCK)
        .execute(&mut *holder)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(workspace_key(WS))
        .execute(&mut *holder)
        .await
        .unwrap();
    let store = db.store.clone();
    let append = tokio::spawn(async move { append_users(&store, "web", &[("u", "m1")]).await });
    until_a_lock_waits(&db).await;
    let taken: Option<i64> =
        sqlx::query_scalar("SELECT last_value FROM event_id_seq WHERE is_called")
            .fetch_optional(&db.pool)
            .await
            .unwrap();
    assert_eq!(taken, None, "no id handed out while the lock is held");

    // Another workspace does not wait: its append commits while the first one still waits.
    let other = sluice_store::AppendRequest {
        workspace_id: "other-ws".into(),
        ..request("shop", t0(), vec![event("v", "o1", 10)])
    };
    let out = db
        .store
        .event_append(&[&other], Some(DEDUP), None)
        .await
        .unwrap();
    assert_eq!(out[0].ids, vec![1], "the other workspace went first");
    assert!(!append.is_finished(), "the first append still waits");

    // The holder takes ids as an ingest transaction does, while the append waits, and commits
    // first: the append's ids must come after the holder's.
    let holder_last: i64 = sqlx::query_scalar(
        "WITH ids AS (SELECT nextval('event_id_seq') AS id FROM generate_series(1, 3))
         INSERT INTO workspace_heads (workspace_id, last_id) SELECT $1, max(id) FROM ids
         ON CONFLICT (workspace_id) DO UPDATE SET last_id = excluded.last_id
         RETURNING last_id",
    )
    .bind(WS)
    .fetch_one(&mut *holder)
    .await
    .unwrap();
    holder.commit().await.unwrap();
    let first = append.await.unwrap();
    assert_eq!(
        first.ids,
        vec![holder_last + 1],
        "the append's id follows those of the writer that committed before it"
    );
    // A later append takes the very next ids, and the workspace's head follows its last
    // commit; the other workspace's head is its own.
    let second = append_users(&db.store, "web", &[("u", "m2"), ("u", "m3")]).await;
    assert_eq!(second.ids, vec![holder_last + 2, holder_last + 3]);
    let heads: Vec<(String, i64)> =
        sqlx::query_as("SELECT workspace_id, last_id FROM workspace_heads ORDER BY workspace_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        heads,
        vec![
            (WS.to_string(), holder_last + 3),
            ("other-ws".to_string(), 1)
        ]
    );
    let head: i64 = sqlx::query_scalar("SELECT last_id FROM ingest_head")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        head,
        holder_last + 3,
        "ingest_head: the highest id committed"
    );
}

async fn a_rotation_waits_for_ingest_in_flight_and_holds_new_ingest_back(db: Db) {
    // A rotation holds the store-wide lock exclusively: an append waits for it.
    let mut rotation = db.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(INGEST_LOCK)
        .execute(&mut *rotation)
        .await
        .unwrap();
    let store = db.store.clone();
    let append = tokio::spawn(async move { append_users(&store, "web", &[("u", "m1")]).await });
    until_a_lock_waits(&db).await;
    assert!(!append.is_finished());
    rotation.commit().await.unwrap();
    assert_eq!(append.await.unwrap().accepted, 1);

    // And the other way round: an ingest in flight (the lock held shared) holds a rotation back.
    let mut ingest = db.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(INGEST_LOCK)
        .execute(&mut *ingest)
        .await
        .unwrap();
    let pool = db.pool.clone();
    let rotate = tokio::spawn(async move {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(INGEST_LOCK)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    });
    until_a_lock_waits(&db).await;
    assert!(!rotate.is_finished());
    ingest.commit().await.unwrap();
    rotate.await.unwrap();
}
