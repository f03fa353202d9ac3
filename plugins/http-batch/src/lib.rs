//! Sluice `http-batch` destination: POSTs the events of each call as one JSON array to a URL.
//!
//! Contract:
//! - `transform` forwards each event's JSON as it was stored (not parsed or re-encoded).
//! - `send` splits the call into requests of at most `max_items` events and `max_bytes` bytes
//!   and POSTs them in order, one after another, each body `[event,event,…]` with
//!   `content-type: application/json`, `user-agent: sluice-http-batch/0.1` and the configured
//!   headers. The events of one user keep their order within and across requests (the manifest
//!   sets `ordered_batches`); when a request is not wholly settled, the later requests of the
//!   call are not sent and their events are handed back without spending an attempt. An event
//!   larger than `max_bytes` on its own is aborted (`payload_too_large`) without being sent.
//! - Each response maps to outcomes for all its events with the SDK's standard mapping: 2xx
//!   delivered, 408 and 5xx retried, 429 throttled for `Retry-After`, 413 too large (the host
//!   sends smaller calls), any other status aborted; transport errors are retried.
//! - With `item_errors = "errors"`, a 2xx or 4xx response (other than 408, 413, 429) may name
//!   failed events by their index in the request's array:
//!
//!   ```json
//!   {"errors": [{"index": 3, "message": "email is invalid", "retryable": false, "code": "invalid_email"}]}
//!   ```
//!
//!   Listed events are aborted (retried when `retryable` is true) with `code` (default
//!   `item_rejected`) and `message`; the others are delivered. A receiver that marks an event
//!   retryable should not have applied the later events of the same user in that array.
//!
//! Config: see [`config`].

pub mod config;
pub mod item_errors;

use sluice_sdk::http::{self, HttpRequest};
use sluice_sdk::{ConfigError, Destination, JobContext, Outcome, Request, TransformError};

use crate::config::{Config, ItemErrors, Settings};

const USER_AGENT: &str = "sluice-http-batch/0.1";

/// The envelope around the payloads: `[` and `]`.
const ARRAY_OVERHEAD: usize = 2;

/// The http-batch destination, holding its checked config.
#[derive(Debug)]
pub struct HttpBatch {
    settings: Settings,
}

impl Destination for HttpBatch {
    type Config = Config;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        Ok(HttpBatch {
            settings: Settings::from_config(config)?,
        })
    }

    fn transform_json(
        &self,
        _ctx: &JobContext,
        event_json: &str,
    ) -> Result<Vec<Vec<u8>>, TransformError> {
        // The host validated the event at ingest; forward its text as is.
        Ok(vec![event_json.as_bytes().to_vec()])
    }

    fn send(&self, requests: Vec<Request>) -> Vec<Outcome> {
        self.settings
            .split
            .send_in_order(&requests, ARRAY_OVERHEAD, |group| self.post(group))
    }
}

impl HttpBatch {
    /// POSTs `group` as one array; one outcome per event.
    fn post(&self, group: &[Request]) -> Vec<Outcome> {
        let mut post =
            HttpRequest::post(&self.settings.url).header("content-type", "application/json");
        let configured = |name: &str| {
            (self.settings.headers.iter()).any(|(key, _)| key.eq_ignore_ascii_case(name))
        };
        if !configured("user-agent") {
            post = post.header("user-agent", USER_AGENT);
        }
        post = post
            .body(http::json_array(group.iter().map(|r| &r.body)))
            .timeout(self.settings.timeout);
        for (name, value) in &self.settings.headers {
            post = post.header(name, value);
        }
        match http::send(&post) {
            Err(err) => vec![Outcome::from_http_error(&err); group.len()],
            Ok(response) => match self.settings.item_errors {
                ItemErrors::None => vec![Outcome::from_response(&response); group.len()],
                ItemErrors::Errors => item_errors::outcomes(group.len(), &response),
            },
        }
    }
}

sluice_sdk::export_destination!(HttpBatch);

#[cfg(test)]
mod tests;
