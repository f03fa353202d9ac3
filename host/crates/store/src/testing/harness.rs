//! One embedded PostgreSQL for the whole run; each test gets its own database, cloned from a
//! template that is migrated once.
//!
//! The same trials can also run on a Citus cluster (`testing::citus`): trials built inside
//! [`on_citus`] are named `citus::<name>` and get their database on the cluster, which the
//! first of them starts. A test body does not know which backend it runs on.

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Store;
use crate::embedded_pg::EmbeddedPostgres;
use libtest_mimic::Trial;

use super::citus;

const TEMPLATE: &str = "sluice_template";

static SERVER_URL: OnceLock<String> = OnceLock::new();

/// A PostgreSQL server of its own in a temporary directory (removed when this is dropped,
/// after the server is stopped).
pub struct OwnPg {
    pub pg: EmbeddedPostgres,
    _dir: tempfile::TempDir,
}

/// Starts an embedded PostgreSQL in a new temporary directory named `prefix…`: the run's
/// shared server, or one a trial may crash or stop without disturbing the others.
pub async fn own_postgres(prefix: &str) -> OwnPg {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir");
    // The server runs as `postgres` when we are root: it must reach the directory.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let pg = EmbeddedPostgres::start(dir.path())
        .await
        .expect("start the embedded PostgreSQL");
    OwnPg { pg, _dir: dir }
}

/// The running server; stopped at the end of `main`.
pub struct TestPg {
    own: OwnPg,
}

impl TestPg {
    pub async fn start() -> TestPg {
        let own = own_postgres("sluice-store-tests-").await;
        let url = own.pg.url().to_string();
        let admin = sqlx::PgPool::connect(&url).await.expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {TEMPLATE}")))
            .execute(&admin)
            .await
            .expect("create the template database");
        let store = Store::connect(&db_url(&url, TEMPLATE))
            .await
            .expect("migrate the template database");
        store.close().await;
        admin.close().await;
        SERVER_URL.set(url).expect("started once");
        TestPg { own }
    }

    /// Stops the server, and the Citus cluster if a trial started one.
    pub async fn stop(self) {
        if let Err(e) = self.own.pg.stop().await {
            eprintln!("stopping the test PostgreSQL failed: {e}");
        }
        citus::stop().await;
    }
}

fn db_url(server: &str, db: &str) -> String {
    server.replacen("/postgres?", &format!("/{db}?"), 1)
}

/// A test's own database.
pub struct Db {
    pub store: Store,
    /// For queries the store does not offer (assertions).
    pub pool: sqlx::PgPool,
    /// The database's name (the same on every node of a Citus cluster).
    pub name: String,
    /// Its URL (on Citus, the coordinator's).
    pub url: String,
}

impl Db {
    async fn create() -> Db {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let server = SERVER_URL.get().expect("server started");
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let admin = sqlx::PgPool::connect(server).await.expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name} TEMPLATE {TEMPLATE}"
        )))
        .execute(&admin)
        .await
        .expect("create the test database");
        admin.close().await;
        let url = db_url(server, &name);
        Db::open(name, url).await
    }

    /// The store (migrations are already applied) and a pool on the database at `url`.
    pub(crate) async fn open(name: String, url: String) -> Db {
        let store = Store::connect(&url)
            .await
            .expect("open the store")
            .with_sealer(std::sync::Arc::new(crate::sealer::Sealer::generate()));
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("connect");
        Db {
            store,
            pool,
            name,
            url,
        }
    }
}

/// Where the trials being built will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Postgres,
    Citus,
}

thread_local! {
    /// Read by [`trial`] when it builds a trial; set by [`on_citus`] around a builder.
    static BUILDING_FOR: Cell<Backend> = const { Cell::new(Backend::Postgres) };
}

/// The trials `build` makes (e.g. a test module's `tests`), to run on the Citus test cluster
/// instead of the plain server: named `citus::<name>`, each with its own database on the
/// cluster (migrated, like the plain ones).
pub fn on_citus(build: impl FnOnce() -> Vec<Trial>) -> Vec<Trial> {
    /// Restores the plain backend even if `build` panics.
    struct Restore(Backend);
    impl Drop for Restore {
        fn drop(&mut self) {
            BUILDING_FOR.set(self.0);
        }
    }
    let _restore = Restore(BUILDING_FOR.replace(Backend::Citus));
    build()
}

/// Another fresh database on the Citus test cluster (for a Citus trial that needs two); it
/// goes away with the cluster at the end of the run. Blocks while the cluster starts.
pub async fn citus_db() -> Db {
    let cluster = tokio::task::spawn_blocking(citus::cluster)
        .await
        .expect("start the Citus test cluster");
    citus::database(&cluster).await
}

/// A Citus cluster of the caller's own, with a migrated database: for a Citus trial that stops
/// a node (the shared cluster serves other trials meanwhile).
pub async fn citus_own_cluster() -> citus::OwnCluster {
    citus::own_cluster().await
}

/// A test: an async fn given a fresh database (on the Citus cluster when built inside
/// [`on_citus`]).
pub fn trial<F, Fut>(name: &'static str, test: F) -> Trial
where
    F: FnOnce(Db) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let backend = BUILDING_FOR.get();
    let full_name = match backend {
        Backend::Postgres => name.to_string(),
        Backend::Citus => format!("citus::{name}"),
    };
    Trial::test(full_name, move || {
        // Before the runtime exists: the first Citus trial may block for minutes (building
        // Citus, starting the cluster), and that must not happen on a runtime thread.
        let cluster = (backend == Backend::Citus).then(citus::cluster);
        runtime()?.block_on(async move {
            match cluster {
                None => test(Db::create().await).await,
                Some(cluster) => citus::run(cluster, test).await,
            }
        });
        Ok(())
    })
}

/// A test that brings its own server (`own_postgres`) and needs no database of the shared
/// one: e.g. one that crashes PostgreSQL. Plain PostgreSQL only.
pub fn trial_alone<F, Fut>(name: &'static str, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    Trial::test(name, move || {
        runtime()?.block_on(test());
        Ok(())
    })
}

/// The runtime a trial runs on.
fn runtime() -> Result<tokio::runtime::Runtime, libtest_mimic::Failed> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string().into())
}
