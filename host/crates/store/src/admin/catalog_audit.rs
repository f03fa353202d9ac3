//! The catalog's audit log (`catalog_audit`, migration 0008), newest first.

use serde::Serialize;
use sqlx::Row;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::{Store, StoreError};

/// One catalog change.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CatalogChange {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// The catalog version the change made.
    pub version: i64,
    /// The admin token's name, or `seed` for a config file's tables.
    pub actor: String,
    /// `create`, `update`, `delete`, `add_key` or `seed`.
    pub action: String,
    /// `source` or `destination`.
    pub kind: String,
    pub workspace: String,
    pub item: String,
    /// The item before and after, secrets masked.
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
}

impl Store {
    pub async fn admin_catalog_audit(&self, limit: i64) -> Result<Vec<CatalogChange>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, version, actor, action, kind, workspace_id, item_id, before, after
             FROM catalog_audit ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("reading the catalog audit"))?;
        rows.iter()
            .map(|r| {
                let d = || StoreError::from_sqlx("decoding a catalog change");
                Ok(CatalogChange {
                    id: r.try_get("id").map_err(d())?,
                    at: r.try_get("at").map_err(d())?,
                    version: r.try_get("version").map_err(d())?,
                    actor: r.try_get("actor").map_err(d())?,
                    action: r.try_get("action").map_err(d())?,
                    kind: r.try_get("kind").map_err(d())?,
                    workspace: r.try_get("workspace_id").map_err(d())?,
                    item: r.try_get("item_id").map_err(d())?,
                    before: r.try_get("before").map_err(d())?,
                    after: r.try_get("after").map_err(d())?,
                })
            })
            .collect()
    }
}
