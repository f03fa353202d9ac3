//! Write Sluice destination plugins in Rust.
//!
//! A destination is a WebAssembly component (target `wasm32-wasip2`) implementing the
//! `sluice:destination` WIT world. With this crate a plugin is one type implementing
//! [`Destination`] plus one [`export_destination!`] line; the generated bindings stay hidden.
//!
//! - [`Destination::Config`] is the destination's typed config; the SDK deserializes it, and
//!   errors name the field path (`timeout_ms: invalid type: string "123", expected u64`).
//! - [`Destination::configure`] checks what serde cannot and builds the instance, once per
//!   destination; a [`ConfigError`] names the field for the operator.
//! - [`Destination::transform`] turns one [`Event`] into payloads (default: the event's JSON);
//!   [`Event::parsed_timestamp`] and its siblings read the Segment timestamps as RFC 3339.
//! - [`Destination::send`] delivers a batch, one [`Outcome`] per [`Request`], in order; use
//!   [`http::send`] for HTTP and [`Outcome::from_result`] for the standard status mapping,
//!   [`http::json_array`] and [`Outcome::per_item`] for APIs that take a batch in one call.
//! - [`batch::Split`] cuts a call into several batch requests (item and byte limits) and sends
//!   them in order; [`validate`] checks URL and header config fields; [`webhooks`] signs and
//!   verifies Standard Webhooks.
//! - [`log`] writes to the host's log; [`testing`] mocks the host for native unit tests.
//!
//! # Example
//!
//! ```
//! use serde::Deserialize;
//! use sluice_sdk::http::{self, HttpRequest};
//! use sluice_sdk::{ConfigError, Destination, Outcome, Request};
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     url: String,
//!     #[serde(default)]
//!     timeout_ms: Option<u64>,
//! }
//!
//! struct Forward {
//!     config: Config,
//! }
//!
//! impl Destination for Forward {
//!     type Config = Config;
//!
//!     fn configure(config: Config) -> Result<Self, ConfigError> {
//!         if !config.url.starts_with("https://") {
//!             return Err(ConfigError::field("url", "must start with https://"));
//!         }
//!         Ok(Forward { config })
//!     }
//!
//!     // `transform` keeps its default: each event is sent as its own JSON.
//!
//!     fn send(&self, requests: Vec<Request>) -> Vec<Outcome> {
//!         requests
//!             .into_iter()
//!             .map(|req| {
//!                 let mut post = HttpRequest::post(&self.config.url)
//!                     .header("content-type", "application/json")
//!                     .header("idempotency-key", &req.context.idempotency_key)
//!                     .body(req.body);
//!                 post.timeout = self.config.timeout_ms.map(std::time::Duration::from_millis);
//!                 Outcome::from_result(http::send(&post))
//!             })
//!             .collect()
//!     }
//! }
//!
//! sluice_sdk::export_destination!(Forward);
//!
//! // What the operator sees for `config = { url = "https://x", timeout_ms = "123" }`:
//! let config = r#"{"url": "https://x", "timeout_ms": "123"}"#;
//! let err = sluice_sdk::testing::configure::<Forward>(config);
//! assert_eq!(
//!     err.err().map(|e| e.to_string()).as_deref(),
//!     Some(r#"timeout_ms: invalid type: string "123", expected u64"#)
//! );
//! ```
//!
//! Build the component with `sluice plugin build` (or `cargo build --target wasm32-wasip2
//! --release`; crate type `cdylib`); unit-test it natively with `cargo test` and
//! [`testing::MockHttp`]. `sluice plugin new NAME` starts a new plugin crate.
//!
//! What changed between versions, and how to port a plugin (0.2.0 made the config typed), is
//! in the crate's `CHANGELOG.md`.
#![deny(missing_docs)]

pub mod batch;
mod config;
mod context;
mod destination;
mod event;
mod export;
pub mod http;
pub mod log;
mod outcome;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod validate;
/// Standard Webhooks signing and verification: sign deliveries in a plugin, verify them in a
/// receiver, with the same code Sluice's own webhook plugin and `sluice sink` use.
pub mod webhooks;

pub use config::ConfigError;
pub use context::{JobContext, Request};
pub use destination::Destination;
pub use event::{Event, EventType, TimestampError};
pub use outcome::{DEFAULT_THROTTLE, Failure, Outcome, TransformError};
/// The `time` crate, whose [`OffsetDateTime`](time::OffsetDateTime) the timestamp helpers
/// return; re-exported so plugins need not depend on it to format or convert a time.
pub use time;

/// Generated WIT bindings; public only so that [`export_destination!`] can reach them.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        // `wit/` links to the workspace's `../wit`, the single source of the contract; a
        // packaged crate carries a copy of its files.
        path: "wit",
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
