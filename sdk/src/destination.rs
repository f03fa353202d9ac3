//! The trait a plugin author implements: configure once, transform each event, send batches.
//!
//! Contract (mirrors `wit/destination.wit`): `configure` validates the JSON config and builds
//! the instance that later calls use; `transform` turns one event into zero or more payloads
//! (zero = filtered out, counted as delivered); `send` returns exactly one [`Outcome`] per
//! request, in the same order.

use crate::context::{JobContext, Request};
use crate::event::Event;
use crate::outcome::{Outcome, TransformError};

/// A destination plugin. Implement this and register the type with
/// [`export_destination!`](crate::export_destination).
pub trait Destination: Sized + 'static {
    /// Parse and validate the destination's JSON config (its table from `sluice.toml`).
    ///
    /// An `Err` stops the destination from starting and is shown to the operator, so name the
    /// offending field in the message.
    fn configure(config: serde_json::Value) -> Result<Self, String>;

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
