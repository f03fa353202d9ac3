//! Domain types of the job store, mirrored by SQL types of the same names.

use serde::{Deserialize, Serialize};
pub use sluice_core::OrderingScope;

/// The state of a job (SQL enum `job_status`). Jobs without a `job_state` row derive theirs
/// from the lane's cursor (see the migration's header).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type, Serialize, Deserialize, utoipa::ToSchema,
)]
#[sqlx(type_name = "job_status", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting its turn (never attempted, or parked behind an earlier job of its key).
    Pending,
    /// Read by the lane's owner; its outcome is not recorded yet.
    Executing,
    /// The last attempt failed or was throttled; retried at `next_attempt_at`.
    Failed,
    /// Finished: the destination accepted it (or the plugin filtered it out).
    Delivered,
    /// Finished: a permanent failure, or retries exhausted.
    Aborted,
}

impl JobState {
    /// Delivered and aborted jobs never change again (short of a replay).
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Delivered | JobState::Aborted)
    }
}

/// How one attempt of a job ended (SQL enum `attempt_outcome`, the `outcome` of
/// `job_attempts`). The admin API shows it as the same lowercase word.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type, Serialize, Deserialize, utoipa::ToSchema,
)]
#[sqlx(type_name = "attempt_outcome", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The destination accepted it (recorded only for jobs that had failed before: a first-try
    /// delivery writes no attempt).
    Delivered,
    /// A retryable failure; the job is retried at its `next_attempt_at`.
    Retry,
    /// The destination asked to slow down; no attempt was spent.
    Throttled,
    /// A permanent failure, or retries exhausted (`error_code` says which, e.g. `too_large`).
    Abort,
}

/// A lane: the jobs of one destination of one workspace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LaneId {
    pub workspace_id: String,
    pub destination_id: String,
}

impl std::fmt::Display for LaneId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.workspace_id, self.destination_id)
    }
}

/// A lease on a lane: every write of its owner is fenced on `owner` and `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub lane: LaneId,
    pub owner: uuid::Uuid,
    pub epoch: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_outcomes_keep_their_api_words() {
        let words: Vec<String> = [
            AttemptOutcome::Delivered,
            AttemptOutcome::Retry,
            AttemptOutcome::Throttled,
            AttemptOutcome::Abort,
        ]
        .iter()
        .map(|o| serde_json::to_string(o).expect("serialize"))
        .collect();
        assert_eq!(
            words,
            ["\"delivered\"", "\"retry\"", "\"throttled\"", "\"abort\""]
        );
    }

    #[test]
    fn keys_by_scope() {
        assert_eq!(OrderingScope::User.key("web", "u1", 7), "u1");
        assert_eq!(OrderingScope::SourceUser.key("web", "u1", 7), "web\u{1f}u1");
        assert_eq!(OrderingScope::None.key("web", "u1", 7), "#7");
        assert_ne!(
            OrderingScope::SourceUser.key("web", "u1", 7),
            OrderingScope::SourceUser.key("app", "u1", 7)
        );
    }
}
