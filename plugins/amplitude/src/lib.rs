//! Sluice `amplitude` destination: Segment events to Amplitude's HTTP V2 API
//! (<https://amplitude.com/docs/apis/analytics/http-v2>).
//!
//! Contract:
//! - `transform` maps each event to one Amplitude event (see [`transform`]).
//! - `send` POSTs `{"api_key": …, "events": [...], "options": {"min_id_length": …}}` to
//!   `https://api2.amplitude.com/2/httpapi` (`region = "eu"`: `api.eu.amplitude.com`; or the
//!   configured `endpoint`), splitting a call into requests of at most `max_items` events and
//!   `max_bytes` bytes, sent in order; a request that is not wholly settled holds back the rest
//!   of the call (the SDK's [`Split::send_in_order`](sluice_sdk::batch::Split::send_in_order)),
//!   so the events of one user keep their order (the manifest sets `ordered_batches`).
//! - Responses: 2xx delivered. 400 naming events (invalid or missing fields, too-short ids,
//!   silenced devices): Amplitude ingested nothing, so those events are aborted with a code
//!   saying why (`amplitude_invalid_field`, `amplitude_missing_field`,
//!   `amplitude_invalid_id_length`, `amplitude_silenced`) and the rest are sent again at once,
//!   as Amplitude's docs prescribe (at most [`MAX_ROUNDS`] requests; `insert_id` makes a
//!   resend harmless). A 400 naming no event (e.g. an invalid API key) aborts every event.
//!   413 is too large (the host sends smaller calls), 429 throttles for `Retry-After` or 30 s,
//!   408 and 5xx are retried; transport errors are retried.
//!
//! Config: see [`config`]. `api_key` is a secret.

pub mod config;
pub mod response;
pub mod transform;

use std::collections::BTreeMap;

use sluice_sdk::http::{self, HttpRequest};
use sluice_sdk::{
    ConfigError, Destination, Event, Failure, JobContext, Outcome, Request, TransformError,
};

use crate::config::{Config, Settings};

const USER_AGENT: &str = "sluice-amplitude/0.1";

/// Requests per group of events: the first, then resends without the rejected events.
pub const MAX_ROUNDS: usize = 3;

/// The Amplitude destination, holding its checked config and request envelope.
#[derive(Debug)]
pub struct Amplitude {
    settings: Settings,
    /// The body up to the events array: `{"api_key":"…","events":`.
    prefix: Vec<u8>,
    /// The body after the events array: options and the closing brace.
    suffix: Vec<u8>,
}

impl Destination for Amplitude {
    type Config = Config;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        let settings = Settings::from_config(config)?;
        let key = serde_json::to_string(&settings.api_key)
            .map_err(|err| ConfigError::field("api_key", err.to_string()))?;
        let prefix = format!(r#"{{"api_key":{key},"events":"#).into_bytes();
        let suffix = match settings.min_id_length {
            Some(n) => format!(r#","options":{{"min_id_length":{n}}}}}"#).into_bytes(),
            None => b"}".to_vec(),
        };
        Ok(Amplitude {
            settings,
            prefix,
            suffix,
        })
    }

    fn transform(&self, _ctx: &JobContext, event: &Event) -> Result<Vec<Vec<u8>>, TransformError> {
        match transform::amplitude_event(event)? {
            None => Ok(Vec::new()),
            Some(out) => serde_json::to_vec(&out)
                .map(|body| vec![body])
                .map_err(|err| TransformError::abort("invalid_event", err.to_string())),
        }
    }

    fn send(&self, requests: Vec<Request>) -> Vec<Outcome> {
        // The events array's brackets are part of the envelope.
        let overhead = self.prefix.len() + self.suffix.len() + 2;
        self.settings
            .split
            .send_in_order(&requests, overhead, |group| self.post_group(group))
    }
}

impl Amplitude {
    /// Sends `group` in one request, then its valid events again while Amplitude rejects some
    /// (see the crate docs); one outcome per event.
    fn post_group(&self, group: &[Request]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; group.len()];
        // Indices into `group` of the events the next request carries.
        let mut pending: Vec<usize> = (0..group.len()).collect();
        for _ in 0..MAX_ROUNDS {
            let response = match http::send(&self.request(group, &pending)) {
                Ok(response) => response,
                Err(err) => {
                    settle(&mut outcomes, &pending, &Outcome::from_http_error(&err));
                    return finish(outcomes);
                }
            };
            let mut rejected: BTreeMap<usize, Failure> = if response.status == 400 {
                response::rejected(&response)
            } else {
                BTreeMap::new()
            };
            rejected.retain(|&position, _| position < pending.len());
            if rejected.is_empty() {
                settle(
                    &mut outcomes,
                    &pending,
                    &response::status_outcome(&response),
                );
                return finish(outcomes);
            }
            let mut rest = Vec::with_capacity(pending.len() - rejected.len());
            for (position, index) in pending.into_iter().enumerate() {
                match rejected.remove(&position) {
                    Some(failure) => outcomes[index] = Some(Outcome::Abort(failure)),
                    None => rest.push(index),
                }
            }
            pending = rest;
            if pending.is_empty() {
                break;
            }
        }
        let again = Outcome::retry(
            "amplitude_rejected",
            format!("Amplitude kept rejecting events of this request after {MAX_ROUNDS} tries"),
        );
        settle(&mut outcomes, &pending, &again);
        finish(outcomes)
    }

    /// The POST carrying the events of `group` at `indices`.
    fn request(&self, group: &[Request], indices: &[usize]) -> HttpRequest {
        let events = http::json_array(indices.iter().map(|&i| &group[i].body));
        let mut body = Vec::with_capacity(self.prefix.len() + events.len() + self.suffix.len());
        body.extend_from_slice(&self.prefix);
        body.extend_from_slice(&events);
        body.extend_from_slice(&self.suffix);
        HttpRequest::post(&self.settings.url)
            .header("content-type", "application/json")
            .header("accept", "*/*")
            .header("user-agent", USER_AGENT)
            .body(body)
            .timeout(self.settings.timeout)
    }
}

fn settle(outcomes: &mut [Option<Outcome>], indices: &[usize], outcome: &Outcome) {
    for &i in indices {
        outcomes[i] = Some(outcome.clone());
    }
}

fn finish(outcomes: Vec<Option<Outcome>>) -> Vec<Outcome> {
    outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| Outcome::retry("missing_outcome", "no outcome for this event"))
        })
        .collect()
}

sluice_sdk::export_destination!(Amplitude);

#[cfg(test)]
mod tests;
