//! The one `bindgen!` of the host, generated from `wit/` (the single source of the contract).
//!
//! Imports are async (outbound HTTP awaits the network); exports are called with `*_async`
//! so that the epoch callback can yield a long-running guest back to tokio.

wasmtime::component::bindgen!({
    path: "../../../wit",
    world: "destination",
    imports: { default: async },
    exports: { default: async },
});

pub use self::sluice::destination::http::{HttpError, HttpRequest, HttpResponse};
pub use self::sluice::destination::log::Level;
pub use self::sluice::destination::types::{Failure, JobContext, Outcome, Request, TransformError};
