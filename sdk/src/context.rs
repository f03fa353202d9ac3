//! Plain-Rust mirrors of the WIT `job-context` and `request` records.
//!
//! These are what plugin authors see; the SDK converts them to and from the generated
//! binding types at the component boundary (`export.rs`), so authors never touch those.

/// Which job a call is about.
///
/// `idempotency_key` is stable across retries and restarts (it combines the event's
/// `messageId` and the destination id): pass it on to the destination so it can
/// deduplicate redeliveries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobContext {
    /// The host's job id (unique per event and destination).
    pub job_id: i64,
    /// Stable across retries and restarts: forward it to the destination for deduplication.
    pub idempotency_key: String,
    /// The event's Segment `messageId`.
    pub message_id: String,
    /// The workspace the event belongs to.
    pub workspace_id: String,
    /// The source that received the event.
    pub source_id: String,
    /// The destination this job delivers to.
    pub destination_id: String,
    /// Attempts already made before this one (0 on the first try).
    pub attempt: u32,
}

/// One payload to send, as produced by [`Destination::transform`](crate::Destination::transform).
///
/// The host stores nothing of the body and hands it back to `send` unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// The job this payload belongs to.
    pub context: JobContext,
    /// The payload bytes, exactly as `transform` produced them.
    pub body: Vec<u8>,
}
