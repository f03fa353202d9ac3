//! Sluice webhook destination: POSTs each event's JSON to one URL, signed per Standard
//! Webhooks (<https://www.standardwebhooks.com>), so receivers can verify it with any
//! off-the-shelf library.
//!
//! Contract: `transform` forwards the event's JSON as it was stored (one payload, not parsed
//! or re-encoded); `send`
//! POSTs each payload in order with `content-type: application/json`,
//! `user-agent: sluice-webhook/0.1`, `webhook-id` (the job's idempotency key, stable across
//! retries), `webhook-timestamp` (Unix seconds at sending) and `webhook-signature`, plus
//! the configured extra headers (which may override the content type and user agent). Each
//! response maps to an outcome with [`Outcome::from_result`]. Config: see [`config`].

pub mod config;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_sdk::http::{self, HttpRequest};
use sluice_sdk::webhooks::{self, Secret};
use sluice_sdk::{ConfigError, Destination, JobContext, Outcome, Request, TransformError};

use crate::config::Config;

const USER_AGENT: &str = "sluice-webhook/0.1";

/// The webhook destination, holding its validated config.
#[derive(Debug)]
pub struct Webhook {
    /// Where every event is POSTed.
    url: String,
    /// The signing secret.
    secret: Secret,
    /// Extra headers, in name order.
    headers: Vec<(String, String)>,
    /// Per-request deadline; the host's default when `None`.
    timeout: Option<Duration>,
}

impl Destination for Webhook {
    type Config = Config;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        Ok(Webhook {
            url: config::url(&config.url)?,
            secret: config::secret(&config.secret)?,
            headers: config::headers(config.headers)?,
            timeout: config
                .timeout_ms
                .map(|ms| Duration::from_millis(ms.get().into())),
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
        // Signed at sending time, not at transform time: receivers reject stale timestamps,
        // and a retry must carry a fresh one (with the same webhook-id).
        let timestamp = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(now) => now.as_secs(),
            Err(err) => {
                let failure =
                    Outcome::retry("clock_error", format!("system clock before 1970: {err}"));
                return vec![failure; requests.len()];
            }
        };
        // The host sends a batch concurrently: the jobs of one send call belong to different
        // users (the host never puts two jobs of one key in the same call), so their order
        // among each other does not matter.
        let posts: Vec<HttpRequest> = requests
            .into_iter()
            .map(|req| self.request(req, timestamp))
            .collect();
        http::send_batch(&posts)
            .into_iter()
            .map(Outcome::from_result)
            .collect()
    }
}

impl Webhook {
    /// The signed POST for `req` at `timestamp` (Unix seconds).
    fn request(&self, req: Request, timestamp: u64) -> HttpRequest {
        let id = req.context.idempotency_key;
        let signature = self.secret.sign(&id, timestamp, &req.body);
        let not_overridden = |name: &str| {
            !self
                .headers
                .iter()
                .any(|(key, _)| key.eq_ignore_ascii_case(name))
        };
        let mut post = HttpRequest::post(&self.url);
        if not_overridden("content-type") {
            post = post.header("content-type", "application/json");
        }
        if not_overridden("user-agent") {
            post = post.header("user-agent", USER_AGENT);
        }
        post = post
            .header(webhooks::HEADER_ID, id)
            .header(webhooks::HEADER_TIMESTAMP, timestamp.to_string())
            .header(webhooks::HEADER_SIGNATURE, signature)
            .body(req.body);
        for (name, value) in &self.headers {
            post = post.header(name, value);
        }
        post.timeout = self.timeout;
        post
    }
}

sluice_sdk::export_destination!(Webhook);

#[cfg(test)]
mod tests;
