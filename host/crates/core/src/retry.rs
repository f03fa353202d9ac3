//! Retry settings as a destination's config or a plugin's manifest writes them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Retry settings as written in config or a manifest: any field may be left out.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryOverrides {
    #[serde(default, with = "humantime_serde")]
    pub min_backoff: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub max_backoff: Option<Duration>,
    pub max_attempts: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
}

impl RetryOverrides {
    /// Nothing overridden.
    pub fn is_empty(&self) -> bool {
        *self == RetryOverrides::default()
    }
}
