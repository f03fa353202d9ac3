//! When the store rotates, compacts and drops datasets.

use std::time::Duration;

/// When datasets rotate and retire.
#[derive(Debug, Clone, Copy)]
pub struct DatasetPolicy {
    /// Rotate once the open dataset holds this many events...
    pub max_events: i64,
    /// ...or this many bytes (table, indexes and TOAST)...
    pub max_bytes: i64,
    /// ...or is this old (and not empty).
    pub max_age: Duration,
    /// A finished dataset with at most this many unfinished (or retained aborted) jobs is
    /// compacted: those jobs move forward and the dataset is dropped.
    pub compact_below: i64,
    /// Aborted jobs stay queryable (and replayable) at least this long.
    pub aborted_retention: Duration,
    /// A closed dataset is kept at least this long after it closed, delivered events and all,
    /// so that a destination created with `start = "earliest"` (or a time) can be backfilled
    /// from that far back. Zero: dropped as soon as every lane is past it.
    pub retain: Duration,
}

impl Default for DatasetPolicy {
    fn default() -> Self {
        DatasetPolicy {
            max_events: 1_000_000,
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(30 * 60),
            compact_below: 10_000,
            aborted_retention: Duration::from_secs(7 * 24 * 3600),
            retain: Duration::ZERO,
        }
    }
}
