//! The operator functions of migration 0004, called for an admin token: one transaction that
//! first sets `sluice.audit_filter` (read by `sluice_audit`, migration 0005) so the audit row
//! carries the filter the caller chose its jobs with, and passes the token's name as actor.

use crate::{JobState, LaneId, Store, StoreError};

/// What to do to a lane's jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAction {
    RetryNow,
    Abort,
    Replay,
}

impl OperatorAction {
    /// The jobs the action can change (the functions ignore the others).
    pub fn states(self) -> &'static [JobState] {
        match self {
            OperatorAction::RetryNow => &[JobState::Failed],
            OperatorAction::Abort => &[JobState::Pending, JobState::Failed],
            OperatorAction::Replay => &[JobState::Aborted],
        }
    }

    fn sql(self) -> &'static str {
        match self {
            OperatorAction::RetryNow => "SELECT sluice_retry_now($1, $2, $3, $4)",
            OperatorAction::Abort => "SELECT sluice_abort($1, $2, $3, $4)",
            OperatorAction::Replay => "SELECT sluice_replay($1, $2, $3, $4)",
        }
    }
}

impl Store {
    /// Runs `action` on the given jobs (`None`: every job of the lane it applies to).
    /// Returns how many jobs it changed.
    pub async fn operator_jobs(
        &self,
        lane: &LaneId,
        action: OperatorAction,
        event_ids: Option<&[i64]>,
        actor: &str,
        filter: &serde_json::Value,
    ) -> Result<i32, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::from_sqlx("starting an operator action"))?;
        set_audit_filter(&mut tx, filter).await?;
        let n: i32 = sqlx::query_scalar(action.sql())
            .bind(&lane.workspace_id)
            .bind(&lane.destination_id)
            .bind(event_ids)
            .bind(actor)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("running an operator action"))?;
        tx.commit()
            .await
            .map_err(StoreError::from_sqlx("committing an operator action"))?;
        Ok(n)
    }

    /// Pauses (`true`) or resumes a lane; `false` if there is no such lane.
    pub async fn operator_pause(
        &self,
        lane: &LaneId,
        pause: bool,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::from_sqlx("starting an operator action"))?;
        set_audit_filter(&mut tx, &serde_json::Value::Null).await?;
        let sql = if pause {
            "SELECT sluice_pause($1, $2, $3)"
        } else {
            "SELECT sluice_resume($1, $2, $3)"
        };
        let changed: bool = sqlx::query_scalar(sql)
            .bind(&lane.workspace_id)
            .bind(&lane.destination_id)
            .bind(actor)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("pausing or resuming a lane"))?;
        tx.commit()
            .await
            .map_err(StoreError::from_sqlx("committing an operator action"))?;
        Ok(changed)
    }
}

/// `SET LOCAL sluice.audit_filter`, as `set_config(..., true)` so that the value is a bound
/// parameter; JSON null clears it (the audit row's filter is then null).
async fn set_audit_filter(
    tx: &mut sqlx::PgConnection,
    filter: &serde_json::Value,
) -> Result<(), StoreError> {
    let text = if filter.is_null() {
        String::new()
    } else {
        filter.to_string()
    };
    sqlx::query("SELECT set_config('sluice.audit_filter', $1, true)")
        .bind(text)
        .execute(tx)
        .await
        .map_err(StoreError::from_sqlx("setting the audit filter"))?;
    Ok(())
}
