//! The host's `bindgen!`s, generated from `wit/` (the single source of the contract).
//!
//! - this module: `sluice:destination@0.2.0` (`wit/destination.wit`), what plugins are built
//!   against today and the types the engine speaks;
//! - [`v0_1`]: the frozen `0.1.1` (`wit/0.1/destination.wit`), linked too so that plugins built
//!   against any 0.1.x keep loading (see `compat`, which adapts their calls).
//!
//! Imports are async (outbound HTTP awaits the network); exports are called with `*_async`
//! so that the epoch callback can yield a long-running guest back to tokio.

pub mod v0_1;

wasmtime::component::bindgen!({
    path: "../../../wit/destination.wit",
    world: "destination",
    // A signing call with a handle the guest does not own traps (its bindings are broken).
    imports: {
        "sluice:destination/signing@0.2.0.[constructor]hmac-key": async | trappable,
        "sluice:destination/signing@0.2.0.[method]hmac-key.sign-webhook": async | trappable,
        "sluice:destination/signing@0.2.0.[method]hmac-key.hmac-sha256": async | trappable,
        default: async,
    },
    exports: { default: async },
    with: {
        "sluice:destination/signing@0.2.0.hmac-key": crate::signing::HmacKey,
    },
});

pub use self::sluice::destination::http::{HttpError, HttpRequest, HttpResponse};
pub use self::sluice::destination::log::Level;
pub use self::sluice::destination::types::{
    BatchContext, BatchJob, Failure, JobContext, Outcome, Request, TransformError,
};

/// The `job-context` of one job of a `transform-batch` call: the call's shared part and the
/// job's own (what `send` gets with each payload, and what a 0.1 plugin's `transform` takes).
pub fn job_context(batch: &BatchContext, job: &BatchJob) -> JobContext {
    JobContext {
        job_id: job.job_id,
        idempotency_key: job.idempotency_key.clone(),
        message_id: job.message_id.clone(),
        workspace_id: batch.workspace_id.clone(),
        source_id: job.source_id.clone(),
        destination_id: batch.destination_id.clone(),
        attempt: job.attempt,
    }
}
