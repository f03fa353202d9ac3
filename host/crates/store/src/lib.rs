//! The PostgreSQL job store: every database operation Sluice performs is a method here, each one
//! transaction, taking and returning domain types (no sqlx type leaves this module).
//!
//! The schema (`migrations/`) is documented there and is a public interface. The pieces:
//! - [`append`]: ingest's write (ids, COPY into the log), under the [`ingest_lock`], with
//!   [`dedup`] keys;
//! - [`lanes`]: lanes and routes as the config says; [`leases`]: who owns a lane;
//!   [`hosts`]: the host registry; [`notify`]: wake-ups between hosts (LISTEN/NOTIFY);
//! - [`read`]: a lane reading its sources' events from the log (the lanes of a source share
//!   their reads on a host, and ingest hands them what it just committed: `read_cache`);
//! - [`commit`]: a lane owner recording outcomes and its cursor, fenced on its lease;
//! - [`blocked`]: fetching the unfinished jobs of blocked keys that are due;
//! - [`datasets`]: rotation, dropping and compaction of datasets (DDL helpers in `ddl`);
//! - [`lane_stats`], [`admin`]: what the admin API reads and does.
//!
//! The ordering invariant is stated in `sluice_engine::lane` and kept by the lane owner; the store
//! guarantees the two facts it rests on: the ids a reader sees form a prefix (ingest lock), and
//! one lane has one writer at a time (the lease fence).

pub mod admin;
pub mod append;
pub mod blocked;
pub mod catalog;
mod citus_settings;
pub mod commit;
pub mod datasets;
mod ddl;
pub mod dedup;
pub mod dedup_memory;
pub mod embedded_pg;
pub mod hosts;
pub mod ingest_lock;
pub mod lane_stats;
pub mod lanes;
pub mod leases;
pub mod notify;
pub mod plugins;
pub mod read;
mod read_cache;
pub mod sealer;
#[cfg(feature = "testing")]
pub mod testing;
mod types;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use append::{AppendOutcome, AppendRequest, NewEvent};
pub use blocked::{BlockedFetch, FetchLimits, RowJob};
pub use catalog::{
    Audit, CatalogError, CatalogStep, DestinationStart, DrainPass, KeyRotation, SeedReport,
    SourceWrite,
};
pub use commit::{CommitResult, LaneCommit, NewJobRow, RowUpdate};
pub use dedup::{Dedup, minute_of};
pub use hosts::HostInfo;
pub use lanes::LaneSpec;
pub use leases::{AcquiredLane, OrphanLane};
pub use notify::{Wake, WakeListener};
pub use plugins::LoadedVersion;
pub use read::{LogEvent, LogRead, ReadFrom, ReadLimits};
pub use types::{AttemptOutcome, JobState, LaneId, Lease, OrderingScope};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../../migrations");

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
    /// Another host took the lane over (our lease expired): our outcomes are not recorded and
    /// the new owner delivers those jobs again.
    #[error("the lease on lane {0} was lost to another host")]
    LeaseLost(LaneId),
    /// A destination's sealed config cannot be opened (a wrong or missing key).
    #[error("destination {workspace}/{destination}: {source}")]
    Sealed {
        workspace: String,
        destination: String,
        #[source]
        source: sealer::SealError,
    },
    /// The catalog holds sealed configs and this store has no key (`Store::with_sealer`).
    #[error("no secrets key: destination configs are sealed at rest (docs/catalog.md)")]
    NoSecretsKey,
}

impl StoreError {
    fn from_sqlx(action: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| {
            if is_connection_error(&source) {
                StoreError::Unavailable(source)
            } else {
                StoreError::Query { action, source }
            }
        }
    }

    /// Whether a client should retry the request later (connection trouble, not a bad query).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Connection trouble, as opposed to a query the server rejected.
fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // Class 08 (connection exception), 57P01-03 (shutdown, crash, starting up).
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            code.starts_with("08")
                || matches!(code, "57P01" | "57P02" | "57P03")
                || citus_lost_worker(code, db.message())
        }
        _ => false,
    }
}

