//! Test support for crates that test against the store (feature `testing`): one embedded
//! PostgreSQL per test binary, a fresh database per test cloned from a migrated template, and
//! fixtures that build events, lanes and rows. Trials built inside [`on_citus`] run on a
//! Citus cluster (a coordinator and two workers, started by the first of them) instead.
//!
//! Test code: a failure to set up panics with what failed.

mod citus;
pub mod fixtures;
pub mod harness;

pub use citus::OwnCluster;
pub use harness::{
    Db, OwnPg, TestPg, citus_db, citus_own_cluster, on_citus, own_postgres, trial, trial_alone,
};

/// A test binary's `main`: starts the embedded PostgreSQL, runs `trials` with libtest-mimic's
/// command line (filters, `--list`, …), stops the server, and exits with the result.
pub fn main(trials: Vec<libtest_mimic::Trial>) -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let pg = rt.block_on(TestPg::start());
    let conclusion = libtest_mimic::run(&args, trials);
    rt.block_on(pg.stop());
    conclusion.exit_code()
}
