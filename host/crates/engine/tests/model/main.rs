//! The lane engine and the store together, against a real PostgreSQL and again on a Citus
//! cluster (the schema distributed by workspace): random histories checked against a simple
//! model (see `histories.rs`).

mod histories;

use std::process::ExitCode;

use sluice_store::testing::{fixtures, harness};

fn main() -> ExitCode {
    let mut trials = histories::tests();
    trials.extend(harness::on_citus(histories::tests));
    sluice_store::testing::main(trials)
}
