//! Test support for crates that test against the store (feature `testing`): one embedded
//! PostgreSQL per test binary, a fresh database per test cloned from a migrated template, and
//! fixtures that build events, lanes and rows.
//!
//! Test code: a failure to set up panics with what failed.

pub mod fixtures;
pub mod harness;

pub use harness::{Db, TestPg, trial};
