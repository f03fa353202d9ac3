//! End-to-end tests: the real `sluice` binary with its embedded PostgreSQL, real plugins built by
//! `sluice plugin build`, and a local HTTP sink. Each test has its own data directory (and so its
//! own database); waits poll with deadlines, never fixed sleeps.

mod harness;

mod admin;
mod backfill;
mod browser_sdks;
mod catalog;
mod citus;
mod cli;
mod clients;
mod compile_cache;
mod cors;
mod crash;
mod delivery;
mod demo;
mod drain;
mod filtering;
mod hostile;
mod hosts;
mod hot_reload;
mod idle;
mod ingest_errors;
mod limits;
mod metrics;
mod network_policy;
mod operator;
mod ordered_batches;
mod ordering;
mod outage;
mod plugin_sdk;
mod receivers;
mod sandbox;
mod scrub;
mod sdk_settings;
mod secrets;
mod shipped_plugins;
mod sink_cli;
mod source_limits;
mod web_page;
mod wit_compat;
