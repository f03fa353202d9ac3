//! The Citus backend of the test harness: one cluster (a coordinator and two workers) per test
//! binary, and a database per test copied on every node from a template migrated once.
//!
//! The cluster starts when the first Citus trial runs, not with the binary: a run filtered to
//! plain trials pays nothing, and a run with Citus trials builds Citus first when it is
//! missing (minutes, once per machine). A cluster that failed to start is not retried: every
//! Citus trial fails with the same message. [`stop`] (from `TestPg::stop`) stops it.
//!
//! Each test's database is dropped on every node when the test ends, pass or fail: Citus keeps
//! a background worker per database it has been used in, and the nodes have a fixed number.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;

use crate::Store;
use crate::embedded_pg::citus::{CitusCluster, CitusInstall, CitusSource, ensure_citus_installed};

use super::harness::Db;

/// Workers beside the coordinator: two, so a distributed table's shards really are apart.
const WORKERS: usize = 2;
/// Migrated once per run on every node; each test's database is a copy.
const STORE_TEMPLATE: &str = "sluice_template";

/// The running cluster; the directory goes after the nodes are stopped.
pub(crate) struct TestCluster {
    pub(crate) cluster: CitusCluster,
    _dir: tempfile::TempDir,
}

enum Slot {
    NotStarted,
    Running(Arc<TestCluster>),
    Failed(String),
}

static SLOT: Mutex<Slot> = Mutex::new(Slot::NotStarted);
/// Test databases being dropped (each thread holds the cluster until it is done).
static PENDING_DROPS: Mutex<Vec<std::thread::JoinHandle<()>>> = Mutex::new(Vec::new());

/// The run's cluster, started on first use. Blocks (it may build Citus): call it outside any
/// async runtime. Panics (failing the calling trial) when the cluster cannot start.
pub(crate) fn cluster() -> Arc<TestCluster> {
    let mut slot = lock(&SLOT);
    match &*slot {
        Slot::Running(cluster) => return cluster.clone(),
        Slot::Failed(message) => panic!("the Citus test cluster did not start: {message}"),
        Slot::NotStarted => {}
    }
    match start() {
        Ok(cluster) => {
            let cluster = Arc::new(cluster);
            *slot = Slot::Running(cluster.clone());
            cluster
        }
        Err(message) => {
            *slot = Slot::Failed(message.clone());
            panic!("the Citus test cluster did not start: {message}");
        }
    }
}

fn start() -> Result<TestCluster, String> {
    let source = CitusSource::from_env();
    eprintln!(
        "store tests: checking for Citus (building it from {} if it is missing: a few minutes)",
        source.tarball.display()
    );
    match ensure_citus_installed(&source).map_err(|e| e.to_string())? {
        CitusInstall::Built { seconds } => {
            eprintln!("store tests: built and installed Citus in {seconds} s");
        }
        CitusInstall::AlreadyInstalled => {}
    }
    let dir = cluster_dir("sluice-citus-tests-")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("a runtime to start the cluster: {e}"))?;
    let started = std::time::Instant::now();
    let cluster = rt.block_on(async {
        let cluster = CitusCluster::start(dir.path(), WORKERS)
            .await
            .map_err(|e| e.to_string())?;
        let url = cluster
            .create_database(STORE_TEMPLATE)
            .await
            .map_err(|e| e.to_string())?;
        let store = Store::connect(&url)
            .await
            .map_err(|e| format!("migrate the template database on Citus: {e}"))?;
        store.close().await;
        Ok::<_, String>(cluster)
    })?;
    eprintln!(
        "store tests: Citus cluster (a coordinator, {WORKERS} workers) ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(TestCluster { cluster, _dir: dir })
}

/// A temporary directory for a cluster's nodes. The servers run as `postgres` when we are
/// root: they must reach it.
fn cluster_dir(prefix: &str) -> Result<tempfile::TempDir, String> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("create a directory for the cluster: {e}"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", dir.path().display()))?;
    Ok(dir)
}

/// A cluster of one test's own (for a test that stops a node), with a migrated database.
/// The nodes stop when it is dropped, the directory after them.
pub struct OwnCluster {
    // Fields drop in this order: the connections, the nodes, then their directory.
    pub db: Db,
    pub cluster: CitusCluster,
    _dir: tempfile::TempDir,
}

/// Starts a cluster of the caller's own: a coordinator and [`WORKERS`] workers. Citus must be
/// installed already (a trial built by `on_citus` has seen to it).
pub(crate) async fn own_cluster() -> OwnCluster {
    let dir = cluster_dir("sluice-citus-own-").unwrap_or_else(|e| panic!("{e}"));
    let cluster = CitusCluster::start(dir.path(), WORKERS)
        .await
        .expect("start a Citus cluster of the test's own");
    let url = cluster
        .create_database("sluice_own")
        .await
        .expect("a database on it");
    let db = Db::open("sluice_own".into(), url).await;
    OwnCluster {
        db,
        cluster,
        _dir: dir,
    }
}

/// Stops the cluster if a trial started it, once the test databases are dropped.
pub(crate) async fn stop() {
    let drops = std::mem::take(&mut *lock(&PENDING_DROPS));
    for drop in drops {
        // A drop thread that panicked has nothing left to do here.
        let _ = tokio::task::spawn_blocking(move || drop.join()).await;
    }
    let taken = std::mem::replace(&mut *lock(&SLOT), Slot::NotStarted);
    let Slot::Running(cluster) = taken else {
        return;
    };
    match Arc::try_unwrap(cluster) {
        Ok(TestCluster { cluster, _dir }) => {
            if let Err(e) = cluster.stop().await {
                eprintln!("stopping the Citus test cluster failed: {e}");
            }
        }
        // Something still holds it (nothing should, once the trials and the drops are done):
        // dropping the last reference stops the nodes.
        Err(_still_shared) => {}
    }
}

/// A fresh database on the cluster, migrated (a copy of the migrated template).
pub(crate) async fn database(test: &TestCluster) -> Db {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "c_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let url = test
        .cluster
        .create_database_from(&name, STORE_TEMPLATE)
        .await
        .expect("create the test database on the Citus cluster");
    Db::open(name, url).await
}

/// Runs `test` on a fresh database, then has the database dropped, whether the test passed or
/// not. The drop takes seconds (it waits for Citus's daemons and each node's checkpoint), so it
/// runs on a thread of its own and the next test does not wait for it; [`stop`] does.
pub(crate) async fn run<F, Fut>(test_cluster: Arc<TestCluster>, test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = database(&test_cluster).await;
    let name = db.name.clone();
    let outcome = AssertUnwindSafe(test(db)).catch_unwind().await;
    let drop = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("dropping the test database {name}: no runtime: {e}");
                return;
            }
        };
        let dropped = rt.block_on(test_cluster.cluster.drop_database(&name));
        if let Err(e) = dropped {
            eprintln!("dropping the test database {name} on the Citus cluster failed: {e}");
        }
    });
    lock(&PENDING_DROPS).push(drop);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A lock whose holder may have panicked: what it guards is replaced whole, never left half
/// updated, so the value is still good.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
