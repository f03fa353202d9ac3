//! Changing the catalog. Each write is one transaction that changes the item, makes its lane
//! and links match, bumps `catalog_version`, audits, and notifies (at commit).
//!
//! What each change does to events (docs/catalog.md):
//! - creating a destination makes its lane, starting at the ingest head (`Now`) or at the
//!   first retained event (`Earliest`) or the first event received at a time (`At`);
//! - updating one changes what its lane runs from the next call on; its ordering cannot change;
//! - deleting one retires its lane: its unfinished jobs are aborted (`destination deleted`),
//!   and a destination created later under the same id starts afresh;
//! - links follow the ids of events: a link made now feeds events accepted after it, an unlink
//!   keeps feeding what the source accepted before it.

use sqlx::{Postgres, Transaction};
use time::OffsetDateTime;

use sluice_core::catalog::{
    DestinationConfig, KeyHash, SourceConfig, SourceSettings, key_hint, key_sha256,
};
use sluice_core::{DestinationId, SourceId, WorkspaceId};

use super::CatalogError;
use super::drain::{refuse_if_draining, start_drain};
use super::rows::{
    delete_destination, destination_row, insert_destination, insert_key, insert_source, link_new,
    set_links, source_row, update_destination,
};
use super::sealed::audited;
use crate::notify::notify;
use crate::sealer::Sealer;
use crate::{Store, StoreError};

pub(super) type Tx = Transaction<'static, Postgres>;

/// One item's change, as the audit records it.
pub(super) struct OwnedChange {
    pub action: &'static str,
    pub kind: &'static str,
    pub workspace: String,
    pub item: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

impl OwnedChange {
    pub fn new(action: &'static str, kind: &'static str, workspace: &str, item: &str) -> Self {
        OwnedChange {
            action,
            kind,
            workspace: workspace.to_string(),
            item: item.to_string(),
            before: None,
            after: None,
        }
    }

    pub fn before(self, v: serde_json::Value) -> Self {
        OwnedChange {
            before: Some(v),
            ..self
        }
    }

    pub fn after(self, v: serde_json::Value) -> Self {
        OwnedChange {
            after: Some(v),
            ..self
        }
    }
}

/// Who makes a change, and which config paths are secrets (masked in the audit).
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub actor: String,
    /// Each plugin's declared secret paths. A plugin not named here is unknown (its manifest
    /// could not be read): then its destinations' whole config is masked.
    pub secrets: std::collections::HashMap<String, Vec<String>>,
}

/// Where a new destination starts reading its sources' events.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum DestinationStart {
    /// Events accepted from now on.
    #[default]
    Now,
    /// Every retained event, then the live ones (backfill).
    Earliest,
    /// Retained events received at or after this time, then the live ones.
    At(OffsetDateTime),
}

/// A source as a write gives it: its keys are changed by [`Store::source_key_add`].
#[derive(Debug, Clone, PartialEq)]
pub struct SourceWrite {
    pub id: SourceId,
    pub workspace: WorkspaceId,
    pub enabled: bool,
    /// Its live links, all to destinations of its workspace.
    pub destinations: Vec<DestinationId>,
    pub settings: SourceSettings,
}

/// A key rotation: the new key, and until when the source's other keys keep working.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRotation {
    pub sha256: KeyHash,
    pub hint: String,
    /// None: the other keys keep working (a key added, not rotated).
    pub others_expire_at: Option<OffsetDateTime>,
}

impl KeyRotation {
    /// `key` added beside the source's other keys (only its hash and hint are kept).
    pub fn added(key: &str) -> KeyRotation {
        KeyRotation {
            sha256: key_sha256(key),
            hint: key_hint(key),
            others_expire_at: None,
        }
    }
}

impl SourceWrite {
    /// A `[[source]]` table as written: enabled, linked to the destinations it names.
    pub fn from_file(s: &SourceConfig) -> SourceWrite {
        SourceWrite {
            id: s.id.clone(),
            workspace: s.workspace.clone(),
            enabled: true,
            destinations: s.destinations.clone(),
            settings: s.settings(),
        }
    }
}

pub(super) fn err(action: &'static str) -> impl FnOnce(sqlx::Error) -> CatalogError {
    move |e| CatalogError::Store(StoreError::from_sqlx(action)(e))
}

