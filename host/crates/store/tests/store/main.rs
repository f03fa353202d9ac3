//! Store tests: the job store's contracts, each checked at the layer that owns it, against a
//! real PostgreSQL (one embedded server for the run, one database per test), and again on a
//! Citus cluster (a coordinator and two workers, the schema distributed by workspace). The model-based
//! test of the lane engine and the store together is the engine's (`host/crates/engine/tests/model`).

mod admin;
mod append;
mod attempts;
mod backlog;
mod catalog;
mod catalog_drain;
mod catalog_secrets;
mod citus;
mod datasets;
mod durability;
mod job_list;
mod lanes;
mod operator;
mod plugins;
mod read;
mod rows;
mod schema;
mod server;
mod sql_docs;

use std::process::ExitCode;

use libtest_mimic::Trial;
use sluice_store::testing::{fixtures, harness};

/// Every contract, checked the same way on plain PostgreSQL and on the Citus test cluster.
fn contracts() -> Vec<Trial> {
    let mut trials = Vec::new();
    trials.extend(admin::tests());
    trials.extend(job_list::tests());
    trials.extend(append::tests());
    trials.extend(attempts::tests());
    trials.extend(backlog::tests());
    trials.extend(catalog::tests());
    trials.extend(catalog_drain::tests());
    trials.extend(catalog_secrets::tests());
    trials.extend(lanes::tests());
    trials.extend(read::tests());
    trials.extend(rows::tests());
    trials.extend(datasets::tests());
    trials.extend(schema::tests());
    trials.extend(server::tests());
    trials.extend(plugins::tests());
    trials.extend(operator::tests());
    trials.extend(sql_docs::tests());
    trials
}

fn main() -> ExitCode {
    let mut trials = contracts();
    // The same trials on Citus (names `citus::…`), and the cluster's own.
    trials.extend(harness::on_citus(contracts));
    trials.extend(citus::tests());
    // Plain PostgreSQL only, on a server of its own (it crashes it).
    trials.extend(durability::tests());
    sluice_store::testing::main(trials)
}
