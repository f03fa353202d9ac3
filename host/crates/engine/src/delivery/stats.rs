//! Per-lane outcome counters kept in memory and flushed to `lane_stats` (migrations 0005 and
//! 0009), so that any host's admin API can show every lane's rate, failure rate and last hour,
//! whichever host delivered.
//!
//! The counters are fed by the functions of `crate::metrics` that the router already calls
//! (one global table: those are free functions). The flusher wakes every `interval` and writes
//! only the lanes whose counters moved since the last flush, so an idle host issues no SQL
//! (maintenance also flushes when it finds nothing to do, before it stops polling).
//! Each flush adds to the row of the current minute for this host; the last flush happens at
//! shutdown. Maintenance removes rows older than [`RETENTION`].

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use sluice_store::lane_stats::LaneCounters;
use sluice_store::{LaneId, Store};

/// What happened to a job at the end of an attempt, as counted in `sluice_jobs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobMetric {
    Delivered,
    /// Filtered out by the plugin (`transform` returned no payloads).
    Skipped,
    /// Kept from the destination by its filter, before the plugin: not an attempt.
    Filtered,
    Retried,
    Aborted,
    Throttled,
}

impl JobMetric {
    pub(crate) fn label(self) -> &'static str {
        match self {
            JobMetric::Delivered => "delivered",
            JobMetric::Skipped => "skipped",
            JobMetric::Filtered => "filtered",
            JobMetric::Retried => "failed",
            JobMetric::Aborted => "aborted",
            JobMetric::Throttled => "throttled",
        }
    }
}

/// How long `lane_stats` rows are kept (the API shows at most the last day).
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

#[derive(Default)]
struct Entry {
    counters: LaneCounters,
    /// Moved since the last flush.
    dirty: bool,
}

/// Keyed by destination id (unique across workspaces: the config refuses duplicates).
fn table() -> &'static Mutex<HashMap<String, Entry>> {
    static TABLE: OnceLock<Mutex<HashMap<String, Entry>>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

fn with_entry(destination: &str, f: impl FnOnce(&mut Entry)) {
    // A poisoned lock only means a panic elsewhere while counting: the counts stay usable.
    let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
    match t.get_mut(destination) {
        Some(e) => f(e),
        None => f(t.entry(destination.to_string()).or_default()),
    }
}

pub(crate) fn count(destination: &str, what: JobMetric, n: u64) {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    with_entry(destination, |e| {
        let c = &mut e.counters;
        let slot = match what {
            // `lane_stats` has no column for skipped jobs: they finish as delivered there.
            JobMetric::Delivered | JobMetric::Skipped => &mut c.delivered,
            // Neither a delivery nor a failure: its own column, out of the rates.
            JobMetric::Filtered => &mut c.filtered,
            JobMetric::Retried => &mut c.failed,
            JobMetric::Aborted => &mut c.aborted,
            JobMetric::Throttled => &mut c.throttled,
        };
        *slot = slot.saturating_add(n);
        e.dirty = true;
    });
}

pub(crate) fn limit(destination: &str, limit: usize) {
    let limit = i32::try_from(limit).unwrap_or(i32::MAX);
    with_entry(destination, |e| {
        if e.counters.concurrency_limit != Some(limit) {
            e.counters.concurrency_limit = Some(limit);
            e.dirty = true;
        }
    });
}

pub(crate) fn breaker(destination: &str, open: bool) {
    with_entry(destination, |e| {
        if e.counters.breaker_open != open {
            e.counters.breaker_open = open;
            e.dirty = true;
        }
    });
}

/// Takes the lanes that moved: their counts are reset, their limit and breaker kept.
pub fn take_moved() -> Vec<(String, LaneCounters)> {
    let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
    let mut moved = Vec::new();
    for (dest, e) in t.iter_mut().filter(|(_, e)| e.dirty) {
        moved.push((dest.clone(), e.counters.clone()));
        e.dirty = false;
        let c = &mut e.counters;
        (c.delivered, c.failed, c.aborted, c.throttled, c.filtered) = (0, 0, 0, 0, 0);
    }
    moved
}

/// Puts counts back after a failed flush, so they go out with the next one.
fn restore(moved: Vec<(String, LaneCounters)>) {
    let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
    for (dest, c) in moved {
        let e = t.entry(dest).or_default();
        e.counters.delivered += c.delivered;
        e.counters.failed += c.failed;
        e.counters.aborted += c.aborted;
        e.counters.throttled += c.throttled;
        e.counters.filtered += c.filtered;
        e.dirty = true;
    }
}

/// Writes one host's counters (cheap to clone: maintenance holds one too, to flush before it
/// goes idle, so that an idle host has nothing left to write).
#[derive(Clone)]
pub struct Flusher {
    pub store: Store,
    pub host_id: uuid::Uuid,
    /// The catalog: the workspace of each destination.
    pub catalog: crate::catalog::CatalogWatch,
}

impl Flusher {
    /// Flushes every `interval`, and once more when `stop` fires.
    pub async fn run(self, interval: Duration, stop: CancellationToken) {
        // A zero interval in the config must not become a busy loop.
        let interval = interval.max(Duration::from_millis(100));
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(interval) => false,
                _ = stop.cancelled() => true,
            };
            self.flush().await;
            if stopping {
                return;
            }
        }
    }

    /// Writes the lanes that moved; nothing at all when none did.
    pub async fn flush(&self) {
        let moved = take_moved();
        if moved.is_empty() {
            return;
        }
        let catalog = self.catalog.borrow().clone();
        let rows: Vec<(LaneId, LaneCounters)> = moved
            .iter()
            .filter_map(|(dest, c)| {
                let ws = &catalog.destination(dest)?.workspace;
                Some((
                    LaneId {
                        workspace_id: ws.to_string(),
                        destination_id: dest.clone(),
                    },
                    c.clone(),
                ))
            })
            .collect();
        let now = OffsetDateTime::now_utc();
        if let Err(e) = self.store.lane_stats_add(self.host_id, now, &rows).await {
            tracing::warn!(error = %e, "cannot write lane stats; keeping them for the next flush");
            restore(moved);
        }
    }
}
