//! `store::catalog`: seeding, item writes with their lanes and links, versions, NOTIFY and the
//! audit (write keys and sealed configs: `catalog_secrets`).

use libtest_mimic::Trial;
use serde_json::json;
use sluice_core::catalog::{DestinationConfig, SourceConfig, key_sha256};
use sluice_core::{DestinationId, EventFilter, OrderingScope, SourceId, WorkspaceId};
use sluice_store::{Audit, CatalogError, DestinationStart, KeyRotation, SourceWrite, Store, Wake};

use crate::fixtures::*;
use crate::harness::{Db, trial};

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "catalog_seed_stores_new_workspaces_only_and_never_reverts_a_change",
            seed_never_reverts,
        ),
        trial(
            "catalog_destination_create_starts_its_lane_at_the_head_or_the_earliest_event",
            create_starts,
        ),
        trial(
            "catalog_destination_delete_retires_and_fences_the_lane_and_aborts_its_jobs",
            delete_retires,
        ),
        trial(
            "catalog_links_feed_the_events_accepted_while_they_were_in_force",
            links_by_id,
        ),
        trial(
            "catalog_writes_bump_the_version_notify_and_audit_with_secrets_masked",
            version_notify_audit,
        ),
        trial(
            "catalog_update_refuses_an_ordering_change_and_an_unchanged_item_is_a_no_op",
            update_rules,
        ),
        trial(
            "catalog_destination_filter_is_kept_in_settings_and_read_back",
            filter_kept,
        ),
    ]
}

pub(crate) fn dest(id: &str, url: &str) -> DestinationConfig {
    serde_json::from_value(json!({
        "id": id, "workspace": WS, "plugin": "webhook",
        "config": {"url": url, "secret": "whsec_TOPSECRET"},
    }))
    .expect("a destination")
}

pub(crate) fn source_write(id: &str, destinations: &[&str]) -> SourceWrite {
    SourceWrite {
        id: SourceId::try_from(id).expect("id"),
        workspace: WorkspaceId::try_from(WS).expect("id"),
        enabled: true,
        destinations: destinations
            .iter()
            .map(|d| DestinationId::try_from(*d).expect("id"))
            .collect(),
        settings: Default::default(),
    }
}

pub(crate) fn key(text: &str) -> KeyRotation {
    KeyRotation::added(text)
}

/// A commit of the lane up to `cursor` with `new_rows`.
pub(crate) fn commit_to(
    lease: sluice_store::Lease,
    cursor: i64,
    new_rows: Vec<sluice_store::NewJobRow>,
) -> sluice_store::LaneCommit {
    sluice_store::LaneCommit {
        lease,
        now: t0(),
        lease_ttl: TTL,
        cursor,
        claimed_to: cursor,
        new_rows,
        row_updates: vec![],
        block_keys: vec![],
        ensure_keys: vec![],
        check_keys: vec![],
    }
}

pub(crate) fn audit() -> Audit {
    Audit {
        actor: "test".into(),
        secrets: [("webhook".to_string(), vec!["secret".to_string()])].into(),
    }
}

fn no_secrets(_: &str) -> Option<Vec<String>> {
    Some(vec!["secret".into()])
}

pub(crate) async fn lane_row(store: &Store, dest: &str) -> (i64, i64, bool, i64) {
    sqlx::query_as(
        "SELECT start_id, cursor, retired_at IS NOT NULL, owner_epoch FROM lanes
         WHERE workspace_id = $1 AND destination_id = $2",
    )
    .bind(WS)
    .bind(dest)
    .fetch_one(&sqlx::PgPool::connect(store.url()).await.expect("connect"))
    .await
    .expect("a lane row")
}

