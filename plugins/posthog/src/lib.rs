//! Sluice `posthog` destination: Segment events to PostHog's `/batch/` capture endpoint
//! (<https://posthog.com/docs/api/capture>).
//!
//! Contract:
//! - `transform` maps each event to one PostHog event (see [`transform`]).
//! - `send` POSTs `{"api_key": …, "batch": [...]}` to `{host}/batch/`, splitting a call into
//!   requests of at most `max_items` events and `max_bytes` bytes, sent in order; a request
//!   that is not wholly settled holds back the rest of the call (the SDK's
//!   [`Split::send_in_order`](sluice_sdk::batch::Split::send_in_order)), so the events of one
//!   user keep their order (the manifest sets `ordered_batches`).
//! - Responses, for every event of the request: 2xx delivered; 401 aborted with code
//!   `posthog_unauthorized` (the project API key is wrong: fix `api_key`, then replay); other
//!   4xx aborted (`http_400`, …), except 408 retried, 413 too large (the host sends smaller
//!   calls) and 429 throttled for `Retry-After`; 5xx and transport errors retried.
//!
//! Config: see [`config`]. `api_key` is a secret.

pub mod config;
pub mod transform;

use sluice_sdk::http::{self, HttpRequest, HttpResponse};
use sluice_sdk::{ConfigError, Destination, Event, JobContext, Outcome, Request, TransformError};

use crate::config::{Config, Settings};

const USER_AGENT: &str = "sluice-posthog/0.1";

/// The PostHog destination, holding its checked config and request envelope.
#[derive(Debug)]
pub struct Posthog {
    settings: Settings,
    /// The body up to the batch array: `{"api_key":"…","batch":`.
    prefix: Vec<u8>,
}

impl Destination for Posthog {
    type Config = Config;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        let settings = Settings::from_config(config)?;
        let key = serde_json::to_string(&settings.api_key)
            .map_err(|err| ConfigError::field("api_key", err.to_string()))?;
        let prefix = format!(r#"{{"api_key":{key},"batch":"#).into_bytes();
        Ok(Posthog { settings, prefix })
    }

    fn transform(&self, _ctx: &JobContext, event: &Event) -> Result<Vec<Vec<u8>>, TransformError> {
        match transform::posthog_event(event)? {
            None => Ok(Vec::new()),
            Some(out) => serde_json::to_vec(&out)
                .map(|body| vec![body])
                .map_err(|err| TransformError::abort("invalid_event", err.to_string())),
        }
    }

    fn send(&self, requests: Vec<Request>) -> Vec<Outcome> {
        // The array's brackets and the closing brace are part of the envelope.
        let overhead = self.prefix.len() + 3;
        self.settings
            .split
            .send_in_order(&requests, overhead, |group| self.post(group))
    }
}

impl Posthog {
    /// POSTs `group` as one batch; one outcome per event.
    fn post(&self, group: &[Request]) -> Vec<Outcome> {
        let events = http::json_array(group.iter().map(|r| &r.body));
        let mut body = Vec::with_capacity(self.prefix.len() + events.len() + 1);
        body.extend_from_slice(&self.prefix);
        body.extend_from_slice(&events);
        body.push(b'}');
        let post = HttpRequest::post(&self.settings.url)
            .header("content-type", "application/json")
            .header("user-agent", USER_AGENT)
            .body(body)
            .timeout(self.settings.timeout);
        let outcome = match http::send(&post) {
            Ok(response) => outcome(&response),
            Err(err) => Outcome::from_http_error(&err),
        };
        vec![outcome; group.len()]
    }
}

/// The outcome of every event of a request answered with `response`.
fn outcome(response: &HttpResponse) -> Outcome {
    match Outcome::from_response(response) {
        Outcome::Abort(failure) if response.status == 401 => Outcome::abort(
            "posthog_unauthorized",
            format!(
                "PostHog refused the project API key; check the destination's `api_key` ({})",
                failure.message
            ),
        ),
        other => other,
    }
}

sluice_sdk::export_destination!(Posthog);

#[cfg(test)]
mod tests;
