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
    DestinationConfig, KeyHash, SourceConfig, key_hint, key_sha256, masked_config,
};
use sluice_core::{DestinationId, SourceId, WorkspaceId};

use super::{CatalogError, Settings};
use crate::notify::notify;
use crate::sealer::{SealError, Sealer};
use crate::{Store, StoreError};

type Tx = Transaction<'static, Postgres>;

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
        }
    }
}

fn err(action: &'static str) -> impl FnOnce(sqlx::Error) -> CatalogError {
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
        CatalogStep::CreateSource { source, key } => {
            insert_source(tx, source, key).await?;
            OwnedChange::new("create", "source", &source.workspace, &source.id)
                .after(source_json(source))
        }
        CatalogStep::UpdateSource(s) => {
            let before = source_row(tx, &s.workspace, &s.id).await?;
            if before == *s {
                return Ok(None);
            }
            sqlx::query(
                "UPDATE sources SET enabled = $3, updated_at = now()
                 WHERE workspace_id = $1 AND id = $2",
            )
            .bind(&s.workspace)
            .bind(&s.id)
            .bind(s.enabled)
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

async fn update_destination(
    tx: &mut Tx,
    d: &DestinationConfig,
    audit: &Audit,
    sealer: &Sealer,
) -> Result<(), CatalogError> {
    sqlx::query(
        "UPDATE destinations SET plugin = $3, config = $4, settings = $5, config_sealed = $6,
                revision = revision + 1, updated_at = now()
         WHERE workspace_id = $1 AND id = $2",
    )
    .bind(&d.workspace)
    .bind(&d.id)
    .bind(&d.plugin)
    .bind(shown_config(d, audit))
    .bind(sqlx::types::Json(Settings::of(d)))
    .bind(seal_config(d, sealer))
    .execute(&mut **tx)
    .await
    .map_err(err("updating a destination"))?;
    Ok(())
}

/// The audit's view of a destination: its secret paths masked.
pub(super) fn audited(d: &DestinationConfig, audit: &Audit) -> serde_json::Value {
    let mut v = serde_json::to_value(d).unwrap_or_default();
    if let Some(c) = v.get_mut("config") {
        *c = shown_config(d, audit);
    }
    v
}

/// The config as `destinations.config` and the audit show it: declared secrets and URL
/// credentials masked.
fn shown_config(d: &DestinationConfig, audit: &Audit) -> serde_json::Value {
    masked_config(&d.config, audit.secrets.get(&d.plugin).map(Vec::as_slice))
}

/// What binds a sealed config to its destination.
pub(super) fn aad(workspace: &str, id: &str) -> Vec<u8> {
    format!("destination {workspace}/{id}").into_bytes()
}

fn seal_config(d: &DestinationConfig, sealer: &Sealer) -> Vec<u8> {
    sealer.seal(d.config.to_string().as_bytes(), &aad(&d.workspace, &d.id))
}

/// A destination's config from its sealed form.
pub(super) fn open_config(
    sealer: &Sealer,
    workspace: &str,
    id: &str,
    sealed: &[u8],
) -> Result<serde_json::Value, StoreError> {
    let sealed_error = |source| StoreError::Sealed {
        workspace: workspace.to_string(),
        destination: id.to_string(),
        source,
    };
    let plain = sealer
        .open(sealed, &aad(workspace, id))
        .map_err(sealed_error)?;
    serde_json::from_slice(&plain).map_err(|_| sealed_error(SealError::Damaged))
}

pub(super) fn source_json(s: &SourceWrite) -> serde_json::Value {
    serde_json::json!({
        "id": s.id, "workspace": s.workspace, "enabled": s.enabled,
        "destinations": s.destinations,
    })
}

fn ordering_name(o: sluice_core::OrderingScope) -> &'static str {
    match o {
        sluice_core::OrderingScope::User => "user",
        sluice_core::OrderingScope::SourceUser => "source_user",
        sluice_core::OrderingScope::None => "none",
    }
}

async fn ensure_workspace(tx: &mut Tx, workspace: &str) -> Result<(), CatalogError> {
    sqlx::query("INSERT INTO workspaces (id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(workspace)
        .execute(&mut **tx)
        .await
        .map_err(err("writing a workspace"))?;
    Ok(())
}

/// The destination row and its lane. A lane left by a deleted destination of the same id
/// starts afresh; a live lane (written before the catalog existed) keeps its place.
/// Returns the id the lane starts after.
pub(super) async fn insert_destination(
    tx: &mut Tx,
    d: &DestinationConfig,
    start: DestinationStart,
    audit: &Audit,
    sealer: &Sealer,
) -> Result<i64, CatalogError> {
    ensure_workspace(tx, &d.workspace).await?;
    let inserted = sqlx::query(
        "INSERT INTO destinations (workspace_id, id, plugin, config, ordering, settings,
                                   config_sealed)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(&d.workspace)
    .bind(&d.id)
    .bind(&d.plugin)
    .bind(shown_config(d, audit))
    .bind(d.ordering)
    .bind(sqlx::types::Json(Settings::of(d)))
    .bind(seal_config(d, sealer))
    .execute(&mut **tx)
    .await
    .map_err(err("writing a destination"))?;
    if inserted.rows_affected() == 0 {
        return Err(CatalogError::Conflict(format!(
            "id: destination `{}` exists already",
            d.id
        )));
    }
    let start_id = start_id(tx, start).await?;
    sqlx::query(
        "INSERT INTO lanes AS l (workspace_id, destination_id, ordering, start_id, cursor,
                                 claimed_to)
         VALUES ($1, $2, $3, $4, $4, $4)
         ON CONFLICT (workspace_id, destination_id) DO UPDATE
         SET ordering = excluded.ordering, start_id = excluded.start_id,
             cursor = excluded.cursor, claimed_to = excluded.claimed_to, retired_at = NULL,
             owner = NULL, lease_until = NULL, owner_epoch = l.owner_epoch + 1, next_due = NULL,
             paused_at = NULL, paused_by = NULL, plugin_error = NULL, updated_at = now()
         WHERE l.retired_at IS NOT NULL",
    )
    .bind(&d.workspace)
    .bind(&d.id)
    .bind(d.ordering)
    .bind(start_id)
    .execute(&mut **tx)
    .await
    .map_err(err("writing a lane"))?;
    Ok(start_id)
}

/// Links a source of the new destination's workspace to it, from the lane's start.
async fn link_new(
    tx: &mut Tx,
    d: &DestinationConfig,
    source: &SourceId,
    from_id: i64,
) -> Result<(), CatalogError> {
    let linked = sqlx::query(
        "INSERT INTO routes (workspace_id, destination_id, source_id, from_id)
         SELECT s.workspace_id, $2, s.id, $3 FROM sources s
         WHERE s.workspace_id = $1 AND s.id = $4
         ON CONFLICT (workspace_id, destination_id, source_id)
         DO UPDATE SET from_id = excluded.from_id, until_id = NULL",
    )
    .bind(&d.workspace)
    .bind(&d.id)
    .bind(from_id)
    .bind(source)
    .execute(&mut **tx)
    .await
    .map_err(err("linking a source"))?;
    if linked.rows_affected() == 0 {
        return Err(CatalogError::Invalid(
            sluice_core::catalog::InvalidItem::new(
                "sources",
                format!("no source `{source}` in workspace `{}`", d.workspace),
            ),
        ));
    }
    Ok(())
}

/// The id after which a new lane's jobs begin.
async fn start_id(tx: &mut Tx, start: DestinationStart) -> Result<i64, CatalogError> {
    let sql = match start {
        DestinationStart::Now => "SELECT last_id FROM ingest_head",
        // The first retained event's predecessor: every retained event is the lane's.
        DestinationStart::Earliest => {
            "SELECT coalesce((SELECT min(id) - 1 FROM events), (SELECT last_id FROM ingest_head))"
        }
        DestinationStart::At(_) => {
            "SELECT coalesce((SELECT min(id) - 1 FROM events WHERE received_at >= $1),
                             (SELECT last_id FROM ingest_head))"
        }
    };
    let mut q = sqlx::query_scalar(sql);
    if let DestinationStart::At(t) = start {
        q = q.bind(t);
    }
    q.fetch_one(&mut **tx)
        .await
        .map_err(err("finding where a new lane starts"))
}

