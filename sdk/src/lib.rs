//! Write Sluice destination plugins in Rust.
//!
//! A destination is a WebAssembly component (target `wasm32-wasip2`) implementing the
//! `sluice:destination` WIT world. With this crate a plugin is one type implementing
//! [`Destination`] plus one [`export_destination!`] line; the generated bindings stay hidden.
//!
//! - [`Destination::configure`] parses the destination's JSON config once per instance.
//! - [`Destination::transform`] turns one [`Event`] into payloads (default: the event's JSON).
//! - [`Destination::send`] delivers a batch, one [`Outcome`] per [`Request`], in order; use
//!   [`http::send`] for HTTP and [`Outcome::from_result`] for the standard status mapping.
//! - [`log`] writes to the host's log; [`testing`] mocks the host for native unit tests.
//!
//! # Example
//!
//! ```
//! use sluice_sdk::http::{self, HttpRequest};
//! use sluice_sdk::{Destination, Outcome, Request};
//!
//! struct Forward {
//!     url: String,
//! }
//!
//! impl Destination for Forward {
//!     fn configure(config: serde_json::Value) -> Result<Self, String> {
//!         let url = config["url"].as_str().ok_or("url: required string")?;
//!         Ok(Forward { url: url.to_owned() })
//!     }
//!
//!     // `transform` keeps its default: each event is sent as its own JSON.
//!
//!     fn send(&self, requests: Vec<Request>) -> Vec<Outcome> {
//!         requests
//!             .into_iter()
//!             .map(|req| {
//!                 let post = HttpRequest::post(&self.url)
//!                     .header("content-type", "application/json")
//!                     .header("idempotency-key", &req.context.idempotency_key)
//!                     .body(req.body);
//!                 Outcome::from_result(http::send(&post))
//!             })
//!             .collect()
//!     }
//! }
//!
//! sluice_sdk::export_destination!(Forward);
//! ```
//!
//! Build the component with `cargo build --target wasm32-wasip2 --release` (crate type
//! `cdylib`); unit-test it natively with `cargo test` and [`testing::MockHttp`].
#![deny(missing_docs)]

mod context;
mod destination;
mod event;
mod export;
pub mod http;
pub mod log;
mod outcome;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use context::{JobContext, Request};
pub use destination::Destination;
pub use event::{Event, EventType};
pub use outcome::{DEFAULT_THROTTLE, Failure, Outcome, TransformError};

/// Generated WIT bindings; public only so that [`export_destination!`] can reach them.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "destination",
        pub_export_macro: true,
        default_bindings_module: "sluice_sdk::bindings",
        // Imports borrow their arguments, so `http::send` passes bodies without copying;
        // exports still receive owned values.
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

/// Items [`export_destination!`] expands to; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::export::Adapter;
}
