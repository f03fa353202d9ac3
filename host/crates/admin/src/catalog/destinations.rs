//! Destinations: create, show, replace, delete.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use super::mask::keep_secrets;
use super::view::{self, DestinationView};
use super::{CatalogCheck, Refusal};
use crate::AdminState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use sluice_config::DestinationConfig;
use sluice_core::catalog::default_max_concurrency;
use sluice_core::{
    DestinationId, EventFilter, OrderingScope, RetryOverrides, SourceId, WorkspaceId,
};
use sluice_store::{Audit, DestinationStart};

/// A destination as a client writes it (`[[destination]]` in JSON).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationInput {
    /// Create: required. Replace: optional, and then the path's.
    pub id: Option<String>,
    /// Create: required. Replace: optional, and then the path's.
    pub workspace: Option<String>,
    pub plugin: String,
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub retry: RetryOverrides,
    /// `user` (default), `source_user` or `none`; it cannot change once created.
    #[serde(default)]
    #[schema(value_type = String)]
    pub ordering: OrderingScope,
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    #[serde(default)]
    pub rate_limit: Option<f64>,
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub allowed_private_networks: Vec<IpNet>,
    /// Which events go to it: `allow_types` or `deny_types` (event types), `allow_events` or
    /// `deny_events` (track event names). Default: every event.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub filter: EventFilter,
    /// Create only: where it starts. `now` (default: events accepted from now on),
    /// `earliest` (every retained event of its sources, then the live ones), or an RFC 3339
    /// time (retained events received from then on).
    pub start: Option<String>,
    /// Create only: sources of its workspace to link it to (events they accept from its
    /// `start` on).
    #[serde(default)]
    pub sources: Vec<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationWritten {
    /// The catalog version that holds the change (null: nothing changed).
    pub version: Option<i64>,
    pub destination: DestinationView,
}

impl DestinationInput {
    fn into_config(
        self,
        workspace: WorkspaceId,
        id: DestinationId,
    ) -> (DestinationConfig, Option<String>, Vec<String>) {
        let d = DestinationConfig {
            id,
            workspace,
            plugin: self.plugin,
            config: self.config,
            retry: self.retry,
            ordering: self.ordering,
            max_concurrency: self.max_concurrency,
            rate_limit: self.rate_limit,
            allowed_private_networks: self.allowed_private_networks,
            filter: self.filter,
        };
        (d, self.start, self.sources)
    }
}

pub(super) fn id<T: TryFrom<String, Error = sluice_core::InvalidId>>(
    field: &str,
    text: String,
) -> Result<T, ApiError> {
    T::try_from(text).map_err(|e| ApiError::Invalid {
        field: field.into(),
        message: e.to_string(),
    })
}

fn start(text: Option<&str>) -> Result<DestinationStart, ApiError> {
    match text {
        None | Some("now") => Ok(DestinationStart::Now),
        Some("earliest") => Ok(DestinationStart::Earliest),
        Some(t) => OffsetDateTime::parse(t, &Rfc3339)
            .map(DestinationStart::At)
            .map_err(|_| ApiError::Invalid {
                field: "start".into(),
                message: "`now`, `earliest` or an RFC 3339 time".into(),
            }),
    }
}

/// The checks a destination passes before it is written: its own fields, then its plugin.
async fn checked(d: &DestinationConfig, check: &dyn CatalogCheck) -> Result<(), ApiError> {
    checked_at(d, check, "").await
}

/// As [`checked`], with the field named under `prefix` (`destination[2]`) when not empty.
pub(super) async fn checked_at(
    d: &DestinationConfig,
    check: &dyn CatalogCheck,
    prefix: &str,
) -> Result<(), ApiError> {
    let at = |field: String| {
        if prefix.is_empty() {
            field
        } else {
            format!("{prefix}.{field}")
        }
    };
    d.validate().map_err(|e| ApiError::Invalid {
        field: at(e.field),
        message: e.message,
    })?;
    check
        .check(d)
        .await
        .map_err(|Refusal { field, message }| ApiError::Invalid {
            field: at(field),
            message,
        })
}

pub(super) async fn audit(state: &AdminState, caller: &Caller, plugins: &[&str]) -> Audit {
    let mut audit = Audit {
        actor: caller.name.clone(),
        secrets: Default::default(),
    };
    for plugin in plugins {
        if let Some(paths) = state.check.secret_paths(plugin).await {
            audit.secrets.insert(plugin.to_string(), paths);
        }
    }
    audit
}

async fn written(
    state: &AdminState,
    version: Option<i64>,
    workspace: &str,
    id: &str,
) -> Result<DestinationWritten, ApiError> {
    let catalog = state.store.catalog_load().await?;
    let d = catalog
        .destination(id)
        .filter(|d| d.workspace == workspace)
        .ok_or_else(|| {
            ApiError::NotFound(format!("no destination `{id}` in workspace `{workspace}`"))
        })?;
    Ok(DestinationWritten {
        version,
        destination: view::destination(d, &catalog, state.check.as_ref()).await,
    })
}