/// One change of a [`Store::catalog_apply`].
#[derive(Debug, Clone, PartialEq)]
pub enum CatalogStep {
    /// A new destination, its lane, and links from `sources` (of its workspace) starting
    /// where the lane starts.
    CreateDestination {
        dest: DestinationConfig,
        start: DestinationStart,
        sources: Vec<SourceId>,
    },
    /// New plugin, config and settings; the ordering cannot change.
    UpdateDestination(DestinationConfig),
    /// The lane retires; its unfinished jobs are aborted.
    DeleteDestination {
        workspace: WorkspaceId,
        id: DestinationId,
    },
    /// Delete once delivered: its links end now, and maintenance deletes it once its lane
    /// has delivered what it had (`drain`).
    DrainDestination {
        workspace: WorkspaceId,
        id: DestinationId,
    },
    CreateSource {
        source: SourceWrite,
        key: KeyRotation,
    },
    /// Enabled, and the live links.
    UpdateSource(SourceWrite),
    /// Its keys stop working; what it accepted is still delivered.
    DeleteSource {
        workspace: WorkspaceId,
        id: SourceId,
    },
    /// A new key; with `others_expire_at`, a rotation.
    AddKey {
        workspace: WorkspaceId,
        source: SourceId,
        key: KeyRotation,
    },
}

impl Store {
    /// Makes every change of `steps`, in order, in one transaction: all or nothing. Returns
    /// the new catalog version, or `None` when no step changed anything (then no version is
    /// used and nothing is audited).
    pub async fn catalog_apply(
        &self,
        steps: &[CatalogStep],
        audit: &Audit,
    ) -> Result<Option<i64>, CatalogError> {
        let sealer = self.sealer()?;
        let mut tx = self.catalog_tx().await?;
        let mut changes = Vec::new();
        for step in steps {
            if let Some(change) = apply_step(&mut tx, step, audit, sealer).await? {
                changes.push(change);
            }
        }
        if changes.is_empty() {
            return Ok(None);
        }
        Self::catalog_commit(tx, audit, &changes).await.map(Some)
    }

    async fn one(&self, step: CatalogStep, audit: &Audit) -> Result<Option<i64>, CatalogError> {
        self.catalog_apply(std::slice::from_ref(&step), audit).await
    }

    /// Creates a destination and its lane, linked to `sources` (of its workspace) from where
    /// the lane starts. Fails if the id is taken (in any workspace).
    pub async fn destination_create(
        &self,
        d: &DestinationConfig,
        start: DestinationStart,
        sources: &[SourceId],
        audit: &Audit,
    ) -> Result<i64, CatalogError> {
        let step = CatalogStep::CreateDestination {
            dest: d.clone(),
            start,
            sources: sources.to_vec(),
        };
        always(self.one(step, audit).await)
    }

    /// Replaces a destination's plugin, config and settings. Returns `None` when nothing
    /// changed (no version is used, no audit row written).
    pub async fn destination_update(
        &self,
        d: &DestinationConfig,
        audit: &Audit,
    ) -> Result<Option<i64>, CatalogError> {
        self.one(CatalogStep::UpdateDestination(d.clone()), audit)
            .await
    }

    /// Deletes a destination: its lane retires and its unfinished jobs are aborted.
    pub async fn destination_delete(
        &self,
        workspace: &str,
        id: &str,
        audit: &Audit,
    ) -> Result<i64, CatalogError> {
        let step = CatalogStep::DeleteDestination {
            workspace: named(workspace, "destination", workspace, id)?,
            id: named(id, "destination", workspace, id)?,
        };
        always(self.one(step, audit).await)
    }

    /// Deletes a destination once it has delivered what its sources accepted until now
    /// (`drain`). `None`: it drains already.
    pub async fn destination_drain(
        &self,
        workspace: &str,
        id: &str,
        audit: &Audit,
    ) -> Result<Option<i64>, CatalogError> {
        let step = CatalogStep::DrainDestination {
            workspace: named(workspace, "destination", workspace, id)?,
            id: named(id, "destination", workspace, id)?,
        };
        self.one(step, audit).await
    }

    /// Creates a source with its first write key and links.
    pub async fn source_create(
        &self,
        s: &SourceWrite,
        key: &KeyRotation,
        audit: &Audit,
    ) -> Result<i64, CatalogError> {
        let step = CatalogStep::CreateSource {
            source: s.clone(),
            key: key.clone(),
        };
        always(self.one(step, audit).await)
    }