/// A Citus coordinator that loses a worker mid-COPY reports it as an I/O error (58030,
/// "failed to COPY to shard …"), or relays the worker's shutdown message without its code
/// (as XX000): both mean the worker is unreachable, not that the statement was wrong.
fn citus_lost_worker(code: &str, message: &str) -> bool {
    const SHUTDOWN: [&str; 3] = [
        "terminating connection due to administrator command",
        "the database system is shutting down",
        "server closed the connection unexpectedly",
    ];
    code == "58030" || (code == "XX000" && SHUTDOWN.iter().any(|m| message.starts_with(m)))
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// Memory for the dedup keys of the window (`dedup_memory`); past it, keys are recorded
    /// one by one, as before migration 0017.
    pub dedup_memory: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 16,
            dedup_memory: 256 << 20,
        }
    }
}

/// Handle to the job store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    /// Durable commits: ingest, leases, maintenance.
    pool: PgPool,
    /// Lane reads and commits, with `synchronous_commit = off`: a commit returns before its WAL
    /// is flushed. What a PostgreSQL crash can lose of it is lane progress from the last
    /// fraction of a second, so jobs are delivered again (at-least-once holds) — never an
    /// accepted event (ingest commits on `pool`) and never a lease (acquisition and renewal
    /// also commit on `pool`, so a lease is never younger in the store than its owner thinks).
    lane_pool: PgPool,
    url: String,
    /// The database is a Citus coordinator and the schema is distributed (migration 0013):
    /// the few statements whose best form differs take the distributed one.
    distributed: bool,
    /// How ingest probes the dedup keys (differs on Citus).
    dedup_probe: dedup::DedupProbe,
    /// Seals and opens destination configs (`catalog`).
    sealer: Option<std::sync::Arc<sealer::Sealer>>,
    /// Log reads shared by the lanes of one source, and fed by ingest (`read_cache`).
    reads: std::sync::Arc<read_cache::ReadCache>,
    /// The dedup keys of the window (plain PostgreSQL; `dedup_memory`).
    dedup_memory: std::sync::Arc<dedup_memory::DedupMemory>,
}

impl Store {
    /// Connects and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, &StoreOptions::default()).await
    }

    pub async fn connect_with(url: &str, opts: &StoreOptions) -> Result<Store, StoreError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(StoreError::from_sqlx("parsing the database URL"))?;
        let options = options.application_name("sluice");
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            // Short: ingest answers 503 rather than hanging when the database is gone.
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .map_err(StoreError::from_sqlx("connecting"))?;
        MIGRATOR.run(&pool).await?;
        let lane_pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.options([("synchronous_commit", "off")]))
            .await
            .map_err(StoreError::from_sqlx("connecting"))?;
        let distributed: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')",
        )
        .fetch_one(&pool)
        .await
        .map_err(StoreError::from_sqlx("checking for Citus"))?;
        if distributed {
            tracing::info!(
                "the database is a Citus coordinator: the schema is distributed by workspace"
            );
            citus_settings::check(&pool).await?;
        }
        let dedup_probe = dedup::DedupProbe::detect(&pool, distributed).await?;
        Ok(Store {
            pool,
            lane_pool,
            url: url.to_string(),
            distributed,
            dedup_probe,
            sealer: None,
            reads: Default::default(),
            dedup_memory: std::sync::Arc::new(dedup_memory::DedupMemory::new(opts.dedup_memory)),
        })
    }

    /// The dedup keys this host keeps in memory, and the most its budget holds.
    pub fn dedup_memory_stats(&self) -> (usize, usize) {
        (self.dedup_memory.len(), self.dedup_memory.max_keys())
    }

    /// Whether the schema is distributed over a Citus cluster.
    pub fn is_distributed(&self) -> bool {
        self.distributed
    }

    /// The store, sealing and opening destination configs with `sealer`.
    pub fn with_sealer(self, sealer: std::sync::Arc<sealer::Sealer>) -> Store {
        Store {
            sealer: Some(sealer),
            ..self
        }
    }

    pub(crate) fn sealer(&self) -> Result<&sealer::Sealer, StoreError> {
        self.sealer.as_deref().ok_or(StoreError::NoSecretsKey)
    }

    /// The URL this store was opened with (for LISTEN connections).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Closes every connection (shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
        self.lane_pool.close().await;
    }

    /// Cheap liveness check for `/health`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx("pinging"))?;
        Ok(())
    }
}

/// `Duration` as Postgres interval seconds.
fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