async fn seed_never_reverts(db: Db) {
    let file_dest = dest("hook", "https://one.example/hook");
    let file_source = SourceConfig {
        id: SourceId::try_from("web").unwrap(),
        workspace: WorkspaceId::try_from(WS).unwrap(),
        write_key: "wk_web_123".into(),
        destinations: vec![DestinationId::try_from("hook").unwrap()],
        allowed_origins: vec![sluice_core::AllowedOrigin::parse("*.shop.example").unwrap()],
        limits: sluice_core::SourceLimits {
            client_events_per_second: Some(5.0),
            ..Default::default()
        },
    };
    let first = db
        .store
        .catalog_seed(
            std::slice::from_ref(&file_source),
            std::slice::from_ref(&file_dest),
            &no_secrets,
        )
        .await
        .unwrap();
    assert_eq!(first.seeded, vec![WS]);
    let c = db.store.catalog_load().await.unwrap();
    assert_eq!(c.destinations, vec![file_dest.clone()]);
    assert_eq!(c.destinations_of("web"), vec!["hook"]);
    assert_eq!(c.sources[0].keys[0].sha256, key_sha256("wk_web_123"));
    assert_eq!(
        c.sources[0].settings,
        file_source.settings(),
        "its allowed origins"
    );

    // The API changes the destination; a host started with the old file seeds again.
    let changed = dest("hook", "https://two.example/hook");
    db.store
        .destination_update(&changed, &audit())
        .await
        .unwrap();
    let again = db
        .store
        .catalog_seed(&[file_source], &[file_dest], &no_secrets)
        .await
        .unwrap();
    assert_eq!(
        (again.seeded.len(), again.kept.len(), again.version),
        (0, 1, None)
    );
    let c = db.store.catalog_load().await.unwrap();
    assert_eq!(c.destinations, vec![changed]);
}

async fn create_starts(db: Db) {
    append_users(&db.store, "web", &[("u", "1"), ("u", "2"), ("u", "3")]).await;
    db.store
        .source_create(&source_write("web", &[]), &key("wk_web_123"), &audit())
        .await
        .unwrap();
    let web = [SourceId::try_from("web").unwrap()];
    db.store
        .destination_create(
            &dest("now", "https://x.example"),
            DestinationStart::Now,
            &web,
            &audit(),
        )
        .await
        .unwrap();
    db.store
        .destination_create(
            &dest("all", "https://x.example"),
            DestinationStart::Earliest,
            &web,
            &audit(),
        )
        .await
        .unwrap();
    assert_eq!(
        lane_row(&db.store, "now").await.0,
        3,
        "a new lane starts at the head"
    );
    assert_eq!(
        lane_row(&db.store, "all").await.0,
        0,
        "earliest: every retained event"
    );
    // Its links start where the lane starts, so the backfill reads the source's events.
    let c = db.store.catalog_load().await.unwrap();
    let read = db
        .store
        .log_read(&lane("all"), &c.links_of("all"), 0, 0, limits())
        .await
        .unwrap();
    assert_eq!(read.events.len(), 3);
    let taken = db
        .store
        .destination_create(
            &dest("all", "https://y.example"),
            DestinationStart::Now,
            &[],
            &audit(),
        )
        .await;
    assert!(matches!(taken, Err(CatalogError::Conflict(_))), "{taken:?}");
}

fn limits() -> sluice_store::ReadLimits {
    sluice_store::ReadLimits {
        max_events: 100,
        max_bytes: 1 << 20,
    }
}

/// Destinations `dests`, source `web` linked to all of them, and two events of user `u` that
/// the first destination read: the first failed and parked the second. Returns that commit.
pub(crate) async fn failed_and_parked(db: &Db, dests: &[&str]) -> sluice_store::LaneCommit {
    for id in dests {
        db.store
            .destination_create(
                &dest(id, "https://x.example"),
                DestinationStart::Now,
                &[],
                &audit(),
            )
            .await
            .unwrap();
    }
    db.store
        .source_create(&source_write("web", dests), &key("wk_web_123"), &audit())
        .await
        .unwrap();
    append_users(&db.store, "web", &[("u", "1"), ("u", "2")]).await;
    let lease = acquire(&db.store, dests[0], t0()).await.lease;
    let mut commit = commit_to(
        lease,
        2,
        vec![
            job_row(1, "web", "u", sluice_store::JobState::Failed, 1),
            job_row(2, "web", "u", sluice_store::JobState::Pending, 0),
        ],
    );
    commit.block_keys = vec![("u".to_string(), t0() + secs(3600))];
    db.store.lane_commit(&commit).await.unwrap();
    commit
}

