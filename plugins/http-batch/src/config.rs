//! The http-batch destination's config: deserialized by the SDK, checked once in `configure`.
//!
//! Contract: `{ "url": "http(s)://…" (required), "headers": {name: value},
//! "max_items": 1..=100 (default 100, the manifest's batch_size), "max_bytes": 1024..
//! (default 1 MiB), "timeout_ms": positive integer, "item_errors": "none" | "errors" }`;
//! unknown fields are rejected. Every error names its field.

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::Deserialize;
use sluice_sdk::batch::Split;
use sluice_sdk::{ConfigError, validate};

/// The manifest's `batch_size`: a call never carries more, so a larger `max_items` means
/// nothing. `tests::batch_size_matches_the_manifest` keeps the two equal.
pub const BATCH_SIZE: usize = 100;

/// Default request body limit: common server defaults (nginx's is 1 MiB) accept it.
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;

/// The smallest `max_bytes` accepted: below it nearly every event would be too large.
const MIN_MAX_BYTES: usize = 1024;

/// The plugin sets the content type itself; the host owns the framing headers.
const RESERVED_HEADERS: [&str; 4] = [
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
];

/// How the receiver reports per-item failures (see the crate docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemErrors {
    /// The status decides for the whole request.
    #[default]
    None,
    /// `{"errors": [{"index": 3, "message": "…", "retryable": false, "code": "…"}]}`.
    Errors,
}

/// The config as the operator writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where every array is POSTed.
    pub url: String,
    /// Extra headers (sent in name order), e.g. `Authorization`.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Events per request.
    #[serde(default)]
    pub max_items: Option<NonZeroUsize>,
    /// Bytes per request body.
    #[serde(default)]
    pub max_bytes: Option<NonZeroUsize>,
    /// Per-request deadline in milliseconds; the host's default when absent.
    #[serde(default)]
    pub timeout_ms: Option<NonZeroU32>,
    /// The response shape that lists failed items.
    #[serde(default)]
    pub item_errors: ItemErrors,
}

/// The checked config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub split: Split,
    pub timeout: Option<Duration>,
    pub item_errors: ItemErrors,
}

impl Settings {
    /// Checks `config`; errors name the field.
    pub fn from_config(config: Config) -> Result<Settings, ConfigError> {
        let (max_items, max_bytes) = sluice_sdk::batch::request_limits(
            config.max_items,
            config.max_bytes,
            BATCH_SIZE,
            DEFAULT_MAX_BYTES,
            MIN_MAX_BYTES,
        )?;
        Ok(Settings {
            url: validate::http_url("url", &config.url)?,
            headers: validate::headers("headers", config.headers, &RESERVED_HEADERS)?,
            split: Split {
                max_items,
                max_bytes,
            },
            timeout: config
                .timeout_ms
                .map(|ms| Duration::from_millis(ms.get().into())),
            item_errors: config.item_errors,
        })
    }
}