    /// Changes whether a source is enabled and what it links to. `None`: nothing changed.
    pub async fn source_update(
        &self,
        s: &SourceWrite,
        audit: &Audit,
    ) -> Result<Option<i64>, CatalogError> {
        self.one(CatalogStep::UpdateSource(s.clone()), audit).await
    }

    /// Deletes a source: its keys stop working at once; what it accepted is still delivered.
    pub async fn source_delete(
        &self,
        workspace: &str,
        id: &str,
        audit: &Audit,
    ) -> Result<i64, CatalogError> {
        let step = CatalogStep::DeleteSource {
            workspace: named(workspace, "source", workspace, id)?,
            id: named(id, "source", workspace, id)?,
        };
        always(self.one(step, audit).await)
    }

    /// Adds a write key to a source; with `others_expire_at`, the source's other keys stop
    /// working then (a rotation with a grace period).
    pub async fn source_key_add(
        &self,
        workspace: &str,
        id: &str,
        key: &KeyRotation,
        audit: &Audit,
    ) -> Result<i64, CatalogError> {
        let step = CatalogStep::AddKey {
            workspace: named(workspace, "source", workspace, id)?,
            source: named(id, "source", workspace, id)?,
            key: key.clone(),
        };
        always(self.one(step, audit).await)
    }
}

impl Store {
    pub(super) async fn catalog_tx(&self) -> Result<Tx, CatalogError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(err("starting a catalog change"))?;
        // One catalog writer at a time: versions, audit order and link ranges follow commit
        // order, and a check (does it exist?) holds until the write commits.
        sqlx::query("SELECT version FROM catalog_version FOR UPDATE")
            .execute(&mut *tx)
            .await
            .map_err(err("locking the catalog"))?;
        Ok(tx)
    }

    /// Commits changes: bumps the version once, writes their audit rows, notifies every host.
    pub(super) async fn catalog_commit(
        mut tx: Tx,
        audit: &Audit,
        changes: &[OwnedChange],
    ) -> Result<i64, CatalogError> {
        let version: i64 = sqlx::query_scalar(
            "UPDATE catalog_version SET version = version + 1 RETURNING version",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(err("bumping the catalog version"))?;
        for c in changes {
            sqlx::query(
                "INSERT INTO catalog_audit (version, actor, action, kind, workspace_id, item_id,
                                            before, after)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(version)
            .bind(&audit.actor)
            .bind(c.action)
            .bind(c.kind)
            .bind(&c.workspace)
            .bind(&c.item)
            .bind(&c.before)
            .bind(&c.after)
            .execute(&mut *tx)
            .await
            .map_err(err("auditing a catalog change"))?;
        }
        notify(
            &mut *tx,
            &format!("catalog {version}"),
            "announcing a catalog change",
        )
        .await?;
        tx.commit()
            .await
            .map_err(err("committing a catalog change"))?;
        Ok(version)
    }
}

/// A step that always changes something has a version.
fn always(version: Result<Option<i64>, CatalogError>) -> Result<i64, CatalogError> {
    version?.ok_or_else(|| CatalogError::Conflict("the change changed nothing".into()))
}

/// An id from a path (`text`, the workspace's or the item's): one that is not valid names
/// nothing.
fn named<T: TryFrom<String>>(
    text: &str,
    kind: &'static str,
    workspace: &str,
    id: &str,
) -> Result<T, CatalogError> {
    T::try_from(text.to_string()).map_err(|_| CatalogError::NotFound {
        kind,
        workspace: workspace.to_string(),
        id: id.to_string(),
    })
}

