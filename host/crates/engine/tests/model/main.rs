//! The lane engine and the store together, against a real PostgreSQL: random histories checked
//! against a simple model (see `histories.rs`).

mod histories;

use std::process::ExitCode;

use sluice_store::testing::{fixtures, harness};

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pg = rt.block_on(harness::TestPg::start());
    let conclusion = libtest_mimic::run(&args, histories::tests());
    rt.block_on(pg.stop());
    conclusion.exit_code()
}
