//! The trait a plugin author implements: configure once, transform each event, send batches.
//!
//! Contract (mirrors `wit/destination.wit`): `configure` receives the destination's config,
//! already deserialized into [`Destination::Config`] (see `config.rs` for the errors serde
//! produces), checks what serde cannot express, and builds the instance that later calls use;
//! `transform` turns one event into zero or more payloads (zero = filtered out, counted as
//! delivered); `send` returns exactly one [`Outcome`] per request, in the same order.

use serde::de::DeserializeOwned;

use crate::config::ConfigError;
use crate::context::{JobContext, Request};
use crate::event::Event;
use crate::outcome::{Outcome, TransformError};

/// A destination plugin. Implement this and register the type with
/// [`export_destination!`](crate::export_destination).
pub trait Destination: Sized + 'static {
    /// The destination's config (its `config` table in `sluice.toml`), deserialized from JSON
    /// by the SDK before [`Destination::configure`] is called.
    ///
    /// Usually a `#[derive(Deserialize)]` struct with `#[serde(deny_unknown_fields)]`, so a
    /// misspelt field is an error rather than silently ignored. Wrong types, missing fields
    /// and unknown fields are reported with their field path (`timeout_ms: invalid type:
    /// string "123", expected u64`) without reaching `configure`. Use `serde_json::Value` to
    /// accept anything.
    type Config: DeserializeOwned;

    /// Validate what serde cannot (URL schemes, non-empty secrets, value ranges…) and build
    /// the instance.
    ///
    /// An `Err` stops the destination from starting and is shown to the operator: name the
    /// field with [`ConfigError::field`], or write `Err("url: must be http(s)".into())` (a
    /// leading `field.path: ` becomes the error's path). The checks in
    /// [`validate`](crate::validate) cover URLs and headers.
    fn configure(config: Self::Config) -> Result<Self, ConfigError>;

    /// Turn one event into zero or more payloads.
    ///
    /// The default sends the event unchanged: one payload holding the event's JSON.
    fn transform(&self, ctx: &JobContext, event: &Event) -> Result<Vec<Vec<u8>>, TransformError> {
        let _ = ctx;
        match serde_json::to_vec(&event.raw) {
            Ok(body) => Ok(vec![body]),
            Err(err) => Err(TransformError::abort("invalid_event", err.to_string())),
        }
    }

    /// Turn one event, as JSON text, into zero or more payloads.
    ///
    /// The default parses the text into an [`Event`] and calls [`Destination::transform`].
    /// Override it when the event is forwarded as it is (or only searched, not rebuilt), to
    /// skip parsing: the text is the event exactly as Sluice stored it.
    fn transform_json(
        &self,
        ctx: &JobContext,
        event_json: &str,
    ) -> Result<Vec<Vec<u8>>, TransformError> {
        let event = Event::from_json(event_json)
            .map_err(|err| TransformError::abort("invalid_event", err.to_string()))?;
        self.transform(ctx, &event)
    }

    /// Deliver a batch of payloads: exactly one [`Outcome`] per request, in the same order.
    fn send(&self, requests: Vec<Request>) -> Vec<Outcome>;
}
