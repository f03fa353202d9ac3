//! What a lane hands out (`Job`, keyed by `Key`) and what it is told back about each
//! (`Decision`).

use std::sync::Arc;

use time::OffsetDateTime;

/// One job as the lane hands it out.
#[derive(Debug, Clone)]
pub struct Job {
    pub event_id: i64,
    pub dataset: i32,
    pub source_id: String,
    pub message_id: String,
    pub received_at: OffsetDateTime,
    pub event: String,
    /// The ordering key in the lane's scope (shared: the lane's maps hold it too).
    pub key: Key,
    /// Attempts finished before this one.
    pub attempt: u32,
    pub first_attempt_at: Option<OffsetDateTime>,
    /// Whether the job has a `job_state` row (it came from a blocked key).
    pub has_row: bool,
}

impl Job {
    pub fn size(&self) -> usize {
        self.event.len()
    }
}

/// An ordering key, cheap to clone.
pub type Key = Arc<str>;

/// What becomes of a job after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Finished: accepted.
    Delivered,
    /// Finished: filtered out by the plugin, nothing sent. The store has no state for it: it
    /// is written as delivered.
    Skipped,
    /// Finished: kept from the destination by its filter, before the plugin; not an attempt.
    /// Written as delivered too (a row gets no attempt), but never counted as a delivery.
    Filtered,
    /// Failed; try again at `at`. Counts as an attempt.
    Retry {
        code: String,
        text: String,
        at: OffsetDateTime,
    },
    /// The destination asked to wait until `at`; not an attempt.
    Throttled { at: OffsetDateTime },
    /// Finished: permanent failure or retries exhausted. Counts as an attempt.
    Aborted { code: String, text: String },
    /// Not attempted (shutdown, pause): back to the front of its key.
    Released,
    /// Behind a job of its key that did not finish in the same call (ordered batches): waits
    /// behind that job and is sent again after it. Not an attempt.
    Parked,
}