async fn delete_retires(db: Db) {
    let commit = failed_and_parked(&db, &["hook"]).await;
    let epoch = lane_row(&db.store, "hook").await.3;

    db.store
        .destination_delete(WS, "hook", &audit())
        .await
        .unwrap();
    let (_, _, retired, after) = lane_row(&db.store, "hook").await;
    assert!(retired && after > epoch, "retired and fenced");
    let commit = sluice_store::LaneCommit {
        new_rows: vec![],
        block_keys: vec![],
        ..commit
    };
    assert!(
        db.store.lane_commit(&commit).await.is_err(),
        "the old owner is fenced"
    );
    let states: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT state::text, error_code FROM job_state ORDER BY event_id")
            .fetch_all(&sqlx::PgPool::connect(db.store.url()).await.unwrap())
            .await
            .unwrap();
    assert_eq!(
        states,
        vec![
            ("aborted".into(), Some("destination_deleted".into())),
            ("aborted".into(), Some("destination_deleted".into()))
        ]
    );
    assert!(
        db.store
            .catalog_load()
            .await
            .unwrap()
            .destinations
            .is_empty()
    );

    // Made again under the same id, it starts afresh at the head.
    append_users(&db.store, "web", &[("u", "3")]).await;
    db.store
        .destination_create(
            &dest("hook", "https://x.example"),
            DestinationStart::Now,
            &[],
            &audit(),
        )
        .await
        .unwrap();
    let (start, cursor, retired, _) = lane_row(&db.store, "hook").await;
    assert_eq!((start, cursor, retired), (3, 3, false));
}

async fn links_by_id(db: Db) {
    db.store
        .destination_create(
            &dest("hook", "https://x.example"),
            DestinationStart::Now,
            &[],
            &audit(),
        )
        .await
        .unwrap();
    db.store
        .source_create(
            &source_write("web", &["hook"]),
            &key("wk_web_123"),
            &audit(),
        )
        .await
        .unwrap();
    append_users(&db.store, "web", &[("u", "1"), ("u", "2")]).await;
    // Unlinked: what the source accepted before still flows, what it accepts after does not.
    db.store
        .source_update(&source_write("web", &[]), &audit())
        .await
        .unwrap();
    append_users(&db.store, "web", &[("u", "3")]).await;
    let c = db.store.catalog_load().await.unwrap();
    assert!(c.destinations_of("web").is_empty());
    let read = db
        .store
        .log_read(&lane("hook"), &c.links_of("hook"), 0, 0, limits())
        .await
        .unwrap();
    assert_eq!(
        read.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![1, 2]
    );

    // Linked again while the lane has not read past the old link's end: refused.
    let early = db
        .store
        .source_update(&source_write("web", &["hook"]), &audit())
        .await;
    assert!(matches!(early, Err(CatalogError::Conflict(_))), "{early:?}");
    // Once it has, the new link starts at the head: event 3 stays out, event 4 comes in.
    let lease = acquire(&db.store, "hook", t0()).await.lease;
    db.store
        .lane_commit(&commit_to(lease, 3, vec![]))
        .await
        .unwrap();
    db.store
        .source_update(&source_write("web", &["hook"]), &audit())
        .await
        .unwrap();
    append_users(&db.store, "web", &[("u", "4")]).await;
    let c = db.store.catalog_load().await.unwrap();
    let read = db
        .store
        .log_read(&lane("hook"), &c.links_of("hook"), 0, 0, limits())
        .await
        .unwrap();
    assert_eq!(
        read.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![4]
    );

    // Unlinked and linked again with nothing accepted in between: the old link reopens.
    db.store
        .source_update(&source_write("web", &[]), &audit())
        .await
        .unwrap();
    db.store
        .source_update(&source_write("web", &["hook"]), &audit())
        .await
        .unwrap();
    let c = db.store.catalog_load().await.unwrap();
    assert_eq!(c.links_of("hook").len(), 1);
    assert!(c.links_of("hook")[0].is_live());
}

