//! The lane engine and the store together, against a real PostgreSQL: random histories checked
//! against a simple model (see `histories.rs`).

mod histories;

use std::process::ExitCode;

use sluice_store::testing::{fixtures, harness};

fn main() -> ExitCode {
    sluice_store::testing::main(histories::tests())
}
