//! What a destination keeps in order.

use serde::{Deserialize, Serialize};

/// What a destination keeps in order (SQL enum `ordering_scope`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, sqlx::Type, Serialize, Deserialize)]
#[sqlx(type_name = "ordering_scope", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum OrderingScope {
    /// Each user's events, across all sources of the workspace (RudderStack's default).
    #[default]
    User,
    /// Each (source, user) pair's events: one source's failing event does not hold back the
    /// same user's events from another source.
    SourceUser,
    /// No ordering: every job stands alone (maximum throughput).
    None,
}

impl OrderingScope {
    /// The ordering key of an event in this scope. Keys of different scopes never meet: a lane
    /// has one scope.
    pub fn key(self, source_id: &str, user_key: &str, event_id: i64) -> String {
        match self {
            OrderingScope::User => user_key.to_string(),
            // The unit separator cannot appear in a source id (config ids are [A-Za-z0-9._-]).
            OrderingScope::SourceUser => format!("{source_id}\u{1f}{user_key}"),
            OrderingScope::None => format!("#{event_id}"),
        }
    }
}
