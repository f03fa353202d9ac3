//! Sources: create, show, change (enabled, links), delete, and write keys.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::destinations::{Deleted, id};
use super::view::{self, SourceView};
use crate::AdminState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use sluice_core::catalog::SourceSettings;
use sluice_core::{AllowedOrigin, DestinationId, SourceId, SourceLimits, WorkspaceId};
use sluice_store::{Audit, KeyRotation, SourceWrite};

/// How long a rotated-out key keeps working by default.
const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// A write key made here: 32 letters and digits (190 bits).
fn new_key() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceInput {
    /// Create: required. Change: optional, and then the path's.
    pub id: Option<String>,
    /// Create: required. Change: optional, and then the path's.
    pub workspace: Option<String>,
    /// Default true. A disabled source's keys get 401.
    pub enabled: Option<bool>,
    /// The destinations its new events go to (all of its workspace). Change: absent keeps
    /// the links as they are.
    pub destinations: Option<Vec<String>>,
    /// Create only: its write key. Absent: one is made and returned once.
    pub write_key: Option<String>,
    /// Browser origins allowed to send with its keys (CORS): `https://shop.example`,
    /// `*.example.com` or `*`. Create: default none (browsers refused). Change: absent keeps
    /// them.
    pub allowed_origins: Option<Vec<String>>,
    /// Rates and sizes for its keys (docs/sources.md). Change: absent keeps them.
    #[schema(value_type = Option<Object>)]
    pub limits: Option<SourceLimits>,
}

/// The origins of an input, each checked (400 naming the one at fault).
fn origins(list: Vec<String>) -> Result<Vec<AllowedOrigin>, ApiError> {
    list.iter()
        .enumerate()
        .map(|(i, o)| {
            AllowedOrigin::parse(o).map_err(|e| ApiError::Invalid {
                field: format!("allowed_origins[{i}]"),
                message: e.to_string(),
            })
        })
        .collect()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceWritten {
    /// The catalog version that holds the change (null: nothing changed).
    pub version: Option<i64>,
    pub source: SourceView,
    /// A key made by this request: shown this once, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_key: Option<String>,
}

fn audit(caller: &Caller) -> Audit {
    Audit {
        actor: caller.name.clone(),
        secrets: Default::default(),
    }
}

fn destination_ids(list: Vec<String>) -> Result<Vec<DestinationId>, ApiError> {
    list.into_iter()
        .map(|d| id::<DestinationId>("destinations", d))
        .collect()
}

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.len() < 8 || key.len() > 256 || key.chars().any(|c| c.is_control() || c == ':') {
        return Err(ApiError::Invalid {
            field: "write_key".into(),
            message: "8 to 256 characters, no `:` and no control characters".into(),
        });
    }
    Ok(())
}

async fn written(
    state: &AdminState,
    version: Option<i64>,
    workspace: &str,
    id: &str,
    write_key: Option<String>,
) -> Result<SourceWritten, ApiError> {
    let catalog = state.store.catalog_load().await?;
    let s = catalog
        .source(id)
        .filter(|s| s.workspace == workspace)
        .ok_or_else(|| {
            ApiError::NotFound(format!("no source `{id}` in workspace `{workspace}`"))
        })?;
    Ok(SourceWritten {
        version,
        source: view::source(s, &catalog),
        write_key,
    })
}

