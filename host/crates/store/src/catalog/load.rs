//! Reading the whole catalog as of one version.

use std::collections::HashMap;

use sqlx::Row;

use sluice_core::catalog::{
    Catalog, DestinationConfig, KeyHash, Link, Source, SourceKey, SourceSettings,
};
use sluice_core::{DestinationId, OrderingScope, SourceId, WorkspaceId};

use super::Settings;
use crate::{Store, StoreError};

impl Store {
    /// Seals again, under the current key, every destination config sealed under a previous
    /// one (a key rotation, docs/catalog.md). Returns how many were sealed again. The configs
    /// do not change, so the catalog version does not either.
    pub async fn catalog_reseal(&self) -> Result<usize, StoreError> {
        let sealer = self.sealer()?;
        let rows: Vec<(String, String, Vec<u8>)> =
            sqlx::query_as("SELECT workspace_id, id, config_sealed FROM destinations")
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::from_sqlx("reading sealed configs"))?;
        let mut done = 0;
        for (workspace, id, sealed) in rows.iter().filter(|r| !sealer.is_current(&r.2)) {
            let config = super::sealed::open_config(sealer, workspace, id, sealed)?;
            let aad = super::sealed::aad(workspace, id);
            let fresh = sealer.seal(config.to_string().as_bytes(), &aad);
            sqlx::query(
                "UPDATE destinations SET config_sealed = $3
                 WHERE workspace_id = $1 AND id = $2 AND config_sealed = $4",
            )
            .bind(workspace)
            .bind(id)
            .bind(fresh)
            .bind(sealed)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx("sealing a config again"))?;
            done += 1;
        }
        Ok(done)
    }

    /// The catalog's version: bumped by every change (a host compares it with the version it
    /// runs, in case a notification was missed).
    pub async fn catalog_version(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT version FROM catalog_version")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx("reading the catalog version"))
    }

    /// Everything in the catalog, read in one snapshot.
    pub async fn catalog_load(&self) -> Result<Catalog, StoreError> {
        let err = StoreError::from_sqlx;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(err("starting a catalog read"))?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(err("starting a catalog read"))?;
        let version: i64 = sqlx::query_scalar("SELECT version FROM catalog_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(err("reading the catalog version"))?;
        let workspaces: Vec<WorkspaceId> =
            sqlx::query_scalar("SELECT id FROM workspaces ORDER BY id")
                .fetch_all(&mut *tx)
                .await
                .map_err(err("reading workspaces"))?;

        let mut keys: HashMap<String, Vec<SourceKey>> = HashMap::new();
        for r in sqlx::query(
            "SELECT source_id, key_sha256, hint, created_at, expires_at FROM source_keys
             ORDER BY created_at, key_sha256",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(err("reading write keys"))?
        {
            let decode = || StoreError::from_sqlx("decoding a write key");
            let hash: Vec<u8> = r.try_get(1).map_err(decode())?;
            let Ok(sha256) = KeyHash::try_from(hash.as_slice()) else {
                continue;
            };
            keys.entry(r.try_get(0).map_err(decode())?)
                .or_default()
                .push(SourceKey {
                    sha256,
                    hint: r.try_get(2).map_err(decode())?,
                    created_at: r.try_get(3).map_err(decode())?,
                    expires_at: r.try_get(4).map_err(decode())?,
                });
        }
        let mut sources = Vec::new();
        for r in sqlx::query("SELECT workspace_id, id, enabled, settings FROM sources ORDER BY id")
            .fetch_all(&mut *tx)
            .await
            .map_err(err("reading sources"))?
        {
            let decode = || StoreError::from_sqlx("decoding a source");
            let id: SourceId = r.try_get(1).map_err(decode())?;
            sources.push(Source {
                workspace: r.try_get(0).map_err(decode())?,
                keys: keys.remove(id.as_str()).unwrap_or_default(),
                id,
                enabled: r.try_get(2).map_err(decode())?,
                settings: r
                    .try_get::<sqlx::types::Json<SourceSettings>, _>(3)
                    .map_err(decode())?
                    .0,
            });
        }

        let sealer = self.sealer()?;
        let mut destinations = Vec::new();
        let mut draining = Vec::new();
        for r in sqlx::query(
            "SELECT workspace_id, id, plugin, config_sealed, ordering, settings, draining_since
             FROM destinations ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(err("reading destinations"))?
        {
            let decode = || StoreError::from_sqlx("decoding a destination");
            let settings: sqlx::types::Json<Settings> = r.try_get(5).map_err(decode())?;
            let settings = settings.0;
            let workspace: WorkspaceId = r.try_get(0).map_err(decode())?;
            let id: DestinationId = r.try_get(1).map_err(decode())?;
            let sealed: Vec<u8> = r.try_get(3).map_err(decode())?;
            let config = super::sealed::open_config(sealer, &workspace, &id, &sealed)?;
            if let Some(since) = r.try_get(6).map_err(decode())? {
                draining.push((id.clone(), since));
            }
            destinations.push(DestinationConfig {
                workspace,
                id,
                plugin: r.try_get(2).map_err(decode())?,
                config,
                ordering: r.try_get::<OrderingScope, _>(4).map_err(decode())?,
                retry: settings.retry,
                max_concurrency: settings.max_concurrency,
                rate_limit: settings.rate_limit,
                allowed_private_networks: settings.allowed_private_networks,
                filter: settings.filter,
            });
        }

        let mut links = Vec::new();
        for r in sqlx::query(
            "SELECT r.source_id, r.destination_id, r.from_id, r.until_id FROM routes r
             JOIN destinations d ON d.workspace_id = r.workspace_id AND d.id = r.destination_id
             ORDER BY r.destination_id, r.source_id, r.from_id",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(err("reading links"))?
        {
            let decode = || StoreError::from_sqlx("decoding a link");
            links.push(Link {
                source: r.try_get::<SourceId, _>(0).map_err(decode())?,
                destination: r.try_get::<DestinationId, _>(1).map_err(decode())?,
                from_id: r.try_get(2).map_err(decode())?,
                until_id: r.try_get(3).map_err(decode())?,
            });
        }
        tx.commit().await.map_err(err("ending a catalog read"))?;
        Ok(Catalog {
            version,
            workspaces,
            sources,
            destinations,
            links,
            draining,
        })
    }
}