#[utoipa::path(post, path = "/api/v1/catalog/destinations", tag = "catalog",
    request_body = DestinationInput,
    responses((status = 201, body = DestinationWritten), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn create_destination(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<DestinationInput>, JsonRejection>,
) -> Result<(StatusCode, Json<DestinationWritten>), ApiError> {
    let Json(input) = body?;
    let workspace: WorkspaceId = id("workspace", input.workspace.clone().unwrap_or_default())?;
    let dest_id: DestinationId = id("id", input.id.clone().unwrap_or_default())?;
    let (d, start_text, sources) = input.into_config(workspace, dest_id);
    let start = start(start_text.as_deref())?;
    let sources = sources
        .into_iter()
        .map(|s| id::<SourceId>("sources", s))
        .collect::<Result<Vec<_>, _>>()?;
    checked(&d, state.check.as_ref()).await?;
    let audit = audit(&state, &caller, &[&d.plugin]).await;
    let version = state
        .store
        .destination_create(&d, start, &sources, &audit)
        .await?;
    tracing::info!(destination = %d.id, workspace = %d.workspace, actor = %caller.name, version, "destination created");
    let body = written(&state, Some(version), &d.workspace, &d.id).await?;
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(get, path = "/api/v1/catalog/destinations/{workspace}/{destination}",
    tag = "catalog", params(("workspace" = String, Path), ("destination" = String, Path)),
    responses((status = 200, body = DestinationWritten), (status = 404, body = ErrorBody)))]
pub async fn show_destination(
    State(state): State<Arc<AdminState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<DestinationWritten>, ApiError> {
    let Path((workspace, dest)) = path?;
    Ok(Json(written(&state, None, &workspace, &dest).await?))
}

#[utoipa::path(put, path = "/api/v1/catalog/destinations/{workspace}/{destination}",
    tag = "catalog", params(("workspace" = String, Path), ("destination" = String, Path)),
    request_body = DestinationInput,
    responses((status = 200, body = DestinationWritten), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update_destination(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<DestinationInput>, JsonRejection>,
) -> Result<Json<DestinationWritten>, ApiError> {
    let Path((workspace, dest)) = path?;
    let Json(input) = body?;
    for (field, given, path) in [
        ("id", &input.id, &dest),
        ("workspace", &input.workspace, &workspace),
    ] {
        if given.as_ref().is_some_and(|g| g != path) {
            return Err(ApiError::Invalid {
                field: field.into(),
                message: format!("must be the path's `{path}` (ids cannot change)"),
            });
        }
    }
    if input.start.is_some() || !input.sources.is_empty() {
        return Err(ApiError::Invalid {
            field: if input.start.is_some() {
                "start"
            } else {
                "sources"
            }
            .into(),
            message: "only when creating; link sources with PUT /api/v1/catalog/sources/…".into(),
        });
    }
    let workspace_id: WorkspaceId = id("workspace", workspace.clone())?;
    let dest_id: DestinationId = id("id", dest.clone())?;
    let catalog = state.store.catalog_load().await?;
    let old = catalog
        .destination(&dest)
        .filter(|d| d.workspace == workspace)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no destination `{dest}` in workspace `{workspace}`"
            ))
        })?;
    let (mut d, _, _) = input.into_config(workspace_id, dest_id);
    d.config = keep_secrets(&d.config, &old.config);
    checked(&d, state.check.as_ref()).await?;
    let audit = audit(&state, &caller, &[&d.plugin]).await;
    let version = state.store.destination_update(&d, &audit).await?;
    if let Some(version) = version {
        tracing::info!(destination = %d.id, workspace = %d.workspace, actor = %caller.name, version, "destination updated");
    }
    Ok(Json(written(&state, version, &workspace, &dest).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub version: i64,
}

/// A destination deleted, or draining.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationDeleted {
    /// The catalog version of the change (`None`: it was draining already).
    pub version: Option<i64>,
    /// `true`: deleted with `drain`; it goes once it has delivered what it had.
    pub draining: bool,
}

/// `DELETE …?drain=true`: deliver the destination's unfinished jobs first, then delete it.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Default `false`: its unfinished jobs are aborted (`destination_deleted`) at once.
    #[serde(default)]
    pub drain: bool,
}

#[utoipa::path(delete, path = "/api/v1/catalog/destinations/{workspace}/{destination}",
    tag = "catalog",
    params(("workspace" = String, Path), ("destination" = String, Path), DeleteQuery),
    responses((status = 200, body = DestinationDeleted, description = "deleted"),
        (status = 202, body = DestinationDeleted, description = "draining: deleted once delivered"),
        (status = 404, body = ErrorBody)))]
pub async fn delete_destination(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<DestinationDeleted>), ApiError> {
    let Path((workspace, dest)) = path?;
    let Query(q) = query?;
    let catalog = state.store.catalog_load().await?;
    let plugin = catalog
        .destination(&dest)
        .map(|d| d.plugin.clone())
        .unwrap_or_default();
    let audit = audit(&state, &caller, &[&plugin]).await;
    if q.drain {
        let version = state
            .store
            .destination_drain(&workspace, &dest, &audit)
            .await?;
        tracing::info!(destination = %dest, workspace = %workspace, actor = %caller.name, version, "destination draining");
        let body = DestinationDeleted {
            version,
            draining: true,
        };
        return Ok((StatusCode::ACCEPTED, Json(body)));
    }
    let version = state
        .store
        .destination_delete(&workspace, &dest, &audit)
        .await?;
    tracing::info!(destination = %dest, workspace = %workspace, actor = %caller.name, version, "destination deleted");
    let body = DestinationDeleted {
        version: Some(version),
        draining: false,
    };
    Ok((StatusCode::OK, Json(body)))
}
