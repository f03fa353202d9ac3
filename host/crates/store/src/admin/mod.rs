//! What the admin API reads (jobs, attempts, lanes, stats, blocked keys, plugins, audit) and
//! does (the operator functions of migration 0004, audited with the caller's filter).
//!
//! Every filter is a bound parameter: no SQL is built from a request. Text filters are exact
//! matches (`error` is a substring test with `strpos`), so `%`, `_` and `\` mean themselves.

mod catalog_audit;
mod job_list;
mod jobs;
mod lanes;
mod operator;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{AttemptOutcome, JobState};

pub use catalog_audit::CatalogChange;
pub use operator::OperatorAction;

/// Which jobs to list (every field optional; all given ones must match).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    pub workspace: Option<String>,
    pub source: Option<String>,
    pub destination: Option<String>,
    /// The user key: `userId`, else `anonymousId` (exact).
    pub user: Option<String>,
    pub state: Option<JobState>,
    pub error_code: Option<String>,
    /// A substring of the last error text (taken literally).
    pub error: Option<String>,
    /// Received at or after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub since: Option<OffsetDateTime>,
    /// Received before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub until: Option<OffsetDateTime>,
}

impl JobFilter {
    /// The text fields, for validation by the caller.
    pub fn texts(&self) -> [(&'static str, Option<&str>); 6] {
        [
            ("workspace", self.workspace.as_deref()),
            ("source", self.source.as_deref()),
            ("destination", self.destination.as_deref()),
            ("user", self.user.as_deref()),
            ("error_code", self.error_code.as_deref()),
            ("error", self.error.as_deref()),
        ]
    }
}

/// Where a page of jobs starts: after this (event, destination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCursor {
    pub event_id: i64,
    pub destination: String,
}

impl JobCursor {
    /// `<event_id>:<destination>`, opaque to clients.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.event_id, self.destination)
    }

    pub fn decode(text: &str) -> Option<JobCursor> {
        let (id, dest) = text.split_once(':')?;
        Some(JobCursor {
            event_id: id.parse().ok()?,
            destination: dest.to_string(),
        })
    }
}

/// One job in a list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobSummary {
    pub workspace: String,
    pub destination: String,
    pub event_id: i64,
    pub source: String,
    pub user: String,
    pub message_id: String,
    pub state: JobState,
    pub attempt: i32,
    pub error_code: Option<String>,
    /// The first 500 bytes of the last error.
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub received_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<OffsetDateTime>,
}

/// One attempt of a job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Attempt {
    /// The job's attempt count after this one (a throttle spends none).
    pub attempt: i32,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub at: Option<OffsetDateTime>,
    pub outcome: AttemptOutcome,
    pub error_code: Option<String>,
    pub error_text: Option<String>,
    /// True for the one successful attempt of a job delivered at the first try, which the
    /// store does not record (its time is not known).
    pub implied: bool,
}

/// One job with its history and event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobSummary,
    /// The full last error (up to 10 KB).
    pub error_text: Option<String>,
    pub order_key: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub first_attempt_at: Option<OffsetDateTime>,
    pub attempts: Vec<Attempt>,
    /// The event as accepted.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

/// A lane as operators see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LaneOverview {
    pub workspace: String,
    pub destination: String,
    pub pending: i64,
    pub executing: i64,
    pub failed: i64,
    /// True when the lane has more than 10,000 jobs without a row past its cursor: they are
    /// counted up to there (`lane_backlog`), so `pending` and `executing` are lower bounds.
    pub depth_capped: bool,
    /// Seconds since the oldest unfinished job was received.
    pub oldest_age_seconds: Option<f64>,
    pub ids_behind: i64,
    pub blocked_keys: i64,
    /// Delivered per minute, over the last five minutes (every host).
    pub rate_per_minute: f64,
    /// Failed or aborted attempts over all attempts, last five minutes (0 to 1).
    pub failure_rate: f64,
    pub delivered_5m: i64,
    pub failed_5m: i64,
    pub aborted_5m: i64,
    pub throttled_5m: i64,
    /// Jobs the destination's filter kept from it (neither deliveries nor failures).
    pub filtered_5m: i64,
    /// As last reported by a host (lane_stats).
    pub concurrency_limit: Option<i32>,
    pub breaker_open: bool,
    pub owner_host: Option<String>,
    pub owner_pid: Option<i32>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub lease_until: Option<OffsetDateTime>,
    pub leased: bool,
    pub paused: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub paused_at: Option<OffsetDateTime>,
    pub paused_by: Option<String>,
    pub plugin: Option<String>,
    pub plugin_sha256: Option<String>,
    pub plugin_error: Option<String>,
}

/// One minute of a lane, summed over hosts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatsMinute {
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub minute: OffsetDateTime,
    pub delivered: i64,
    pub failed: i64,
    pub aborted: i64,
    pub throttled: i64,
    /// Jobs the destination's filter kept from it.
    pub filtered: i64,
    pub concurrency_limit: Option<i32>,
    pub breaker_open: bool,
}

/// A blocked ordering key and the job that blocks it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BlockedKey {
    pub order_key: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub next_attempt_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub blocked_since: OffsetDateTime,
    /// Unfinished jobs of the key (the head included).
    pub waiting: i64,
    pub head_event_id: Option<i64>,
    pub head_state: Option<JobState>,
    pub head_attempt: Option<i32>,
    pub head_error_code: Option<String>,
    /// The first 500 bytes of the head's last error.
    pub head_error: Option<String>,
}

/// A plugin a live host has loaded.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HostPlugin {
    pub plugin: String,
    pub version: String,
    pub sha256: String,
    pub host: String,
    pub pid: i32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub loaded_at: OffsetDateTime,
}

/// A destination's plugin as its hosts last saw it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LanePlugin {
    pub workspace: String,
    pub destination: String,
    pub plugin: Option<String>,
    pub sha256: Option<String>,
    /// Why the plugin is not running for this destination (missing, failed to load,
    /// refused the config), or null.
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub checked_at: Option<OffsetDateTime>,
}

/// One operator action.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditRow {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// The admin token's name (or the database user, from SQL).
    pub actor: String,
    pub action: String,
    pub workspace: String,
    pub destination: String,
    pub event_ids: Option<Vec<i64>>,
    /// The filter the jobs were chosen with (API calls).
    #[schema(value_type = Option<Object>)]
    pub filter: Option<serde_json::Value>,
    pub jobs: i32,
}
