//! The PostHog destination's config: deserialized by the SDK, checked once in `configure`.
//!
//! Contract: `{ "api_key": "phc_…" (required, secret: the project API key), "host":
//! "http(s)://…" (default `https://us.i.posthog.com`; EU Cloud is `https://eu.i.posthog.com`),
//! "max_items": 1..=500 (default 500), "max_bytes": at least 1024 (default 5 MiB; PostHog
//! accepts up to 20 MB), "timeout_ms": positive integer }`; unknown fields are rejected.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::Deserialize;
use sluice_sdk::batch::Split;
use sluice_sdk::{ConfigError, validate};

/// The manifest's `batch_size`, and so the largest useful `max_items`.
pub const BATCH_SIZE: usize = 500;

/// Well under PostHog's 20 MB, so a request stays quick to send and retry.
pub const DEFAULT_MAX_BYTES: usize = 5 << 20;

const MIN_MAX_BYTES: usize = 1024;

/// PostHog Cloud US.
pub const DEFAULT_HOST: &str = "https://us.i.posthog.com";

/// The config as the operator writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The project API key (sent in the body, as the capture API requires).
    pub api_key: String,
    /// The ingestion host.
    #[serde(default)]
    pub host: Option<String>,
    /// Events per request.
    #[serde(default)]
    pub max_items: Option<NonZeroUsize>,
    /// Bytes per request body.
    #[serde(default)]
    pub max_bytes: Option<NonZeroUsize>,
    /// Per-request deadline in milliseconds; the host's default when absent.
    #[serde(default)]
    pub timeout_ms: Option<NonZeroU32>,
}

/// The checked config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub api_key: String,
    /// `{host}/batch/`.
    pub url: String,
    pub split: Split,
    pub timeout: Option<Duration>,
}

impl Settings {
    /// Checks `config`; errors name the field.
    pub fn from_config(config: Config) -> Result<Settings, ConfigError> {
        let api_key = config.api_key.trim().to_owned();
        if api_key.is_empty() {
            return Err(ConfigError::field("api_key", "must not be empty"));
        }
        let host = match config.host {
            Some(host) => validate::http_url("host", &host)?,
            None => DEFAULT_HOST.to_owned(),
        };
        let (max_items, max_bytes) = sluice_sdk::batch::request_limits(
            config.max_items,
            config.max_bytes,
            BATCH_SIZE,
            DEFAULT_MAX_BYTES,
            MIN_MAX_BYTES,
        )?;
        Ok(Settings {
            api_key,
            url: format!("{}/batch/", host.trim_end_matches('/')),
            split: Split {
                max_items,
                max_bytes,
            },
            timeout: config
                .timeout_ms
                .map(|ms| Duration::from_millis(ms.get().into())),
        })
    }
}
