//! Seeding the catalog from a `sluice.toml` that still holds `[[source]]`/`[[destination]]`
//! tables: their workspaces are stored if, and only if, the store has no such workspace yet.
//! After that the store is the truth, so a host started with an older file never reverts what
//! the API (or a newer file) changed.

use sluice_core::WorkspaceId;
use sluice_core::catalog::{Catalog, DestinationConfig, SourceConfig};

use super::CatalogError;
use super::rows::{insert_destination, insert_source};
use super::sealed::audited;
use super::write::{Audit, DestinationStart, KeyRotation, OwnedChange, SourceWrite, source_json};
use crate::Store;

/// What a seed did, per workspace the file names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeedReport {
    /// New to the store: written from the file.
    pub seeded: Vec<WorkspaceId>,
    /// Already in the store: the file's tables for them were ignored.
    pub kept: Vec<WorkspaceId>,
    /// The catalog version the seed wrote (None: nothing was written).
    pub version: Option<i64>,
}

impl Store {
    /// Writes the workspaces of `sources` and `destinations` that the store does not have.
    /// `secret_paths` gives a plugin's secret config paths, masked in the audit (`None`:
    /// unknown, the whole config is masked).
    pub async fn catalog_seed(
        &self,
        sources: &[SourceConfig],
        destinations: &[DestinationConfig],
        secret_paths: &(dyn Fn(&str) -> Option<Vec<String>> + Sync),
    ) -> Result<SeedReport, CatalogError> {
        let mut report = SeedReport::default();
        let workspaces = Catalog::workspaces_of(sources, destinations);
        if workspaces.is_empty() {
            return Ok(report);
        }
        let sealer = self.sealer()?;
        let mut tx = self.catalog_tx().await?;
        let known: Vec<WorkspaceId> =
            sqlx::query_scalar("SELECT id FROM workspaces WHERE id = ANY ($1)")
                .bind(&workspaces)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| {
                    CatalogError::Store(crate::StoreError::from_sqlx("reading workspaces")(e))
                })?;
        let mut audit = Audit {
            actor: "seed".into(),
            secrets: Default::default(),
        };
        for d in destinations {
            if let Some(paths) = secret_paths(&d.plugin) {
                audit.secrets.insert(d.plugin.clone(), paths);
            }
        }
        let mut changes = Vec::new();
        for w in workspaces {
            if known.contains(&w) {
                report.kept.push(w);
                continue;
            }
            for d in destinations.iter().filter(|d| d.workspace == w) {
                d.validate()?;
                insert_destination(&mut tx, d, DestinationStart::Now, &audit, sealer).await?;
                changes.push(
                    OwnedChange::new("seed", "destination", &d.workspace, &d.id)
                        .after(audited(d, &audit)),
                );
            }
            for s in sources.iter().filter(|s| s.workspace == w) {
                let write = SourceWrite::from_file(s);
                let key = KeyRotation::added(&s.write_key);
                insert_source(&mut tx, &write, &key).await?;
                changes.push(
                    OwnedChange::new("seed", "source", &s.workspace, &s.id)
                        .after(source_json(&write)),
                );
            }
            report.seeded.push(w);
        }
        if report.seeded.is_empty() {
            return Ok(report);
        }
        report.version = Some(Self::catalog_commit(tx, &audit, &changes).await?);
        Ok(report)
    }
}
