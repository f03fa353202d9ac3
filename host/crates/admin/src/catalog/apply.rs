//! `POST /api/v1/catalog/apply`: a file's `[[source]]` and `[[destination]]` tables become the
//! catalog of the workspaces they name, like `kubectl apply`. Missing items are created,
//! changed ones updated, and items of those workspaces that the file does not name are
//! deleted. Every destination created or changed must pass its plugin's `configure` first; the
//! changes are then made in one transaction, so a refusal changes nothing. Applying the same
//! file again changes nothing. With `dry_run`, the plan is returned and nothing is written.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::destinations::{audit, checked_at};
use super::mask::keep_secrets;
use crate::AdminState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use sluice_core::WorkspaceId;
use sluice_core::catalog::{Catalog, DestinationConfig, SourceConfig};
use sluice_store::{CatalogStep, DestinationStart, KeyRotation, SourceWrite};

/// How long a key replaced by `apply` keeps working.
const KEY_GRACE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyInput {
    /// `[[source]]` tables, as in `sluice.toml`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub sources: Vec<SourceConfig>,
    /// `[[destination]]` tables, as in `sluice.toml`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub destinations: Vec<DestinationConfig>,
    /// Return the plan and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// One planned change.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PlannedChange {
    /// `create`, `update`, `delete` or `rotate_key`.
    pub action: String,
    /// `source` or `destination`.
    pub kind: String,
    pub workspace: String,
    pub id: String,
    /// For an update: the fields that change (values are not shown: they may be secrets).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApplyResult {
    pub dry_run: bool,
    /// The catalog version holding the changes (null: nothing was written).
    pub version: Option<i64>,
    pub changes: Vec<PlannedChange>,
}

