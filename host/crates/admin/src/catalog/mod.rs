//! The catalog through the admin API (docs/catalog.md): sources, destinations, their links,
//! and the write keys, created, read, updated and deleted.
//!
//! ```text
//! GET    /api/v1/catalog                          everything, secrets masked, with its version
//! GET    /api/v1/catalog/audit                    the changes, newest first
//! POST   /api/v1/catalog/destinations             create (`start`: now, earliest, a time)
//! GET    /api/v1/catalog/destinations/{ws}/{id}   one
//! PUT    /api/v1/catalog/destinations/{ws}/{id}   replace its plugin, config and settings
//! DELETE /api/v1/catalog/destinations/{ws}/{id}   delete (its unfinished jobs are aborted)
//! POST   /api/v1/catalog/sources                  create (a write key is made unless given)
//! GET    /api/v1/catalog/sources/{ws}/{id}        one
//! PUT    /api/v1/catalog/sources/{ws}/{id}        enabled, destinations (its links)
//! DELETE /api/v1/catalog/sources/{ws}/{id}        delete (its keys stop working)
//! POST   /api/v1/catalog/sources/{ws}/{id}/keys   add a key; rotate with a grace period
//! POST   /api/v1/catalog/apply                    a file's tables become its workspaces' catalog
//! GET    /api/v1/catalog/plugins                  plugins loaded here, their declared fields
//! ```
//!
//! The rules are the same for every path that changes the catalog (this API, the CLI and
//! `sluice apply`, which call it): a destination is written only once its plugin, loaded on
//! this host, accepted its config ([`CatalogCheck`]); a refusal is a 400 naming the field. A
//! secret (a field the plugin's manifest declares, or one whose name looks secret) is never
//! returned, only `***`; a `***` sent back in an update keeps the stored value.

pub mod apply;
pub mod destinations;
mod mask;
pub mod plugins;
pub mod sources;
pub mod view;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

pub use apply::apply;
pub use destinations::{
    create_destination, delete_destination, show_destination, update_destination,
};
pub use sources::{add_key, create_source, delete_source, show_source, update_source};
pub use view::{CatalogView, DestinationView, SourceView};

use super::AdminState;
use super::error::ApiError;
use sluice_config::DestinationConfig;
use sluice_runtime::Manifest;
use sluice_store::CatalogError;
use sluice_store::admin::CatalogChange;

/// A future the checker returns (boxed: the checker is a trait object).
pub type CheckFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a destination's config cannot run, and the field at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub field: String,
    pub message: String,
}

/// What the admin API asks of the plugins before it writes a destination: the binary wires in
/// the engine's plugin set, so that the check runs the very plugin that will serve it.
pub trait CatalogCheck: Send + Sync {
    /// Whether `dest` would run: its plugin is loaded and accepts the config.
    fn check<'a>(&'a self, dest: &'a DestinationConfig) -> CheckFuture<'a, Result<(), Refusal>>;
    /// The config paths the plugin declares secret (`None`: the plugin is not loaded).
    fn secret_paths<'a>(&'a self, plugin: &'a str) -> CheckFuture<'a, Option<Vec<String>>>;
    /// The manifests of the plugins loaded on this host, by name (their declared config
    /// fields build the web page's destination form).
    fn plugins(&self) -> CheckFuture<'_, Vec<Manifest>>;
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> ApiError {
        match e {
            CatalogError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            CatalogError::Conflict(message) => ApiError::Conflict(message),
            CatalogError::Invalid(invalid) => ApiError::Invalid {
                field: invalid.field,
                message: invalid.message,
            },
            CatalogError::Store(e) => e.into(),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/catalog", tag = "catalog",
    responses((status = 200, body = CatalogView)))]
pub async fn show(State(state): State<Arc<AdminState>>) -> Result<Json<CatalogView>, ApiError> {
    let catalog = state.store.catalog_load().await?;
    Ok(Json(view::catalog(&catalog, state.check.as_ref()).await))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// 1-1000, default 100.
    pub limit: Option<i64>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub changes: Vec<CatalogChange>,
}

#[utoipa::path(get, path = "/api/v1/catalog/audit", tag = "catalog", params(AuditQuery),
    responses((status = 200, body = AuditPage)))]
pub async fn audit(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad("limit: between 1 and 1000"));
    }
    Ok(Json(AuditPage {
        changes: state.store.admin_catalog_audit(limit).await?,
    }))
}
