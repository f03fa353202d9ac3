//! `store::catalog`'s credentials: write keys stored hashed and rotated, destination configs
//! sealed at rest and sealed again after a key rotation.

use libtest_mimic::Trial;
use serde_json::json;
use sluice_core::catalog::key_sha256;
use sluice_store::{Audit, CatalogError, DestinationStart, KeyRotation, Store};

use crate::catalog::{audit, dest, key, source_write};
use crate::fixtures::*;
use crate::harness::{Db, trial};

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "catalog_write_keys_are_stored_hashed_and_a_rotation_expires_the_others",
            keys_hashed,
        ),
        trial(
            "catalog_configs_are_sealed_at_rest_and_sealed_again_after_a_key_rotation",
            sealed_at_rest,
        ),
    ]
}

async fn keys_hashed(db: Db) {
    db.store
        .source_create(&source_write("web", &[]), &key("wk_PLAINTEXT_1"), &audit())
        .await
        .unwrap();
    let grace = t0() + secs(60);
    let rotation = KeyRotation {
        others_expire_at: Some(grace),
        ..key("wk_PLAINTEXT_2")
    };
    db.store
        .source_key_add(WS, "web", &rotation, &audit())
        .await
        .unwrap();
    let c = db.store.catalog_load().await.unwrap();
    let keys = &c.sources[0].keys;
    assert_eq!(keys.len(), 2);
    let old = keys
        .iter()
        .find(|k| k.sha256 == key_sha256("wk_PLAINTEXT_1"))
        .unwrap();
    let new = keys
        .iter()
        .find(|k| k.sha256 == key_sha256("wk_PLAINTEXT_2"))
        .unwrap();
    assert_eq!((old.expires_at, new.expires_at), (Some(grace), None));
    assert!(old.valid_at(t0()) && !old.valid_at(grace));
    let dump: String = sqlx::query_scalar(
        "SELECT string_agg(hint || encode(key_sha256, 'escape'), ' ') FROM source_keys",
    )
    .fetch_one(&sqlx::PgPool::connect(db.store.url()).await.unwrap())
    .await
    .unwrap();
    assert!(!dump.contains("PLAINTEXT"), "{dump}");
    let reused = db
        .store
        .source_key_add(WS, "web", &key("wk_PLAINTEXT_2"), &audit())
        .await;
    assert!(
        matches!(reused, Err(CatalogError::Conflict(_))),
        "{reused:?}"
    );
}

async fn sealed_at_rest(db: Db) {
    use sluice_store::sealer::Sealer;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let (old_text, new_text) = (Sealer::new_key_text(), Sealer::new_key_text());
    let old_file = dir.path().join("old.key");
    std::fs::write(&old_file, &old_text).unwrap();
    let with = |text: &str, previous: &[std::path::PathBuf]| {
        let sealer = Arc::new(Sealer::new(text, "test", previous).unwrap());
        let url = db.store.url().to_string();
        async move { Store::connect(&url).await.unwrap().with_sealer(sealer) }
    };
    let old = with(&old_text, &[]).await;
    let mut d = dest("hook", "https://user:PASSW0RD@x.example/h?token=TOK123");
    d.config["headers"] = json!({"Authorization": "Bearer AUTH456"});
    let audit = Audit {
        actor: "test".into(),
        secrets: [(
            "webhook".to_string(),
            vec!["secret".to_string(), "headers.Authorization".to_string()],
        )]
        .into(),
    };
    old.destination_create(&d, DestinationStart::Now, &[], &audit)
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(db.store.url()).await.unwrap();
    let stored: String = sqlx::query_scalar(
        "SELECT (SELECT string_agg(config::text || config_sealed::text, ' ') FROM destinations)
                || (SELECT string_agg(coalesce(after::text, ''), ' ') FROM catalog_audit)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    for secret in ["PASSW0RD", "TOK123", "TOPSECRET", "AUTH456"] {
        assert!(
            !stored.contains(secret),
            "{secret} stored in plain text: {stored}"
        );
    }
    assert!(
        stored.contains("x.example"),
        "the masked copy stays readable: {stored}"
    );
    assert_eq!(
        old.catalog_load().await.unwrap().destinations,
        vec![d.clone()]
    );

    // Another key cannot open it, and says which key it needs.
    let other = with(&new_text, &[]).await;
    let err = other.catalog_load().await.unwrap_err().to_string();
    assert!(
        err.contains("acme/hook") && err.contains("secrets_old_key_files"),
        "{err}"
    );
    // The new key with the old one beside it opens it, and seals it again under the new key.
    let rotating = with(&new_text, &[old_file]).await;
    assert_eq!(
        rotating.catalog_load().await.unwrap().destinations,
        vec![d.clone()]
    );
    assert_eq!(rotating.catalog_reseal().await.unwrap(), 1);
    assert_eq!(rotating.catalog_reseal().await.unwrap(), 0);
    assert_eq!(other.catalog_load().await.unwrap().destinations, vec![d]);
    assert!(
        old.catalog_load().await.is_err(),
        "the old key alone no longer opens it"
    );
}
