//! `GET /api/v1/catalog/plugins`: the plugins this host has loaded, with the config fields each
//! declares (`[[config]]` in its manifest), so that a client can build a destination's form.
//!
//! What it answers for is this host's plugins directory, as a destination written through this
//! host is checked by this host's plugins. Which versions every live host runs is
//! `GET /api/v1/plugins`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::AdminState;
use crate::error::ApiError;
use sluice_runtime::Manifest;
use sluice_runtime::manifest::ConfigField;

#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogPlugins {
    /// By name.
    pub plugins: Vec<PluginInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    /// The config paths the plugin declares secret: shown as `***`, and a `***` sent back
    /// keeps the stored value.
    pub secrets: Vec<String>,
    /// The declared config fields, in form order; null when the plugin declares none (a form
    /// then takes the config as JSON).
    pub fields: Option<Vec<FieldInfo>>,
}

/// One declared config field, as a form needs it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldInfo {
    /// The config path (`url`, `auth.token`): `config.<name>` in a refusal's `field`.
    pub name: String,
    /// `string`, `url`, `integer`, `boolean`, `enum` or `string_map`.
    #[serde(rename = "type")]
    pub kind: String,
    pub required: bool,
    /// What a form labels it with (the name unless the manifest gives one).
    pub label: String,
    pub description: Option<String>,
    /// The plugin's default, when it declares one (the plugin applies it to an absent field).
    #[schema(value_type = Option<Object>)]
    pub default: Option<Value>,
    /// The choices of an `enum`.
    pub options: Vec<String>,
    /// Named by the manifest's `secrets` (or a path above it): a password input.
    pub secret: bool,
}

fn field(f: &ConfigField, secrets: &[String]) -> FieldInfo {
    FieldInfo {
        name: f.name.clone(),
        kind: f.kind.as_str().to_string(),
        required: f.required,
        label: f.label.clone().unwrap_or_else(|| f.name.clone()),
        description: f.description.clone(),
        default: f.default.clone(),
        options: f.options.clone(),
        secret: f.is_secret(secrets),
    }
}

/// A loaded plugin as the API shows it.
pub fn info(m: &Manifest) -> PluginInfo {
    PluginInfo {
        name: m.name.clone(),
        version: m.version.clone(),
        secrets: m.secrets.clone(),
        fields: m
            .config
            .as_ref()
            .map(|fields| fields.iter().map(|f| field(f, &m.secrets)).collect()),
    }
}

#[utoipa::path(get, path = "/api/v1/catalog/plugins", tag = "catalog",
    responses((status = 200, body = CatalogPlugins)))]
pub async fn plugins(
    State(state): State<Arc<AdminState>>,
) -> Result<Json<CatalogPlugins>, ApiError> {
    let manifests = state.check.plugins().await;
    Ok(Json(CatalogPlugins {
        plugins: manifests.iter().map(info).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    #[test]
    fn declared_fields_are_shown_with_labels_and_derived_secrets() {
        let m = Manifest::parse(
            r#"name = "hook"
version = "1.2.0"
secrets = ["secret", "headers.Authorization"]
[[config]]
name = "url"
type = "url"
required = true
label = "URL"
[[config]]
name = "secret"
type = "string"
required = true
description = "Signing secret."
[[config]]
name = "headers"
type = "string_map"
"#,
            Path::new("hook.toml"),
        )
        .expect("a valid manifest");
        let shown = serde_json::to_value(info(&m)).expect("JSON");
        assert_eq!(
            shown,
            json!({
                "name": "hook", "version": "1.2.0",
                "secrets": ["secret", "headers.Authorization"],
                "fields": [
                    {"name": "url", "type": "url", "required": true, "label": "URL",
                     "description": null, "default": null, "options": [], "secret": false},
                    {"name": "secret", "type": "string", "required": true, "label": "secret",
                     "description": "Signing secret.", "default": null, "options": [],
                     "secret": true},
                    {"name": "headers", "type": "string_map", "required": false,
                     "label": "headers", "description": null, "default": null, "options": [],
                     "secret": false},
                ],
            })
        );
    }

    #[test]
    fn a_plugin_that_declares_no_fields_has_null_fields() {
        let m = Manifest::parse("name = \"raw\"\n", Path::new("raw.toml")).expect("valid");
        let shown = serde_json::to_value(info(&m)).expect("JSON");
        assert_eq!(shown["fields"], Value::Null, "{shown}");
    }
}
