//! The PostgreSQL job store: every database operation Sluice performs is a method here, each one
//! transaction, taking and returning domain types (no sqlx type leaves this module).
//!
//! The schema (`migrations/`) is documented there and is a public interface. The ordering
//! invariant lives in [`claim`].

mod claim;
mod complete;
mod insert;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use time::OffsetDateTime;

pub use claim::ClaimedJob;
pub use complete::{JobUpdate, NextState};
pub use insert::{InsertOutcome, NewEvent};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Errors at the store boundary. `Unavailable` means "try again later" (HTTP 503).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error while {action}: {source}")]
    Query {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating the job store failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    fn from_sqlx(action: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| match source {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(source),
            source => StoreError::Query { action, source },
        }
    }

    /// Whether a client should retry the request later (connection trouble, not a bad query).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Handle to the job store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(StoreError::from_sqlx("parsing the database URL"))?;
        let options = options.application_name("sluice");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // Short: ingest answers 503 rather than hanging when the database is gone.
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(StoreError::from_sqlx("connecting"))?;
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool })
    }

    /// Closes every connection (shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Cheap liveness check for `/health`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx("pinging"))?;
        Ok(())
    }

    /// Boot-time recovery: jobs left `executing` by a process that died are not known to have
    /// been delivered, so they count one (interrupted) attempt and are retried at once. They stay
    /// the head of their key, so order is kept across restarts. Returns how many were recovered.
    pub async fn job_recover_executing(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE job_state SET state = 'failed', attempt = attempt + 1,
                    error_code = 'interrupted',
                    error_text = 'sluice stopped while this job was being delivered',
                    next_attempt_at = now(), updated_at = now()
             WHERE state = 'executing'",
        )
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("recovering executing jobs"))?;
        Ok(done.rows_affected())
    }

    /// When the earliest failed job of a destination becomes due (for the router's sleep).
    pub async fn job_next_due(
        &self,
        destination_id: &str,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let row = sqlx::query(
            "SELECT min(next_attempt_at) AS due FROM job_state
             WHERE destination_id = $1 AND state = 'failed'",
        )
        .bind(destination_id)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("reading the next retry time"))?;
        Ok(row.get("due"))
    }

    /// Forgets dedup keys older than `window`; returns how many were removed.
    pub async fn dedup_expire(&self, window: Duration) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM dedup_keys WHERE received_at < now() - make_interval(secs => $1)",
        )
        .bind(window.as_secs_f64())
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("expiring dedup keys"))?;
        Ok(done.rows_affected())
    }
}