#[utoipa::path(post, path = "/api/v1/catalog/sources", tag = "catalog",
    request_body = SourceInput,
    responses((status = 201, body = SourceWritten), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn create_source(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<SourceInput>, JsonRejection>,
) -> Result<(StatusCode, Json<SourceWritten>), ApiError> {
    let Json(input) = body?;
    let workspace: WorkspaceId = id("workspace", input.workspace.unwrap_or_default())?;
    let source_id: SourceId = id("id", input.id.unwrap_or_default())?;
    let (key, made) = match input.write_key {
        Some(k) => {
            check_key(&k)?;
            (k, false)
        }
        None => (new_key(), true),
    };
    let write = SourceWrite {
        id: source_id,
        workspace,
        enabled: input.enabled.unwrap_or(true),
        destinations: destination_ids(input.destinations.unwrap_or_default())?,
        settings: SourceSettings {
            allowed_origins: origins(input.allowed_origins.unwrap_or_default())?,
            limits: input.limits.unwrap_or_default(),
        },
    };
    let rotation = KeyRotation::added(&key);
    let version = state
        .store
        .source_create(&write, &rotation, &audit(&caller))
        .await?;
    tracing::info!(source = %write.id, workspace = %write.workspace, actor = %caller.name, version, "source created");
    let body = written(
        &state,
        Some(version),
        &write.workspace,
        &write.id,
        made.then_some(key),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(get, path = "/api/v1/catalog/sources/{workspace}/{source}", tag = "catalog",
    params(("workspace" = String, Path), ("source" = String, Path)),
    responses((status = 200, body = SourceWritten), (status = 404, body = ErrorBody)))]
pub async fn show_source(
    State(state): State<Arc<AdminState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<SourceWritten>, ApiError> {
    let Path((workspace, source)) = path?;
    Ok(Json(
        written(&state, None, &workspace, &source, None).await?,
    ))
}

#[utoipa::path(put, path = "/api/v1/catalog/sources/{workspace}/{source}", tag = "catalog",
    params(("workspace" = String, Path), ("source" = String, Path)),
    request_body = SourceInput,
    responses((status = 200, body = SourceWritten), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update_source(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<SourceInput>, JsonRejection>,
) -> Result<Json<SourceWritten>, ApiError> {
    let Path((workspace, source)) = path?;
    let Json(input) = body?;
    for (field, given, path) in [
        ("id", &input.id, &source),
        ("workspace", &input.workspace, &workspace),
    ] {
        if given.as_ref().is_some_and(|g| g != path) {
            return Err(ApiError::Invalid {
                field: field.into(),
                message: format!("must be the path's `{path}` (ids cannot change)"),
            });
        }
    }
    if input.write_key.is_some() {
        return Err(ApiError::Invalid {
            field: "write_key".into(),
            message: "keys change with POST …/keys (a rotation with a grace period)".into(),
        });
    }
    let catalog = state.store.catalog_load().await?;
    let current = catalog
        .source(&source)
        .filter(|s| s.workspace == workspace)
        .ok_or_else(|| {
            ApiError::NotFound(format!("no source `{source}` in workspace `{workspace}`"))
        })?;
    let write = SourceWrite {
        id: current.id.clone(),
        workspace: current.workspace.clone(),
        enabled: input.enabled.unwrap_or(current.enabled),
        destinations: match input.destinations {
            Some(list) => destination_ids(list)?,
            None => catalog.destinations_of(&source),
        },
        settings: SourceSettings {
            allowed_origins: match input.allowed_origins {
                Some(list) => origins(list)?,
                None => current.settings.allowed_origins.clone(),
            },
            limits: input.limits.unwrap_or(current.settings.limits),
        },
    };
    let version = state.store.source_update(&write, &audit(&caller)).await?;
    if let Some(version) = version {
        tracing::info!(source = %source, workspace = %workspace, actor = %caller.name, version, "source updated");
    }
    Ok(Json(
        written(&state, version, &workspace, &source, None).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/catalog/sources/{workspace}/{source}", tag = "catalog",
    params(("workspace" = String, Path), ("source" = String, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorBody)))]
pub async fn delete_source(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Deleted>, ApiError> {
    let Path((workspace, source)) = path?;
    let version = state
        .store
        .source_delete(&workspace, &source, &audit(&caller))
        .await?;
    tracing::info!(source = %source, workspace = %workspace, actor = %caller.name, version, "source deleted");
    Ok(Json(Deleted { version }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyInput {
    /// The new key. Absent: one is made and returned once.
    pub write_key: Option<String>,
    /// How long the source's other keys keep working, e.g. `24h` (the default), or `0s`.
    pub grace: Option<String>,
    /// Keep the other keys with no end (add a key without rotating).
    #[serde(default)]
    pub keep_others: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyAdded {
    pub version: i64,
    pub source: SourceView,
    /// A key made by this request: shown this once, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_key: Option<String>,
    /// When the other keys stop working (null: they keep working).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>)]
    pub others_expire_at: Option<OffsetDateTime>,
}

#[utoipa::path(post, path = "/api/v1/catalog/sources/{workspace}/{source}/keys",
    tag = "catalog", params(("workspace" = String, Path), ("source" = String, Path)),
    request_body = KeyInput,
    responses((status = 200, body = KeyAdded), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_key(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<KeyInput>, JsonRejection>,
) -> Result<Json<KeyAdded>, ApiError> {
    let Path((workspace, source)) = path?;
    let Json(input) = body?;
    let grace = match &input.grace {
        None => DEFAULT_GRACE,
        Some(text) => humantime::parse_duration(text).map_err(|e| ApiError::Invalid {
            field: "grace".into(),
            message: format!("{e} (e.g. `24h`, `30m`, `0s`)"),
        })?,
    };
    let (key, made) = match input.write_key {
        Some(k) => {
            check_key(&k)?;
            (k, false)
        }
        None => (new_key(), true),
    };
    let others_expire_at = (!input.keep_others).then(|| OffsetDateTime::now_utc() + grace);
    let rotation = KeyRotation {
        others_expire_at,
        ..KeyRotation::added(&key)
    };
    let version = state
        .store
        .source_key_add(&workspace, &source, &rotation, &audit(&caller))
        .await?;
    tracing::info!(source = %source, workspace = %workspace, actor = %caller.name, version, "write key added");
    let shown = written(&state, Some(version), &workspace, &source, None).await?;
    Ok(Json(KeyAdded {
        version,
        source: shown.source,
        write_key: made.then_some(key),
        others_expire_at,
    }))
}
