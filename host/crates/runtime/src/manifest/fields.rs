//! The config fields a plugin declares: `[[config]]` in its manifest (written from the crate's
//! `[[package.metadata.sluice.config]]`), one entry per field, in the order a form shows them.
//!
//! ```toml
//! [[config]]
//! name = "url"                 # a config path: `url`, `auth.token` (nested objects)
//! type = "url"                 # string, url, integer, boolean, enum, string_map
//! required = true
//! label = "Endpoint URL"       # default: the name
//! description = "Where every event is POSTed."
//! [[config]]
//! name = "region"
//! type = "enum"
//! options = ["us", "eu"]       # enum only, and required for it
//! default = "us"               # of the field's type; the plugin applies it, forms show it
//! ```
//!
//! The table is optional (a plugin without it gets a raw JSON form) and drives forms only: the
//! plugin's `configure` stays the one judge of a config, and its refusals name the field. A
//! field is secret when the manifest's `secrets` list names it or a path above it; there is no
//! second flag to keep in step with that list.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a form asks for: the input it builds and the JSON it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Text (a JSON string).
    String,
    /// An absolute URL (a JSON string); the plugin checks its scheme and host.
    Url,
    /// A whole number (a JSON number).
    Integer,
    /// true or false.
    Boolean,
    /// One of `options` (a JSON string).
    Enum,
    /// Names to text values (a JSON object of strings), such as extra headers.
    StringMap,
}

impl FieldType {
    const ALL: [(&'static str, FieldType); 6] = [
        ("string", FieldType::String),
        ("url", FieldType::Url),
        ("integer", FieldType::Integer),
        ("boolean", FieldType::Boolean),
        ("enum", FieldType::Enum),
        ("string_map", FieldType::StringMap),
    ];

    fn parse(text: &str) -> Option<FieldType> {
        Self::ALL.iter().find(|(t, _)| *t == text).map(|(_, f)| *f)
    }

    /// The name a manifest spells it with.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("", |(t, _)| t)
    }

    /// Whether `value` is a value of this type (for a declared `default`).
    fn admits(self, value: &Value) -> bool {
        match self {
            FieldType::String | FieldType::Url | FieldType::Enum => value.is_string(),
            FieldType::Integer => value.is_i64() || value.is_u64(),
            FieldType::Boolean => value.is_boolean(),
            FieldType::StringMap => value
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string)),
        }
    }
}

/// One declared config field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawField")]
pub struct ConfigField {
    /// The config path: names joined by `.`.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FieldType,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A field as written, before its type is known to be one of ours. Deserialising through it
/// lets an unknown type's error name the field (`field \`url\`: unknown type \`float\``), not
/// only its index in the array.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    default: Option<Value>,
    #[serde(default)]
    options: Vec<String>,
}

impl TryFrom<RawField> for ConfigField {
    type Error = String;

    fn try_from(raw: RawField) -> Result<ConfigField, String> {
        let kind = FieldType::parse(&raw.kind).ok_or_else(|| {
            let known: Vec<String> = FieldType::ALL
                .iter()
                .map(|(t, _)| format!("`{t}`"))
                .collect();
            format!(
                "field `{}`: unknown type `{}`, expected one of {}",
                raw.name,
                raw.kind,
                known.join(", ")
            )
        })?;
        Ok(ConfigField {
            name: raw.name,
            kind,
            required: raw.required,
            label: raw.label,
            description: raw.description,
            default: raw.default,
            options: raw.options,
        })
    }
}

