//! A Citus cluster (a coordinator and two workers on 127.0.0.1) for the end-to-end tests on
//! Citus, shared by the whole run: the first test that asks starts it (building Citus from the
//! vendored tarball when it is missing, `sluice_store::embedded_pg::citus`), and each test gets
//! a database of its own, a copy of a template migrated once.
//!
//! The test harness drops no statics, so a watchdog process stops the nodes and removes their
//! directory once this test process has exited, however it ended.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sluice_store::Store;
use sluice_store::embedded_pg::PgBinaries;
use sluice_store::embedded_pg::citus::{CitusCluster, CitusSource, ensure_citus_installed};

const WORKERS: usize = 2;
const TEMPLATE: &str = "sluice_e2e_template";

pub struct Cluster {
    pub cluster: CitusCluster,
}

static CLUSTER: Mutex<Option<Arc<Cluster>>> = Mutex::new(None);

/// The run's cluster, started on first use (on a thread of its own: it may build Citus).
pub fn cluster() -> Arc<Cluster> {
    let mut slot = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = slot.as_ref() {
        return c.clone();
    }
    let started = std::thread::spawn(start)
        .join()
        .unwrap_or_else(|_| panic!("starting the Citus test cluster panicked"));
    let c = Arc::new(started);
    *slot = Some(c.clone());
    c
}

fn start() -> Cluster {
    let source = CitusSource::from_env();
    ensure_citus_installed(&source).expect("Citus installed (built from the vendored tarball)");
    let dir = cluster_dir();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let cluster = rt.block_on(async {
        let cluster = CitusCluster::start(&dir, WORKERS)
            .await
            .expect("start the Citus test cluster");
        let url = cluster
            .create_database(TEMPLATE)
            .await
            .expect("create the template database");
        // Migrated once (the schema distributed, migration 0013); each test's copy is ready.
        Store::connect(&url)
            .await
            .expect("migrate the template database")
            .close()
            .await;
        cluster
    });
    Cluster { cluster }
}

/// A directory for a cluster's nodes, watched (see [`watch`]).
fn cluster_dir() -> std::path::PathBuf {
    let dir = tempfile::Builder::new()
        .prefix("sluice-e2e-citus-")
        .tempdir()
        .expect("a directory for the cluster")
        .keep();
    // The servers run as `postgres` when we are root: they must reach the directory.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    watch(&dir);
    dir
}

/// A cluster of the calling test's own, with one migrated database (its coordinator URL), for
/// a test that stops a node: the shared cluster's nodes stay up for the other tests. Its nodes
/// stop when it drops, or when this process exits.
pub async fn own_cluster() -> (CitusCluster, String) {
    // Through the shared cluster, so that Citus is built once, not by two tests at once.
    tokio::task::spawn_blocking(cluster)
        .await
        .expect("the Citus test cluster");
    let cluster = CitusCluster::start(&cluster_dir(), WORKERS)
        .await
        .expect("start a Citus cluster of the test's own");
    let url = cluster
        .create_database("sluice_e2e")
        .await
        .expect("a database on it");
    Store::connect(&url)
        .await
        .expect("migrate the database")
        .close()
        .await;
    (cluster, url)
}

/// Starts a process that waits for this one to exit, then stops every node under `dir` and
/// removes it. It is in a process group of its own, so that a Ctrl-C of the test run does
/// not stop it first.
fn watch(dir: &std::path::Path) {
    let Some(bins) = PgBinaries::find() else {
        return;
    };
    let as_postgres = if nix::unistd::geteuid().is_root() {
        "runuser -u postgres -- "
    } else {
        ""
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         for d in '{dir}'/*/postgres/data; do {as_postgres}'{pg_ctl}' -D \"$d\" stop -m fast; done; \
         rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display(),
        pg_ctl = bins.pg_ctl().display(),
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// A fresh, migrated database on the cluster; its coordinator URL.
pub async fn database() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let c = tokio::task::spawn_blocking(cluster)
        .await
        .expect("the Citus test cluster");
    let name = format!(
        "e2e_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    c.cluster
        .create_database_from(&name, TEMPLATE)
        .await
        .expect("a test database on the Citus cluster")
}