async fn version_notify_audit(db: Db) {
    let mut listener = db.store.wake_listener().await.unwrap();
    let before = db.store.catalog_version().await.unwrap();
    let v = db
        .store
        .destination_create(
            &dest("hook", "https://x.example"),
            DestinationStart::Now,
            &[],
            &audit(),
        )
        .await
        .unwrap();
    assert_eq!(v, before + 1);
    assert_eq!(db.store.catalog_version().await.unwrap(), v);
    let wake = tokio::time::timeout(std::time::Duration::from_secs(5), listener.next())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(wake, Wake::Catalog { version: v });

    let changes = db.store.admin_catalog_audit(10).await.unwrap();
    assert_eq!(changes.len(), 1);
    let c = &changes[0];
    assert_eq!(
        (
            c.actor.as_str(),
            c.action.as_str(),
            c.kind.as_str(),
            c.version
        ),
        ("test", "create", "destination", v)
    );
    let after = c.after.as_ref().unwrap();
    assert_eq!(after["config"]["secret"], "***");
    assert_eq!(after["config"]["url"], "https://x.example");
    let text: String = sqlx::query_scalar("SELECT string_agg(after::text, '') FROM catalog_audit")
        .fetch_one(&sqlx::PgPool::connect(db.store.url()).await.unwrap())
        .await
        .unwrap();
    assert!(!text.contains("TOPSECRET"));

    // An unknown manifest masks the whole config.
    let unknown = Audit {
        actor: "test".into(),
        secrets: Default::default(),
    };
    db.store
        .destination_update(&dest("hook", "https://y.example"), &unknown)
        .await
        .unwrap();
    let changes = db.store.admin_catalog_audit(1).await.unwrap();
    assert_eq!(changes[0].after.as_ref().unwrap()["config"], "***");
}

async fn update_rules(db: Db) {
    db.store
        .destination_create(
            &dest("hook", "https://x.example"),
            DestinationStart::Now,
            &[],
            &audit(),
        )
        .await
        .unwrap();
    let v = db.store.catalog_version().await.unwrap();
    let same = db
        .store
        .destination_update(&dest("hook", "https://x.example"), &audit())
        .await
        .unwrap();
    assert_eq!(same, None);
    assert_eq!(db.store.catalog_version().await.unwrap(), v);
    let mut reordered = dest("hook", "https://x.example");
    reordered.ordering = OrderingScope::None;
    let refused = db.store.destination_update(&reordered, &audit()).await;
    assert!(
        matches!(refused, Err(CatalogError::Invalid(_))),
        "{refused:?}"
    );
    let missing = db
        .store
        .destination_update(&dest("nope", "https://x.example"), &audit())
        .await;
    assert!(
        matches!(missing, Err(CatalogError::NotFound { .. })),
        "{missing:?}"
    );
    let other = db
        .store
        .source_create(
            &source_write("web", &["nope"]),
            &key("wk_web_123"),
            &audit(),
        )
        .await;
    assert!(matches!(other, Err(CatalogError::Conflict(_))), "{other:?}");
    assert!(
        db.store.catalog_load().await.unwrap().sources.is_empty(),
        "nothing half-written"
    );
}

async fn filter_kept(db: Db) {
    let settings = || async {
        sqlx::query_scalar::<_, serde_json::Value>(
            "SELECT settings FROM destinations WHERE id = 'hook'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    let mut d = dest("hook", "https://x.example");
    d.filter = EventFilter {
        deny_types: vec!["identify".into()],
        deny_events: vec!["Secret Event".into()],
        ..Default::default()
    };
    db.store
        .destination_create(&d, DestinationStart::Now, &[], &audit())
        .await
        .unwrap();
    assert_eq!(
        settings().await["filter"],
        json!({"deny_types": ["identify"], "deny_events": ["Secret Event"]})
    );
    let loaded = db.store.catalog_load().await.unwrap();
    assert_eq!(loaded.destination("hook"), Some(&d));

    // A new filter is a change; no filter leaves no trace in the settings, as before 0009.
    d.filter = EventFilter {
        allow_events: vec!["Signed Up".into()],
        ..Default::default()
    };
    let v = db.store.destination_update(&d, &audit()).await.unwrap();
    assert!(v.is_some(), "a filter change is a change");
    assert_eq!(
        db.store.catalog_load().await.unwrap().destination("hook"),
        Some(&d)
    );
    d.filter = EventFilter::default();
    db.store.destination_update(&d, &audit()).await.unwrap();
    assert!(
        settings().await.get("filter").is_none(),
        "{}",
        settings().await
    );
    assert_eq!(
        db.store.catalog_load().await.unwrap().destination("hook"),
        Some(&d)
    );
}