/// One step inside the catalog transaction; `None` when it changed nothing.
async fn apply_step(
    tx: &mut Tx,
    step: &CatalogStep,
    audit: &Audit,
    sealer: &Sealer,
) -> Result<Option<OwnedChange>, CatalogError> {
    Ok(Some(match step {
        CatalogStep::CreateDestination {
            dest,
            start,
            sources,
        } => {
            dest.validate()?;
            let start_id = insert_destination(tx, dest, *start, audit, sealer).await?;
            for s in sources {
                link_new(tx, dest, s, start_id).await?;
            }
            OwnedChange::new("create", "destination", &dest.workspace, &dest.id)
                .after(audited(dest, audit))
        }
        CatalogStep::UpdateDestination(d) => {
            d.validate()?;
            let before = destination_row(tx, &d.workspace, &d.id, sealer).await?;
            refuse_if_draining(tx, &d.workspace, &d.id).await?;
            if before.ordering != d.ordering {
                return Err(CatalogError::Invalid(
                    sluice_core::catalog::InvalidItem::new(
                        "ordering",
                        format!(
                            "a destination's ordering cannot change (it is `{}`); create a new \
                         destination instead",
                            ordering_name(before.ordering)
                        ),
                    ),
                ));
            }
            if before == *d {
                return Ok(None);
            }
            update_destination(tx, d, audit, sealer).await?;
            OwnedChange::new("update", "destination", &d.workspace, &d.id)
                .before(audited(&before, audit))
                .after(audited(d, audit))
        }
        CatalogStep::DeleteDestination { workspace, id } => {
            let before = destination_row(tx, workspace, id, sealer).await?;
            delete_destination(tx, workspace, id).await?;
            OwnedChange::new("delete", "destination", workspace, id).before(audited(&before, audit))
        }
        CatalogStep::DrainDestination { workspace, id } => {
            return start_drain(tx, workspace, id, audit, sealer).await;
        }
        CatalogStep::CreateSource { source, key } => {
            source.settings.limits.validate()?;
            insert_source(tx, source, key).await?;
            OwnedChange::new("create", "source", &source.workspace, &source.id)
                .after(source_json(source))
        }
        CatalogStep::UpdateSource(s) => {
            s.settings.limits.validate()?;
            let before = source_row(tx, &s.workspace, &s.id).await?;
            if before == *s {
                return Ok(None);
            }
            for d in s
                .destinations
                .iter()
                .filter(|d| !before.destinations.contains(d))
            {
                refuse_if_draining(tx, &s.workspace, d).await?;
            }
            sqlx::query(
                "UPDATE sources SET enabled = $3, settings = $4, updated_at = now()
                 WHERE workspace_id = $1 AND id = $2",
            )
            .bind(&s.workspace)
            .bind(&s.id)
            .bind(s.enabled)
            .bind(sqlx::types::Json(&s.settings))
            .execute(&mut **tx)
            .await
            .map_err(err("updating a source"))?;
            set_links(tx, s).await?;
            OwnedChange::new("update", "source", &s.workspace, &s.id)
                .before(source_json(&before))
                .after(source_json(s))
        }
        CatalogStep::DeleteSource { workspace, id } => {
            let before = source_row(tx, workspace, id).await?;
            let unlinked = SourceWrite {
                destinations: Vec::new(),
                ..before.clone()
            };
            set_links(tx, &unlinked).await?;
            sqlx::query("DELETE FROM sources WHERE workspace_id = $1 AND id = $2")
                .bind(workspace)
                .bind(id)
                .execute(&mut **tx)
                .await
                .map_err(err("deleting a source"))?;
            OwnedChange::new("delete", "source", workspace, id).before(source_json(&before))
        }
        CatalogStep::AddKey {
            workspace,
            source,
            key,
        } => {
            source_row(tx, workspace, source).await?;
            if let Some(at) = key.others_expire_at {
                sqlx::query(
                    "UPDATE source_keys SET expires_at = least(coalesce(expires_at, $3), $3)
                     WHERE workspace_id = $1 AND source_id = $2",
                )
                .bind(workspace)
                .bind(source)
                .bind(at)
                .execute(&mut **tx)
                .await
                .map_err(err("expiring old write keys"))?;
            }
            insert_key(tx, workspace, source, key).await?;
            OwnedChange::new("add_key", "source", workspace, source).after(serde_json::json!({
                "key": key.hint,
                "others_expire_at": key.others_expire_at.map(|t| t.unix_timestamp()),
            }))
        }
    }))
}

pub(super) fn source_json(s: &SourceWrite) -> serde_json::Value {
    serde_json::json!({
        "id": s.id, "workspace": s.workspace, "enabled": s.enabled,
        "destinations": s.destinations, "settings": s.settings,
    })
}

fn ordering_name(o: sluice_core::OrderingScope) -> &'static str {
    match o {
        sluice_core::OrderingScope::User => "user",
        sluice_core::OrderingScope::SourceUser => "source_user",
        sluice_core::OrderingScope::None => "none",
    }
}
