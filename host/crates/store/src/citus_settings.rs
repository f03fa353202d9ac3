//! Settings of a Citus coordinator that Sluice depends on, checked at start.
//!
//! `citus.recover_2pc_interval`: a two-phase commit that a worker outage cut short leaves a
//! prepared transaction on the worker, holding its locks once the worker is back, until the
//! coordinator's recovery resolves it. Ingest for the workspaces whose shards it locks waits
//! until then, so the default (a minute) turns a worker's restart into up to a minute of 503s
//! for its workspaces (docs/scaling.md, "A worker down").

use sqlx::PgPool;

use super::StoreError;

/// Recovery slower than this (or off) is worth a warning.
const RECOVERY_WARN_MS: i64 = 10_000;

/// Logs a warning for each setting of the coordinator that would hold ingest up.
pub(crate) async fn check(pool: &PgPool) -> Result<(), StoreError> {
    let interval: Option<String> = sqlx::query_scalar(
        "SELECT setting FROM pg_settings WHERE name = 'citus.recover_2pc_interval'",
    )
    .fetch_optional(pool)
    .await
    .map_err(StoreError::from_sqlx("reading Citus' settings"))?;
    if let Some(warning) = interval.as_deref().and_then(recovery_warning) {
        tracing::warn!("{warning}");
    }
    Ok(())
}

/// The warning for `citus.recover_2pc_interval` at `setting` (milliseconds), if it needs one.
fn recovery_warning(setting: &str) -> Option<String> {
    let ms: i64 = setting.trim().parse().ok()?;
    let what = if ms < 0 {
        "off".to_string()
    } else if ms > RECOVERY_WARN_MS {
        format!("{} s", ms / 1000)
    } else {
        return None;
    };
    Some(format!(
        "citus.recover_2pc_interval is {what}: after a worker outage, ingest for its workspaces \
         may wait that long for a prepared transaction to be resolved; set it to a few seconds \
         on the coordinator (ALTER SYSTEM SET citus.recover_2pc_interval = '2s'; SELECT \
         pg_reload_conf();)"
    ))
}

#[cfg(test)]
mod tests {
    use super::recovery_warning;

    #[test]
    fn slow_or_disabled_recovery_is_warned_about() {
        assert!(recovery_warning("60000").is_some_and(|w| w.contains("is 60 s")));
        assert!(recovery_warning("-1").is_some_and(|w| w.contains("is off")));
        assert_eq!(recovery_warning("2000"), None);
        assert_eq!(recovery_warning("10000"), None);
        assert_eq!(recovery_warning("not a number"), None);
    }
}
