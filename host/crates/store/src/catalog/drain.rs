//! Deleting a destination with `drain` (docs/catalog.md): its unfinished jobs are delivered
//! first instead of dropped.
//!
//! Draining is a state of the destination (`destinations.draining_since`, migration 0010), not
//! a separate queue, so the lane that delivers it is the one it always had, with its ordering,
//! retries and fairness:
//! 1. The drain step ends every live link at the ingest head of its commit: the sources'
//!    events up to there still flow to it, nothing later does. The destination cannot be
//!    updated or linked again while it drains; a plain delete still drops what is left.
//! 2. Maintenance, on any host, deletes a draining destination once its lane has read past
//!    every link's end and it has no unfinished (pending or failed) job: the same delete as
//!    without `drain`, which then aborts nothing. A job that keeps failing holds the drain up to
//!    its retry window, like it holds its key; an operator can abort it to finish sooner.

use super::CatalogError;
use super::rows::{delete_destination, destination_row};
use super::sealed::audited;
use super::write::{Audit, OwnedChange, Tx, err};
use crate::Store;

/// Draining destinations whose lane is past every link's end, with no unfinished job. The
/// subqueries follow the lane (distributed by workspace under Citus), not the destination (a
/// reference table), so that they stay on the lane's shard.
const DRAINED: &str = "
    SELECT d.workspace_id, d.id FROM destinations d
    JOIN lanes l ON l.workspace_id = d.workspace_id AND l.destination_id = d.id
    WHERE d.draining_since IS NOT NULL
      AND l.cursor >= coalesce((SELECT max(r.until_id) FROM routes r
                                WHERE r.workspace_id = l.workspace_id
                                  AND r.destination_id = l.destination_id), 0)
      AND NOT EXISTS (SELECT 1 FROM job_state s
                      WHERE s.workspace_id = l.workspace_id
                        AND s.destination_id = l.destination_id
                        AND s.state IN ('pending', 'failed'))
    ORDER BY d.workspace_id, d.id";

/// Whether the destination drains (`NotFound` if there is none).
pub(super) async fn is_draining(
    tx: &mut Tx,
    workspace: &str,
    id: &str,
) -> Result<bool, CatalogError> {
    let since: Option<Option<time::OffsetDateTime>> = sqlx::query_scalar(
        "SELECT draining_since FROM destinations WHERE workspace_id = $1 AND id = $2",
    )
    .bind(workspace)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(err("reading whether a destination drains"))?;
    match since {
        Some(since) => Ok(since.is_some()),
        None => Err(CatalogError::NotFound {
            kind: "destination",
            workspace: workspace.to_string(),
            id: id.to_string(),
        }),
    }
}

/// Refuses a change to a draining destination (one that does not exist is left to the
/// change's own checks).
pub(super) async fn refuse_if_draining(
    tx: &mut Tx,
    workspace: &str,
    id: &str,
) -> Result<(), CatalogError> {
    if matches!(is_draining(tx, workspace, id).await, Ok(true)) {
        return Err(CatalogError::Conflict(format!(
            "destination `{id}` is draining (deleted with drain): it is deleted once it has \
             delivered what it had; delete it without drain to drop that instead"
        )));
    }
    Ok(())
}

/// Starts the drain: the destination's live links end at the head. Returns `None` when it
/// already drains (nothing changes).
pub(super) async fn start_drain(
    tx: &mut Tx,
    workspace: &str,
    id: &str,
    audit: &Audit,
    sealer: &crate::sealer::Sealer,
) -> Result<Option<OwnedChange>, CatalogError> {
    let before = destination_row(tx, workspace, id, sealer).await?;
    if is_draining(tx, workspace, id).await? {
        return Ok(None);
    }
    let head = super::rows::workspace_head(tx, workspace).await?;
    sqlx::query(
        "UPDATE routes SET until_id = $3
         WHERE workspace_id = $1 AND destination_id = $2 AND until_id IS NULL",
    )
    .bind(workspace)
    .bind(id)
    .bind(head)
    .execute(&mut **tx)
    .await
    .map_err(err("ending a draining destination's links"))?;
    sqlx::query(
        "UPDATE destinations SET draining_since = now(), updated_at = now()
         WHERE workspace_id = $1 AND id = $2",
    )
    .bind(workspace)
    .bind(id)
    .execute(&mut **tx)
    .await
    .map_err(err("marking a destination draining"))?;
    Ok(Some(
        OwnedChange::new("drain", "destination", workspace, id)
            .before(audited(&before, audit))
            .after(serde_json::json!({ "draining_until_event": head })),
    ))
}

/// What a maintenance pass did about draining destinations.
#[derive(Debug, Default, PartialEq)]
pub struct DrainPass {
    /// The catalog version of the deletion, and the `(workspace, id)`s it deleted.
    pub finished: Option<(i64, Vec<(String, String)>)>,
    /// Destinations still draining after the pass.
    pub draining: usize,
}

impl Store {
    /// Deletes the draining destinations that have delivered what they had (maintenance runs
    /// it on every host; the catalog lock makes the first one do it).
    pub async fn catalog_finish_drains(&self) -> Result<DrainPass, CatalogError> {
        // Without the lock first: most passes find nothing, and should not queue behind
        // catalog writers for that.
        let draining: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM destinations WHERE draining_since IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(err("counting draining destinations"))?;
        if draining == 0 {
            return Ok(DrainPass::default());
        }
        let draining = usize::try_from(draining).unwrap_or(usize::MAX);
        let candidates: Vec<(String, String)> = sqlx::query_as(DRAINED)
            .fetch_all(&self.pool)
            .await
            .map_err(err("finding drained destinations"))?;
        if candidates.is_empty() {
            return Ok(DrainPass {
                finished: None,
                draining,
            });
        }
        let sealer = self.sealer()?;
        let mut tx = self.catalog_tx().await?;
        // Again under the lock: another host may have finished them.
        let drained: Vec<(String, String)> = sqlx::query_as(DRAINED)
            .fetch_all(&mut *tx)
            .await
            .map_err(err("finding drained destinations"))?;
        if drained.is_empty() {
            return Ok(DrainPass {
                finished: None,
                draining,
            });
        }
        // No plugin manifests here: the audit masks the whole config.
        let audit = Audit {
            actor: "sluice (drained)".into(),
            secrets: Default::default(),
        };
        let mut changes = Vec::new();
        for (workspace, id) in &drained {
            let before = destination_row(&mut tx, workspace, id, sealer).await?;
            delete_destination(&mut tx, workspace, id).await?;
            changes.push(
                OwnedChange::new("delete", "destination", workspace, id)
                    .before(audited(&before, &audit)),
            );
        }
        let version = Self::catalog_commit(tx, &audit, &changes).await?;
        Ok(DrainPass {
            draining: draining.saturating_sub(drained.len()),
            finished: Some((version, drained)),
        })
    }
}
