//! A local Citus cluster for development: builds Citus when it is missing (as root; see
//! `sluice_store::embedded_pg::citus`), starts a coordinator and two workers on 127.0.0.1,
//! prints the coordinator's `DATABASE_URL`, and stops the nodes on Ctrl-C.
//!
//! ```sh
//! cargo run -p sluice-store --example citus-cluster [-- DIR]
//! ```
//!
//! DIR defaults to `target/citus-cluster` in the workspace; a second run reuses its nodes,
//! data and ports.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use sluice_store::embedded_pg::citus::{
    CitusCluster, CitusInstall, CitusSource, ensure_citus_installed,
};

const WORKERS: usize = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        // host/crates/store → the workspace root.
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../target/citus-cluster"
        )),
    };
    match run(dir).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("citus-cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(dir: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let source = CitusSource::from_env();
    eprintln!(
        "checking for Citus (building it from {} if it is missing: a few minutes)",
        source.tarball.display()
    );
    let install = tokio::task::spawn_blocking(move || ensure_citus_installed(&source)).await??;
    if let CitusInstall::Built { seconds } = install {
        eprintln!("built and installed Citus in {seconds} s");
    }

    let started = Instant::now();
    let cluster = CitusCluster::start(&dir, WORKERS).await?;
    let dir = dir.canonicalize().unwrap_or(dir);
    eprintln!(
        "a coordinator and {WORKERS} workers are running in {} (started in {:.1} s); \
         Ctrl-C stops them",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    for (i, url) in cluster.worker_urls().iter().enumerate() {
        eprintln!("worker {}: {url}", i + 1);
    }
    println!("DATABASE_URL={}", cluster.url());

    let stopped = tokio::signal::ctrl_c().await;
    eprintln!("stopping the cluster");
    cluster.stop().await?;
    stopped?;
    Ok(())
}
