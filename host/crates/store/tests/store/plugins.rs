//! `store::plugins`: which plugin versions hosts run, and each destination's plugin status, as
//! operators see them (`plugin_versions`, `lane_status`).

use libtest_mimic::Trial;
use sluice_store::{HostInfo, LoadedVersion, OrderingScope};
use uuid::Uuid;

use crate::fixtures::*;
use crate::harness::{Db, trial};

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "plugins_versions_that_differ_between_live_hosts_are_reported",
            versions_differ,
        ),
        trial(
            "plugins_a_destinations_plugin_error_shows_in_lane_status",
            lane_error,
        ),
    ]
}

fn version(sha: &str) -> LoadedVersion {
    LoadedVersion {
        plugin: "webhook".into(),
        sha256: sha.into(),
        version: "0.1.0".into(),
    }
}

async fn host(db: &Db, pid: u32) -> Uuid {
    let host = HostInfo {
        incarnation: Uuid::new_v4(),
        host_name: format!("box-{pid}"),
        pid,
    };
    db.store.host_register(&host).await.unwrap();
    host.incarnation
}

async fn differs(db: &Db) -> Vec<(String, bool)> {
    sqlx::query_as("SELECT sha256, differs FROM plugin_versions ORDER BY sha256")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

async fn versions_differ(db: Db) {
    let a = host(&db, 1).await;
    let b = host(&db, 2).await;
    db.store
        .host_plugins_set(a, &[version("aaa")])
        .await
        .unwrap();
    db.store
        .host_plugins_set(b, &[version("aaa")])
        .await
        .unwrap();
    assert_eq!(differs(&db).await, vec![("aaa".to_string(), false)]);

    // Host b reloads a new build: the two hosts now differ.
    db.store
        .host_plugins_set(b, &[version("bbb")])
        .await
        .unwrap();
    assert_eq!(
        differs(&db).await,
        vec![("aaa".to_string(), true), ("bbb".to_string(), true)]
    );

    // Host a stops: only live hosts count.
    db.store.host_stop(a).await.unwrap();
    assert_eq!(differs(&db).await, vec![("bbb".to_string(), false)]);

    // A plugin removed from a host's directory leaves its list.
    db.store.host_plugins_set(b, &[]).await.unwrap();
    assert!(differs(&db).await.is_empty());
}

async fn lane_error(db: Db) {
    db.store
        .lanes_sync(&[spec("hook", &["web"], OrderingScope::User)])
        .await
        .unwrap();
    db.store
        .lane_plugin_status(
            &lane("hook"),
            "webhook",
            Some("aaa"),
            Some("timeout_ms: invalid type"),
        )
        .await
        .unwrap();
    let row: (Option<String>, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT plugin, plugin_sha256, plugin_error FROM lane_status WHERE destination_id = 'hook'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            Some("webhook".into()),
            Some("aaa".into()),
            Some("timeout_ms: invalid type".into())
        )
    );
    db.store
        .lane_plugin_status(&lane("hook"), "webhook", Some("bbb"), None)
        .await
        .unwrap();
    let error: Option<String> =
        sqlx::query_scalar("SELECT plugin_error FROM lane_status WHERE destination_id = 'hook'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(error, None, "fixed by the next version");
}
