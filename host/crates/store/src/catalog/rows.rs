//! The catalog's rows, one statement group per helper, inside a catalog transaction
//! (`write::Store::catalog_apply`): destinations and their lanes, sources, write keys, and
//! the links between them.

use sluice_core::catalog::{DestinationConfig, SourceSettings};
use sluice_core::{DestinationId, SourceId, WorkspaceId};

use super::sealed::{open_config, seal_config, shown_config};
use super::write::{Audit, DestinationStart, KeyRotation, SourceWrite, Tx, err};
use super::{CatalogError, Settings};
use crate::sealer::Sealer;

pub(super) async fn update_destination(
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

pub(super) async fn ensure_workspace(tx: &mut Tx, workspace: &str) -> Result<(), CatalogError> {
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
    let start_id = start_id(tx, &d.workspace, start).await?;
    sqlx::query(
        "INSERT INTO lanes AS l (workspace_id, destination_id, ordering, start_id, cursor,
                                 claimed_to)
         VALUES ($1, $2, $3, $4, $4, $4)
         ON CONFLICT (workspace_id, destination_id) DO UPDATE
         SET ordering = excluded.ordering, start_id = excluded.start_id,
             cursor = excluded.cursor, claimed_to = excluded.claimed_to, retired_at = NULL,
             owner = NULL, lease_until = NULL, owner_epoch = l.owner_epoch + 1, next_due = NULL,
             paused_at = NULL, paused_by = NULL, plugin_error = NULL,
             updated_at = excluded.updated_at
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
pub(super) async fn link_new(
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

/// The id after which a new lane's jobs begin: its workspace's head (`Now`), or before the
/// first retained event (of any workspace: an id below the workspace's own is as good).
pub(super) async fn start_id(
    tx: &mut Tx,
    workspace: &str,
    start: DestinationStart,
) -> Result<i64, CatalogError> {
    let sql = match start {
        DestinationStart::Now => {
            "SELECT coalesce((SELECT last_id FROM workspace_heads WHERE workspace_id = $1), 0)"
        }
        // The first retained event's predecessor: every retained event is the lane's.
        DestinationStart::Earliest => {
            "SELECT coalesce((SELECT min(id) - 1 FROM events),
                             (SELECT last_id FROM workspace_heads WHERE workspace_id = $1), 0)"
        }
        DestinationStart::At(_) => {
            "SELECT coalesce((SELECT min(id) - 1 FROM events WHERE received_at >= $2),
                             (SELECT last_id FROM workspace_heads WHERE workspace_id = $1), 0)"
        }
    };
    let mut q = sqlx::query_scalar(sql).bind(workspace);
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
pub(super) async fn destination_row(
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
        "INSERT INTO sources (workspace_id, id, enabled, settings) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(&s.workspace)
    .bind(&s.id)
    .bind(s.enabled)
    .bind(sqlx::types::Json(&s.settings))
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

pub(super) async fn insert_key(
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
pub(super) async fn source_row(
    tx: &mut Tx,
    workspace: &str,
    id: &str,
) -> Result<SourceWrite, CatalogError> {
    let row: Option<(bool, sqlx::types::Json<SourceSettings>)> = sqlx::query_as(
        "SELECT enabled, settings FROM sources WHERE workspace_id = $1 AND id = $2 FOR UPDATE",
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
    let (enabled, settings) = row.ok_or_else(not_found)?;
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
        settings: settings.0,
    })
}

/// Makes a source's live links exactly `s.destinations`, at the current ingest head: links
/// that go get `until_id = head` (what the source accepted before still flows), new ones get
/// `from_id = head`. A link made again after an unlink reopens the old one when the source
/// accepted nothing in between; otherwise it starts at the head, once the lane has read past
/// the old link's end (before that, the change is refused: the two ranges would overlap).
pub(super) async fn set_links(tx: &mut Tx, s: &SourceWrite) -> Result<(), CatalogError> {
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
    let head = workspace_head(tx, &s.workspace).await?;
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

/// The workspace's ingest head: its last committed event id (0 before its first).
pub(super) async fn workspace_head(tx: &mut Tx, workspace: &str) -> Result<i64, CatalogError> {
    sqlx::query_scalar(
        "SELECT coalesce((SELECT last_id FROM workspace_heads WHERE workspace_id = $1), 0)",
    )
    .bind(workspace)
    .fetch_one(&mut **tx)
    .await
    .map_err(err("reading the workspace's ingest head"))
}