#[utoipa::path(post, path = "/api/v1/catalog/apply", tag = "catalog",
    request_body = ApplyInput,
    responses((status = 200, body = ApplyResult), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn apply(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<ApplyInput>, JsonRejection>,
) -> Result<Json<ApplyResult>, ApiError> {
    let Json(input) = body?;
    let catalog = state.store.catalog_load().await?;
    let plan = plan(
        &catalog,
        input.sources,
        input.destinations,
        OffsetDateTime::now_utc(),
    )?;
    for (i, d) in plan.checks.iter().enumerate() {
        checked_at(d, state.check.as_ref(), &format!("destination[{i}]")).await?;
    }
    if input.dry_run || plan.steps.is_empty() {
        return Ok(Json(ApplyResult {
            dry_run: input.dry_run,
            version: None,
            changes: plan.changes,
        }));
    }
    let plugins: Vec<&str> = plan.plugins.iter().map(String::as_str).collect();
    let audit = audit(&state, &caller, &plugins).await;
    let version = state.store.catalog_apply(&plan.steps, &audit).await?;
    tracing::info!(actor = %caller.name, changes = plan.changes.len(), ?version, "catalog applied");
    Ok(Json(ApplyResult {
        dry_run: false,
        version,
        changes: plan.changes,
    }))
}

/// What an apply does: the store's steps, what to show, and the destinations to check first.
#[derive(Debug, Default)]
struct Plan {
    steps: Vec<CatalogStep>,
    changes: Vec<PlannedChange>,
    checks: Vec<DestinationConfig>,
    /// Plugins whose secrets the audit masks.
    plugins: Vec<String>,
    /// Destination ids the file names (changed or not): the others of its workspaces go.
    named: HashSet<String>,
}

impl Plan {
    fn show(&mut self, action: &str, kind: &str, workspace: &str, id: &str, fields: Vec<String>) {
        self.changes.push(PlannedChange {
            action: action.into(),
            kind: kind.into(),
            workspace: workspace.into(),
            id: id.into(),
            fields,
        });
    }
}

fn plan(
    catalog: &Catalog,
    sources: Vec<SourceConfig>,
    destinations: Vec<DestinationConfig>,
    now: OffsetDateTime,
) -> Result<Plan, ApiError> {
    let workspaces: HashSet<WorkspaceId> = Catalog::workspaces_of(&sources, &destinations)
        .into_iter()
        .collect();
    let mut p = Plan::default();
    let invalid = |field: String, message: String| ApiError::Invalid { field, message };

    for (i, mut d) in destinations.into_iter().enumerate() {
        p.plugins.push(d.plugin.clone());
        p.named.insert(d.id.to_string());
        match catalog.destination(&d.id) {
            Some(e) if e.workspace != d.workspace => {
                return Err(invalid(
                    format!("destination[{i}].id"),
                    format!("`{}` is a destination of workspace `{}`", d.id, e.workspace),
                ));
            }
            Some(e) => {
                p.plugins.push(e.plugin.clone());
                d.config = keep_secrets(&d.config, &e.config);
                if *e == d {
                    continue;
                }
                if e.ordering != d.ordering {
                    return Err(invalid(
                        format!("destination[{i}].ordering"),
                        "a destination's ordering cannot change; create a new destination".into(),
                    ));
                }
                p.show(
                    "update",
                    "destination",
                    &d.workspace,
                    &d.id,
                    changed_fields(e, &d),
                );
                p.checks.push(d.clone());
                p.steps.push(CatalogStep::UpdateDestination(d));
            }
            None => {
                p.show("create", "destination", &d.workspace, &d.id, Vec::new());
                p.checks.push(d.clone());
                p.steps.push(CatalogStep::CreateDestination {
                    dest: d,
                    start: DestinationStart::Now,
                    sources: Vec::new(),
                });
            }
        }
    }
    let named_sources: HashSet<String> = sources.iter().map(|s| s.id.to_string()).collect();
    for (i, s) in sources.into_iter().enumerate() {
        let write = SourceWrite::from_file(&s);
        let key = KeyRotation::added(&s.write_key);
        match catalog.source(&s.id) {
            Some(e) if e.workspace != s.workspace => {
                return Err(invalid(
                    format!("source[{i}].id"),
                    format!("`{}` is a source of workspace `{}`", s.id, e.workspace),
                ));
            }
            Some(e) => {
                let mut current = catalog.destinations_of(&s.id);
                current.sort();
                let mut wanted = write.destinations.clone();
                wanted.sort();
                let mut fields = Vec::new();
                if !e.enabled {
                    fields.push("enabled".to_string());
                }
                if current != wanted {
                    fields.push("destinations".to_string());
                }
                if e.settings.allowed_origins != write.settings.allowed_origins {
                    fields.push("allowed_origins".to_string());
                }
                if e.settings.limits != write.settings.limits {
                    fields.push("limits".to_string());
                }
                if !fields.is_empty() {
                    p.show("update", "source", &s.workspace, &s.id, fields);
                    p.steps.push(CatalogStep::UpdateSource(write));
                }
                if !e.keys.iter().any(|k| k.sha256 == key.sha256) {
                    p.show(
                        "rotate_key",
                        "source",
                        &s.workspace,
                        &s.id,
                        vec!["write_key".into()],
                    );
                    p.steps.push(CatalogStep::AddKey {
                        workspace: s.workspace.clone(),
                        source: s.id.clone(),
                        key: KeyRotation {
                            others_expire_at: Some(now + KEY_GRACE),
                            ..key
                        },
                    });
                }
            }
            None => {
                p.show("create", "source", &s.workspace, &s.id, Vec::new());
                p.steps
                    .push(CatalogStep::CreateSource { source: write, key });
            }
        }
    }
    for e in catalog
        .sources
        .iter()
        .filter(|e| workspaces.contains(&e.workspace) && !named_sources.contains(e.id.as_str()))
    {
        p.show("delete", "source", &e.workspace, &e.id, Vec::new());
        p.steps.push(CatalogStep::DeleteSource {
            workspace: e.workspace.clone(),
            id: e.id.clone(),
        });
    }
    let gone: Vec<&DestinationConfig> = catalog
        .destinations
        .iter()
        .filter(|e| workspaces.contains(&e.workspace) && !p.named.contains(e.id.as_str()))
        .collect();
    for e in gone {
        p.plugins.push(e.plugin.clone());
        p.show("delete", "destination", &e.workspace, &e.id, Vec::new());
        p.steps.push(CatalogStep::DeleteDestination {
            workspace: e.workspace.clone(),
            id: e.id.clone(),
        });
    }
    Ok(p)
}

/// The top-level fields that differ (and `config.<key>` for the config's keys).
fn changed_fields(old: &DestinationConfig, new: &DestinationConfig) -> Vec<String> {
    let (Ok(Value::Object(a)), Ok(Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    let mut fields = Vec::new();
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        if a.get(k) == b.get(k) {
            continue;
        }
        if k == "config"
            && let (Some(Value::Object(ca)), Some(Value::Object(cb))) = (a.get(k), b.get(k))
        {
            let inner: std::collections::BTreeSet<&String> = ca.keys().chain(cb.keys()).collect();
            fields.extend(
                inner
                    .into_iter()
                    .filter(|c| ca.get(*c) != cb.get(*c))
                    .map(|c| format!("config.{c}")),
            );
        } else {
            fields.push(k.clone());
        }
    }
    fields
}
