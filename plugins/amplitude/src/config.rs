//! The Amplitude destination's config: deserialized by the SDK, checked once in `configure`.
//!
//! Contract: `{ "api_key": "…" (required, secret), "region": "us" | "eu" (default "us"),
//! "endpoint": "http(s)://…" (instead of the region's URL; not with `region`),
//! "min_id_length": positive integer (Amplitude's `options.min_id_length`; its default is 5),
//! "max_items": 1..=500 (default 500), "max_bytes": at least 1024 (default 1 MB, Amplitude's
//! limit), "timeout_ms": positive integer }`; unknown fields are rejected.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::Deserialize;
use sluice_sdk::batch::Split;
use sluice_sdk::{ConfigError, validate};

/// The manifest's `batch_size`, and so the largest useful `max_items`.
pub const BATCH_SIZE: usize = 500;

/// Amplitude's documented request limit ("under 1 MB").
pub const DEFAULT_MAX_BYTES: usize = 1_000_000;

const MIN_MAX_BYTES: usize = 1024;

/// The HTTP V2 API in Amplitude's standard (US) data center.
pub const US_URL: &str = "https://api2.amplitude.com/2/httpapi";
/// The HTTP V2 API in Amplitude's EU data center.
pub const EU_URL: &str = "https://api.eu.amplitude.com/2/httpapi";

/// Which Amplitude data center the project lives in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// `api2.amplitude.com`.
    #[default]
    Us,
    /// `api.eu.amplitude.com`.
    Eu,
}

/// The config as the operator writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The project's API key (sent in the body, as the API requires).
    pub api_key: String,
    /// The project's data center.
    #[serde(default)]
    pub region: Option<Region>,
    /// A URL to POST to instead of the region's.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The shortest user or device id Amplitude should accept.
    #[serde(default)]
    pub min_id_length: Option<NonZeroU32>,
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
    pub url: String,
    pub min_id_length: Option<u32>,
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
        let url = match (config.endpoint, config.region) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::field(
                    "endpoint",
                    "set either `endpoint` or `region`, not both",
                ));
            }
            (Some(endpoint), None) => validate::http_url("endpoint", &endpoint)?,
            (None, Some(Region::Eu)) => EU_URL.to_owned(),
            (None, Some(Region::Us) | None) => US_URL.to_owned(),
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
            url,
            min_id_length: config.min_id_length.map(NonZeroU32::get),
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