/// Checks the declared fields together; the error text starts with the field it is about.
pub(super) fn validate(fields: &[ConfigField]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for f in fields {
        let name = &f.name;
        if name.is_empty() || name.split('.').any(str::is_empty) {
            return Err(format!(
                "field `{name}`: the name must be a config path like `url` or `auth.token`"
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(format!("field `{name}`: declared twice"));
        }
        // A path that is a prefix of another would ask for one value as both text and object.
        if let Some(other) = fields
            .iter()
            .find(|o| o.name.starts_with(&format!("{name}.")))
        {
            return Err(format!(
                "field `{name}`: `{}` lies inside it; declare one or the other",
                other.name
            ));
        }
        match (f.kind, f.options.is_empty()) {
            (FieldType::Enum, true) => {
                return Err(format!("field `{name}`: an enum needs `options`"));
            }
            (FieldType::Enum, false) => {}
            (_, false) => {
                return Err(format!("field `{name}`: `options` is for enum fields only"));
            }
            (_, true) => {}
        }
        if let Some(default) = &f.default {
            if !f.kind.admits(default) {
                return Err(format!(
                    "field `{name}`: default {default} is not a value of type `{}`",
                    f.kind.as_str()
                ));
            }
            if f.kind == FieldType::Enum
                && !default
                    .as_str()
                    .is_some_and(|d| f.options.iter().any(|o| o == d))
            {
                return Err(format!(
                    "field `{name}`: default {default} is not one of `options`"
                ));
            }
        }
    }
    Ok(())
}

impl ConfigField {
    /// Whether a `secrets` list names this field or a path above it (`headers` covers
    /// `headers.Authorization`).
    pub fn is_secret(&self, secrets: &[String]) -> bool {
        secrets.iter().any(|s| {
            self.name == *s
                || self
                    .name
                    .strip_prefix(s.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::super::Manifest;
    use super::*;

    fn parse(text: &str) -> Result<Manifest, String> {
        Manifest::parse(&format!("name = \"x\"\n{text}"), Path::new("x.toml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn declared_fields_parse_in_order_and_survive_a_round_trip() {
        let m = parse(
            r#"secrets = ["secret", "headers.Authorization"]
[[config]]
name = "url"
type = "url"
required = true
label = "Endpoint URL"
description = "Where every event is POSTed."
[[config]]
name = "secret"
type = "string"
required = true
[[config]]
name = "region"
type = "enum"
options = ["us", "eu"]
default = "us"
[[config]]
name = "headers"
type = "string_map"
default = { X-Source = "sluice" }
[[config]]
name = "timeout_ms"
type = "integer"
default = 5000
"#,
        )
        .expect("valid");
        let fields = m.config.as_deref().expect("declared");
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["url", "secret", "region", "headers", "timeout_ms"]);
        assert_eq!(fields[0].kind, FieldType::Url);
        assert!(fields[0].required && !fields[2].required);
        assert_eq!(fields[0].label.as_deref(), Some("Endpoint URL"));
        assert_eq!(fields[2].default, Some(json!("us")));
        assert_eq!(fields[3].default, Some(json!({"X-Source": "sluice"})));
        // Secret: named by `secrets`, or under a path it names; `headers` only has one secret
        // entry inside it, so the map itself is not secret.
        assert!(fields[1].is_secret(&m.secrets));
        assert!(!fields[3].is_secret(&m.secrets));
        assert!(fields[3].is_secret(&["headers".into()]));
        assert!(!fields[0].is_secret(&["ur".into()]));

        // `plugin build` writes the manifest with toml and the host reads it back.
        let text = toml::to_string(&m).expect("serialise");
        let again = Manifest::parse(&text, Path::new("x.toml")).expect("read back");
        assert_eq!(again, m, "{text}");
    }

    #[test]
    fn a_plugin_without_the_table_declares_nothing() {
        assert_eq!(parse("").expect("valid").config, None);
        assert_eq!(parse("config = []\n").expect("valid").config, Some(vec![]));
    }

    #[test]
    fn bad_declarations_name_the_field() {
        for (text, prefix, expected) in [
            (
                "[[config]]\nname = \"url\"\ntype = \"float\"\n",
                "x.toml: config[0]: ",
                "field `url`: unknown type `float`, expected one of `string`, `url`, `integer`, \
                 `boolean`, `enum`, `string_map`",
            ),
            (
                "[[config]]\nname = \"url\"\ntype = \"url\"\nlable = \"URL\"\n",
                "x.toml: config[0].lable: ",
                "unknown field `lable`",
            ),
            (
                "[[config]]\nname = \"url\"\n",
                "x.toml: config[0]: ",
                "missing field `type`",
            ),
            (
                "[[config]]\nname = \"a\"\ntype = \"url\"\n[[config]]\nname = \"a\"\ntype = \"string\"\n",
                "x.toml: config: ",
                "field `a`: declared twice",
            ),
            (
                "[[config]]\nname = \"auth.\"\ntype = \"string\"\n",
                "x.toml: config: ",
                "field `auth.`: the name must be a config path",
            ),
            (
                "[[config]]\nname = \"auth\"\ntype = \"string\"\n[[config]]\nname = \"auth.token\"\ntype = \"string\"\n",
                "x.toml: config: ",
                "field `auth`: `auth.token` lies inside it",
            ),
            (
                "[[config]]\nname = \"region\"\ntype = \"enum\"\n",
                "x.toml: config: ",
                "field `region`: an enum needs `options`",
            ),
            (
                "[[config]]\nname = \"url\"\ntype = \"url\"\noptions = [\"a\"]\n",
                "x.toml: config: ",
                "field `url`: `options` is for enum fields only",
            ),
            (
                "[[config]]\nname = \"timeout_ms\"\ntype = \"integer\"\ndefault = \"soon\"\n",
                "x.toml: config: ",
                "field `timeout_ms`: default \"soon\" is not a value of type `integer`",
            ),
            (
                "[[config]]\nname = \"region\"\ntype = \"enum\"\noptions = [\"us\"]\ndefault = \"eu\"\n",
                "x.toml: config: ",
                "field `region`: default \"eu\" is not one of `options`",
            ),
        ] {
            // A serde error carries TOML's excerpt of the file between the path and the text.
            let err = parse(text).expect_err(text);
            assert!(
                err.starts_with(prefix) && err.contains(expected),
                "{text}\n got: {err}\nwant: {prefix}…{expected}"
            );
        }
    }
}
