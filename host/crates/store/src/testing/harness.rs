//! One embedded PostgreSQL for the whole run; each test gets its own database, cloned from a
//! template that is migrated once.

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Store;
use crate::embedded_pg::EmbeddedPostgres;
use libtest_mimic::Trial;

const TEMPLATE: &str = "sluice_template";

static SERVER_URL: OnceLock<String> = OnceLock::new();

/// The running server; stopped at the end of `main`.
pub struct TestPg {
    pg: EmbeddedPostgres,
    _dir: tempfile::TempDir,
}

impl TestPg {
    pub async fn start() -> TestPg {
        let dir = tempfile::Builder::new()
            .prefix("sluice-store-tests-")
            .tempdir()
            .expect("tempdir");
        // The server runs as `postgres` when we are root: it must reach the directory.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let pg = EmbeddedPostgres::start(dir.path())
            .await
            .expect("start the embedded PostgreSQL");
        let url = pg.url().to_string();
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
        TestPg { pg, _dir: dir }
    }

    pub async fn stop(self) {
        if let Err(e) = self.pg.stop().await {
            eprintln!("stopping the test PostgreSQL failed: {e}");
        }
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
        let store = Store::connect(&url)
            .await
            .expect("open the store")
            .with_sealer(std::sync::Arc::new(crate::sealer::Sealer::generate()));
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("connect");
        Db { store, pool }
    }
}

/// A test: an async fn given a fresh database.
pub fn trial<F, Fut>(name: &'static str, test: F) -> Trial
where
    F: FnOnce(Db) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    Trial::test(name, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let db = Db::create().await;
            test(db).await;
        });
        Ok(())
    })
}
