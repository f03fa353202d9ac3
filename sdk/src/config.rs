//! A destination's typed config and the errors an operator sees when it is wrong.
//!
//! Contract: the host hands `configure` the destination's config as JSON text. [`parse`] reads
//! it into the author's [`Destination::Config`] through `serde_path_to_error`, so every error
//! names the field path it happened at, e.g. `timeout_ms: invalid type: string "123", expected
//! u64`, `headers.X-Env: invalid type: integer `1`, expected a string`, or (for a struct with
//! `#[serde(deny_unknown_fields)]`) `timeout: unknown field `timeout`, expected …`. A missing
//! field's path is the field itself. Text that is not JSON is reported as such, with
//! serde_json's line and column. The author's `configure` then checks what serde cannot
//! express and reports it as a [`ConfigError`] too.

use std::fmt;

use serde::de::DeserializeOwned;

use crate::Destination;

/// Why a destination's config was rejected: the field it concerns and what is wrong with it.
///
/// The host shows it to the operator as `path: message` (just `message` when the error is
/// about the config as a whole), so say what a valid value looks like.
///
/// ```
/// use sluice_sdk::ConfigError;
///
/// let err = ConfigError::field("url", "must start with http:// or https://");
/// assert_eq!(err.to_string(), "url: must start with http:// or https://");
///
/// // Plain text converts too, for `Err("…".into())`; it is shown as written.
/// let err: ConfigError = "url: must be http(s)".into();
/// assert_eq!(err.to_string(), "url: must be http(s)");
/// assert_eq!(err.path, "");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field path, dotted with `[index]` for list items (`headers.X-Env`, `rules[2].name`);
    /// empty when the error concerns the whole config.
    pub path: String,
    /// What is wrong, e.g. `must not be empty`.
    pub message: String,
}

impl ConfigError {
    /// An error about the config as a whole (no field path).
    pub fn new(message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: String::new(),
            message: message.into(),
        }
    }

    /// An error about the field at `path` (e.g. `url` or `headers.Authorization`).
    pub fn field(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<String> for ConfigError {
    fn from(message: String) -> ConfigError {
        ConfigError::new(message)
    }
}

impl From<&str> for ConfigError {
    fn from(message: &str) -> ConfigError {
        ConfigError::new(message)
    }
}

/// Read the config JSON text into `C`; errors name the field path (see the module docs).
pub(crate) fn parse<C: DeserializeOwned>(json: &str) -> Result<C, ConfigError> {
    // Parse to a value first: syntax errors keep serde_json's position, and errors about the
    // shape come from the value deserializer, which adds no "at line 1 column 57" noise to a
    // message that already names the field.
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|err| ConfigError::new(format!("the config is not valid JSON: {err}")))?;
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = match err.path().to_string() {
            root if root == "." => String::new(),
            path => path,
        };
        let message = err.into_inner().to_string();
        // serde reports a missing field at its parent; point at the field itself.
        let path = match missing_field(&message) {
            Some(field) if path.is_empty() => field.to_owned(),
            Some(field) => format!("{path}.{field}"),
            None => path,
        };
        ConfigError::field(path, message)
    })
}

/// Parse `json` into `T::Config` and configure a `T` from it, as the component export does.
pub(crate) fn configure<T: Destination>(json: &str) -> Result<T, ConfigError> {
    T::configure(parse(json)?)
}

/// The field named by serde's standard "missing field `name`" message.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")?
        .strip_suffix('`')
        .filter(|field| !field.contains('`'))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        url: String,
        #[serde(default)]
        timeout_ms: Option<u64>,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        rules: Vec<Rule>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Rule {
        name: String,
        #[serde(default)]
        weight: u8,
    }

    fn error(json: &str) -> String {
        parse::<Config>(json).expect_err(json).to_string()
    }

    #[test]
    fn a_valid_config_parses() {
        let config: Config =
            parse(r#"{"url": "https://x", "timeout_ms": 5, "rules": [{"name": "a"}]}"#)
                .expect("valid");
        assert_eq!(config.timeout_ms, Some(5));
        assert_eq!(
            config.rules,
            [Rule {
                name: "a".into(),
                weight: 0
            }]
        );
    }

    #[test]
    fn wrong_types_name_the_field_path() {
        assert_eq!(
            error(r#"{"url": "https://x", "timeout_ms": "123"}"#),
            r#"timeout_ms: invalid type: string "123", expected u64"#
        );
        assert_eq!(
            error(r#"{"url": "https://x", "headers": {"X-Env": 1}}"#),
            "headers.X-Env: invalid type: integer `1`, expected a string"
        );
        assert_eq!(
            error(
                r#"{"url": "https://x", "rules": [{"name": "a"}, {"name": "b", "weight": 300}]}"#
            ),
            "rules[1].weight: invalid value: integer `300`, expected u8"
        );
        let err = parse::<Config>(r#"{"url": 5}"#).expect_err("url is a number");
        assert_eq!(
            err,
            ConfigError::field("url", "invalid type: integer `5`, expected a string")
        );
    }

    #[test]
    fn unknown_fields_name_themselves() {
        let err = error(r#"{"url": "https://x", "timeout": 5}"#);
        assert!(
            err.starts_with("timeout: unknown field `timeout`, expected one of"),
            "{err}"
        );
        let err = error(r#"{"url": "https://x", "rules": [{"nmae": "a"}]}"#);
        assert!(err.starts_with("rules[0].nmae: unknown field"), "{err}");
    }

    #[test]
    fn missing_fields_point_at_the_field() {
        let err = parse::<Config>("{}").expect_err("no url");
        assert_eq!(err, ConfigError::field("url", "missing field `url`"));
        assert_eq!(
            error(r#"{"url": "https://x", "rules": [{"weight": 1}]}"#),
            "rules[0].name: missing field `name`"
        );
    }

    #[test]
    fn the_whole_config_has_an_empty_path() {
        let err = parse::<Config>(r#""https://x""#).expect_err("not an object");
        assert_eq!(err.path, "");
        assert!(err.message.starts_with("invalid type: string"), "{err}");
        let err = parse::<Config>("{").expect_err("not JSON");
        assert_eq!(err.path, "");
        assert!(
            err.message.starts_with("the config is not valid JSON"),
            "{err}"
        );
    }

    #[test]
    fn conversions_and_display() {
        let err: ConfigError = String::from("secret: must not be empty").into();
        assert_eq!(err, ConfigError::new("secret: must not be empty"));
        assert_eq!(err.to_string(), "secret: must not be empty");
        let err = ConfigError::field("headers.Host", "not configurable");
        assert_eq!(err.to_string(), "headers.Host: not configurable");
    }
}
