//! Prometheus metrics (`GET /metrics`), through the `metrics` facade and its Prometheus
//! exporter.
//!
//! Counted where things happen (ingest, lane decisions, plugin calls, outbound HTTP); the
//! state of lanes and of the connection pools is read when the page is scraped, from the
//! `lane_status` and `lane_backlog` views (one query of index probes, whatever the backlog)
//! and the pools themselves. Labels are
//! ids from the config, never user data, so their number stays bounded.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use sluice_store::Store;

use crate::delivery::stats::{self, JobMetric};

/// Installs the recorder once per process and returns the handle that renders the page.
pub fn install() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .ok()?
                .install_recorder()
                .map_err(|e| tracing::warn!(error = %e, "cannot install the metrics recorder"))
                .ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    describe_counter!(
        "sluice_events_ingested_total",
        "Events accepted and stored, per source."
    );
    describe_counter!(
        "sluice_ingest_refused_total",
        "Ingest requests refused, per reason (the `error` code of the answer: rate_limited, origin_not_allowed, invalid_write_key, busy, ...)."
    );
    describe_counter!(
        "sluice_jobs_total",
        "Attempts ended, per destination and outcome (delivered, skipped, failed, aborted, throttled), and jobs its filter kept from the destination (filtered)."
    );
    describe_counter!(
        "sluice_log_reads_total",
        "Log reads of each destination's lane, by where they were served from: `store` (a query), `shared` (what another lane of the same source had just read) or `ingest` (what this host's ingest had just committed)."
    );
    describe_histogram!(
        "sluice_ingest_commit_seconds",
        "From a request's events reaching the ingest writer to their commit: the group-commit wait and the transaction (the part of an ingest request's answer that makes it durable)."
    );
    describe_histogram!(
        "sluice_delivery_wait_seconds",
        "From an event's arrival (receivedAt) to the start of the plugin call that delivers it, averaged over the call's jobs, per destination: commit, wake-up, the lane's read and its wait for earlier calls."
    );
    describe_histogram!(
        "sluice_plugin_call_seconds",
        "One plugin call (transform of every job, then send), per destination."
    );
    describe_histogram!(
        "sluice_http_request_seconds",
        "One outbound HTTP request of a plugin, per destination."
    );
    describe_gauge!(
        "sluice_concurrency_limit",
        "The adaptive concurrency limit, per destination."
    );
    describe_gauge!(
        "sluice_breaker_open",
        "1 while a destination is paused by its breaker."
    );
    describe_gauge!(
        "sluice_lane_ids_behind",
        "Event ids between the ingest head and the lane's cursor."
    );
    describe_gauge!(
        "sluice_lane_depth",
        "Unfinished jobs: failed, parked behind a failed job, and past the cursor (counted up to 10,000)."
    );
    describe_gauge!(
        "sluice_lane_failed_jobs",
        "Jobs waiting for a retry (each the head of its ordering key)."
    );
    describe_gauge!(
        "sluice_lane_oldest_age_seconds",
        "Seconds since the oldest unfinished job of the lane was received (0 when none)."
    );
    describe_gauge!(
        "sluice_lane_blocked_keys",
        "Ordering keys waiting behind a failed job."
    );
    describe_gauge!(
        "sluice_lane_leased",
        "1 while some host holds the lane's lease."
    );
    describe_gauge!(
        "sluice_lane_paused",
        "1 while an operator has paused the lane."
    );
    describe_gauge!(
        "sluice_db_connections",
        "PostgreSQL connections per pool and state."
    );
    describe_gauge!(
        "sluice_dedup_memory_keys",
        "Dedup keys of the window this host keeps in memory, where ingest probes them (plain PostgreSQL)."
    );
    describe_gauge!(
        "sluice_dedup_memory_max_keys",
        "Keys `dedup_memory` holds; at it, ingest records keys one by one in PostgreSQL (slower, same dedup)."
    );
}

pub fn events_ingested(workspace: &str, source: &str, n: u64) {
    counter!("sluice_events_ingested_total", "workspace" => workspace.to_string(), "source" => source.to_string())
        .increment(n);
}

/// An ingest request refused; `reason` is one of the answer codes (a fixed set), so the
/// number of series stays bounded.
pub fn ingest_refused(reason: &'static str) {
    counter!("sluice_ingest_refused_total", "reason" => reason).increment(1);
}

/// Also counted per lane for `lane_stats` (the admin API's rates), like the concurrency
/// limit and `breaker`.
pub fn jobs(destination: &str, what: JobMetric, n: u64) {
    stats::count(destination, what, n);
    counter!("sluice_jobs_total", "destination" => destination.to_string(), "outcome" => what.label())
        .increment(n);
}

/// A lane read the log: from the store, another lane's read of its source or ingest's commit.
pub fn log_read(destination: &str, from: sluice_store::ReadFrom) {
    counter!("sluice_log_reads_total", "destination" => destination.to_string(), "from" => from.label())
        .increment(1);
}

/// A request's events were committed `took` after they reached the ingest writer.
pub fn ingest_commit(took: Duration) {
    histogram!("sluice_ingest_commit_seconds").record(took.as_secs_f64());
}

/// A call started, its jobs having waited `mean` on average since they arrived.
pub fn delivery_wait(destination: &str, mean: Duration) {
    histogram!("sluice_delivery_wait_seconds", "destination" => destination.to_string())
        .record(mean.as_secs_f64());
}

pub fn plugin_call(destination: &str, took: Duration) {
    histogram!("sluice_plugin_call_seconds", "destination" => destination.to_string())
        .record(took.as_secs_f64());
}

/// The destination's adaptive concurrency limit, after a call (also kept for `lane_stats`).
pub fn concurrency_limit(destination: &str, limit: usize) {
    stats::limit(destination, limit);
    gauge!("sluice_concurrency_limit", "destination" => destination.to_string()).set(limit as f64);
}

pub fn breaker(destination: &str, open: bool) {
    stats::breaker(destination, open);
    gauge!("sluice_breaker_open", "destination" => destination.to_string()).set(if open {
        1.0
    } else {
        0.0
    });
}

/// Reads lane and pool state into gauges, then renders the page.
pub async fn render(handle: &PrometheusHandle, store: &Store) -> String {
    match store.lane_gauges().await {
        Ok(lanes) => {
            for l in lanes {
                let labels = [
                    ("workspace", l.workspace_id.clone()),
                    ("destination", l.destination_id.clone()),
                ];
                gauge!("sluice_lane_ids_behind", &labels).set(l.ids_behind as f64);
                gauge!("sluice_lane_blocked_keys", &labels).set(l.blocked_keys as f64);
                gauge!("sluice_lane_depth", &labels).set(l.depth as f64);
                gauge!("sluice_lane_failed_jobs", &labels).set(l.failed as f64);
                gauge!("sluice_lane_oldest_age_seconds", &labels).set(l.oldest_age_seconds);
                gauge!("sluice_lane_leased", &labels).set(f64::from(u8::from(l.leased)));
                gauge!("sluice_lane_paused", &labels).set(f64::from(u8::from(l.paused)));
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read lane state"),
    }
    for (pool, size, idle) in store.pool_stats() {
        gauge!("sluice_db_connections", "pool" => pool, "state" => "idle").set(idle as f64);
        gauge!("sluice_db_connections", "pool" => pool, "state" => "busy")
            .set((size as usize).saturating_sub(idle) as f64);
    }
    let (keys, max_keys) = store.dedup_memory_stats();
    gauge!("sluice_dedup_memory_keys").set(keys as f64);
    gauge!("sluice_dedup_memory_max_keys").set(max_keys as f64);
    handle.render()
}
