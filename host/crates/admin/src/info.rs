//! `/api/v1/plugins`, `/api/v1/config`, `/api/v1/audit` and `/api/v1/whoami`.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::input::check_text;
use super::redact::{declared_secrets, redacted_config};
use sluice_config::TokenScope;
use sluice_store::admin::{AuditRow, HostPlugin, LanePlugin};

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginList {
    /// Plugins each live host has loaded (hosts may differ during a rolling upgrade).
    pub hosts: Vec<HostPlugin>,
    /// Each destination's plugin and why it does not run, if it does not.
    pub destinations: Vec<LanePlugin>,
    /// Plugins that live hosts run in more than one version.
    pub differs: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins",
    responses((status = 200, body = PluginList)))]
pub async fn plugins(State(state): State<Arc<AdminState>>) -> Result<Json<PluginList>, ApiError> {
    let (hosts, destinations) = state.store.admin_plugins().await?;
    let mut differs: Vec<String> = hosts
        .iter()
        .filter(|h| {
            hosts
                .iter()
                .any(|o| o.plugin == h.plugin && o.sha256 != h.sha256)
        })
        .map(|h| h.plugin.clone())
        .collect();
    differs.dedup();
    Ok(Json(PluginList {
        hosts,
        destinations,
        differs,
    }))
}

/// The running config of the host that answers, secrets replaced by `***`: the fields each
/// plugin's manifest declares secret (listed in the destination's `secrets`), and any value
/// whose key looks secret.
#[utoipa::path(get, path = "/api/v1/config", tag = "config",
    responses((status = 200, body = serde_json::Value)))]
pub async fn config(State(state): State<Arc<AdminState>>) -> Json<serde_json::Value> {
    let dir = state.config.server.plugins_dir.clone();
    Json(redacted_config(&state.config, |plugin| {
        declared_secrets(&dir, plugin)
    }))
}

/// The token a request carries, as the API sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// The token's name (the actor in the audit log).
    pub name: String,
    /// `read` (every GET) or `operator` (also retry, abort, replay, pause and resume).
    #[schema(value_type = String)]
    pub scope: TokenScope,
}

/// Who the caller is: the web page uses it to disable the actions for a read token.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "access",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub async fn whoami(Extension(caller): Extension<Caller>) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: caller.name,
        scope: caller.scope,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub workspace: Option<String>,
    pub destination: Option<String>,
    /// 1-1000, default 100.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    /// Newest first.
    pub audit: Vec<AuditRow>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditList), (status = 400, body = ErrorBody)))]
pub async fn audit(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditList>, ApiError> {
    let Query(q) = query?;
    for (field, text) in [("workspace", &q.workspace), ("destination", &q.destination)] {
        if let Some(t) = text {
            check_text(field, t)?;
        }
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad("limit: between 1 and 1000"));
    }
    let before = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::bad("cursor: not a cursor"))?,
        ),
    };
    let mut audit = state
        .store
        .admin_audit(
            q.workspace.as_deref(),
            q.destination.as_deref(),
            before,
            limit + 1,
        )
        .await?;
    let next_cursor = if audit.len() as i64 > limit {
        audit.truncate(limit as usize);
        audit.last().map(|a| a.id.to_string())
    } else {
        None
    };
    Ok(Json(AuditList { audit, next_cursor }))
}