pub(super) async fn delete_destination(
    tx: &mut Tx,
    workspace: &str,
    id: &str,
) -> Result<(), CatalogError> {
    let steps: [(&str, &'static str); 4] = [
        (
            "DELETE FROM destinations WHERE workspace_id = $1 AND id = $2",
            "deleting a destination",
        ),
        // Retired and fenced: the owner's next write fails, and it stops.
        (
            "UPDATE lanes SET retired_at = now(), owner = NULL, lease_until = NULL,
                    owner_epoch = owner_epoch + 1, next_due = NULL, updated_at = now()
             WHERE workspace_id = $1 AND destination_id = $2",
            "retiring a lane",
        ),
        (
            "UPDATE job_state SET state = 'aborted', error_code = 'destination_deleted',
                    error_text = 'the destination was deleted', updated_at = now()
             WHERE workspace_id = $1 AND destination_id = $2 AND state IN ('pending', 'failed')",
            "aborting a deleted destination's jobs",
        ),
        (
            "DELETE FROM blocked_keys WHERE workspace_id = $1 AND destination_id = $2",
            "clearing a deleted destination's keys",
        ),
    ];
    for (sql, action) in steps {
        sqlx::query(sql)
            .bind(workspace)
            .bind(id)
            .execute(&mut **tx)
            .await
            .map_err(err(action))?;
    }
    sqlx::query("DELETE FROM routes WHERE workspace_id = $1 AND destination_id = $2")
        .bind(workspace)
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(err("deleting a destination's links"))?;
    Ok(())
}

/// A destination as stored, or `NotFound`.
async fn destination_row(
    tx: &mut Tx,
    workspace: &str,
    id: &str,
    sealer: &Sealer,
) -> Result<DestinationConfig, CatalogError> {
    let row: Option<(
        String,
        Vec<u8>,
        sluice_core::OrderingScope,
        sqlx::types::Json<Settings>,
    )> = sqlx::query_as(
        "SELECT plugin, config_sealed, ordering, settings FROM destinations
         WHERE workspace_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(workspace)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(err("reading a destination"))?;
    let not_found = || CatalogError::NotFound {
        kind: "destination",
        workspace: workspace.to_string(),
        id: id.to_string(),
    };
    let (plugin, sealed, ordering, settings) = row.ok_or_else(not_found)?;
    let config = open_config(sealer, workspace, id, &sealed)?;
    let s = settings.0;
    Ok(DestinationConfig {
        id: DestinationId::try_from(id).map_err(|_| not_found())?,
        workspace: WorkspaceId::try_from(workspace).map_err(|_| not_found())?,
        plugin,
        config,
        ordering,
        retry: s.retry,
        max_concurrency: s.max_concurrency,
        rate_limit: s.rate_limit,
        allowed_private_networks: s.allowed_private_networks,
        filter: s.filter,
    })
}

pub(super) async fn insert_source(
    tx: &mut Tx,
    s: &SourceWrite,
    key: &KeyRotation,
) -> Result<(), CatalogError> {
    ensure_workspace(tx, &s.workspace).await?;
    let inserted = sqlx::query(
        "INSERT INTO sources (workspace_id, id, enabled) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(&s.workspace)
    .bind(&s.id)
    .bind(s.enabled)
    .execute(&mut **tx)
    .await
    .map_err(err("writing a source"))?;
    if inserted.rows_affected() == 0 {
        return Err(CatalogError::Conflict(format!(
            "id: source `{}` exists already",
            s.id
        )));
    }
    insert_key(tx, &s.workspace, &s.id, key).await?;
    set_links(tx, s).await
}

async fn insert_key(
    tx: &mut Tx,
    workspace: &str,
    source: &str,
    key: &KeyRotation,
) -> Result<(), CatalogError> {
    let inserted = sqlx::query(
        "INSERT INTO source_keys (key_sha256, workspace_id, source_id, hint)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(key.sha256.as_slice())
    .bind(workspace)
    .bind(source)
    .bind(&key.hint)
    .execute(&mut **tx)
    .await
    .map_err(err("writing a write key"))?;
    if inserted.rows_affected() == 0 {
        return Err(CatalogError::Conflict(
            "write_key: this key is in use already".into(),
        ));
    }
    Ok(())
}

/// A source as stored (with its live links), or `NotFound`.
async fn source_row(tx: &mut Tx, workspace: &str, id: &str) -> Result<SourceWrite, CatalogError> {
    let enabled: Option<bool> = sqlx::query_scalar(
        "SELECT enabled FROM sources WHERE workspace_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(workspace)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(err("reading a source"))?;
    let not_found = || CatalogError::NotFound {
        kind: "source",
        workspace: workspace.to_string(),
        id: id.to_string(),
    };
    let enabled = enabled.ok_or_else(not_found)?;
    let destinations: Vec<DestinationId> = sqlx::query_scalar(
        "SELECT destination_id FROM routes
         WHERE workspace_id = $1 AND source_id = $2 AND until_id IS NULL ORDER BY destination_id",
    )
    .bind(workspace)
    .bind(id)
    .fetch_all(&mut **tx)
    .await
    .map_err(err("reading a source's links"))?;
    Ok(SourceWrite {
        id: SourceId::try_from(id).map_err(|_| not_found())?,
        workspace: WorkspaceId::try_from(workspace).map_err(|_| not_found())?,
        enabled,
        destinations,
    })
}

/// Makes a source's live links exactly `s.destinations`, at the current ingest head: links
/// that go get `until_id = head` (what the source accepted before still flows), new ones get
/// `from_id = head`. A link made again after an unlink reopens the old one when the source
/// accepted nothing in between; otherwise it starts at the head, once the lane has read past
/// the old link's end (before that, the change is refused: the two ranges would overlap).
async fn set_links(tx: &mut Tx, s: &SourceWrite) -> Result<(), CatalogError> {
    for d in &s.destinations {
        let known: Option<String> =
            sqlx::query_scalar("SELECT workspace_id FROM destinations WHERE id = $1")
                .bind(d)
                .fetch_optional(&mut **tx)
                .await
                .map_err(err("checking a link's destination"))?;
        match known {
            None => {
                return Err(CatalogError::Conflict(format!(
                    "destinations: unknown destination `{d}`"
                )));
            }
            Some(w) if w != s.workspace.as_str() => {
                return Err(CatalogError::Conflict(format!(
                    "destinations: destination `{d}` belongs to workspace `{w}`, not `{}`",
                    s.workspace
                )));
            }
            Some(_) => {}
        }
    }
    let head: i64 = sqlx::query_scalar("SELECT last_id FROM ingest_head")
        .fetch_one(&mut **tx)
        .await
        .map_err(err("reading the ingest head"))?;
    sqlx::query(
        "UPDATE routes SET until_id = $4
         WHERE workspace_id = $1 AND source_id = $2 AND until_id IS NULL
           AND NOT (destination_id = ANY ($3))",
    )
    .bind(&s.workspace)
    .bind(&s.id)
    .bind(&s.destinations)
    .bind(head)
    .execute(&mut **tx)
    .await
    .map_err(err("ending links"))?;
    for d in &s.destinations {
        let old: Option<(Option<i64>, i64)> = sqlx::query_as(
            "SELECT r.until_id, l.cursor FROM routes r
             JOIN lanes l ON l.workspace_id = r.workspace_id AND l.destination_id = r.destination_id
             WHERE r.workspace_id = $1 AND r.destination_id = $2 AND r.source_id = $3",
        )
        .bind(&s.workspace)
        .bind(d)
        .bind(&s.id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(err("reading a link"))?;
        let sql = match old {
            None => {
                "INSERT INTO routes (workspace_id, destination_id, source_id, from_id)
                 VALUES ($1, $2, $3, $4)"
            }
            Some((None, _)) => continue,
            Some((Some(until), cursor)) => {
                let gap: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM events
                                    WHERE workspace_id = $1 AND source_id = $2 AND id > $3)",
                )
                .bind(&s.workspace)
                .bind(&s.id)
                .bind(until)
                .fetch_one(&mut **tx)
                .await
                .map_err(err("reading a source's events"))?;
                if !gap {
                    "UPDATE routes SET until_id = NULL
                     WHERE workspace_id = $1 AND destination_id = $2 AND source_id = $3
                       AND $4 = $4"
                } else if cursor >= until {
                    "UPDATE routes SET from_id = $4, until_id = NULL
                     WHERE workspace_id = $1 AND destination_id = $2 AND source_id = $3"
                } else {
                    return Err(CatalogError::Conflict(format!(
                        "destinations: source `{}` was unlinked from `{d}` and the lane has not \
                         yet delivered what it accepted before (up to event {until}); link it \
                         again once it has",
                        s.id
                    )));
                }
            }
        };
        sqlx::query(sql)
            .bind(&s.workspace)
            .bind(d)
            .bind(&s.id)
            .bind(head)
            .execute(&mut **tx)
            .await
            .map_err(err("writing a link"))?;
    }
    Ok(())
}
