//! A destination's typed config and the errors an operator sees when it is wrong.
//!
//! Contract: the host hands `configure` the destination's config as JSON text. [`parse`] reads
//! it into the author's [`Destination::Config`] through `serde_path_to_error`, so every error
//! names the field path it happened at, e.g. `timeout_ms: invalid type: string "123", expected
//! u64`, `headers.X-Env: invalid type: integer `1`, expected a string`, or (for a struct with
//! `#[serde(deny_unknown_fields)]`) `timeout: unknown field `timeout`, expected …`. A missing
//! field's path is the field itself. Text that is not JSON is reported as such, with
//! serde_json's line and column; a config that is not an object (and that `Config` rejects) is
//! `the config must be an object (a table in sluice.toml), got a string`. Operators never see
//! a Rust type name: serde's `expected struct Rule` and its siblings are reworded (`expected
//! an object`). The author's `configure` then checks what serde cannot express and reports it
//! as a [`ConfigError`] too.

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
/// // Plain text converts too, for `Err("…".into())`; it is shown as written, and a leading
/// // `field.path: ` becomes the path.
/// let err: ConfigError = "url: must be http(s)".into();
/// assert_eq!(err, ConfigError::field("url", "must be http(s)"));
/// let err: ConfigError = "set either url or host, not both".into();
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

/// Text as written by the plugin: `field.path: message` names the field (as
/// [`ConfigError::field`] does), anything else concerns the whole config.
///
/// The path is recognised when the text starts with field names (letters, digits, `_`, `-`)
/// joined by `.` and optionally indexed (`rules[2]`), followed by `": "`; the text is shown
/// to the operator unchanged either way.
impl From<&str> for ConfigError {
    fn from(text: &str) -> ConfigError {
        match split_path(text) {
            Some((path, message)) => ConfigError::field(path, message),
            None => ConfigError::new(text),
        }
    }
}

/// As `From<&str>`.
impl From<String> for ConfigError {
    fn from(text: String) -> ConfigError {
        ConfigError::from(text.as_str())
    }
}

/// `("rules[2].name", "…")` for `"rules[2].name: …"`; `None` unless the text starts with a
/// field path and `": "`.
fn split_path(text: &str) -> Option<(&str, &str)> {
    let (path, message) = text.split_once(": ")?;
    let is_name = |name: &str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let is_segment = |segment: &str| {
        // `name` followed by any number of `[digits]`.
        let (name, mut indices) = segment.split_at(segment.find('[').unwrap_or(segment.len()));
        while let Some(rest) = indices.strip_prefix('[') {
            let Some((index, rest)) = rest.split_once(']') else {
                return false;
            };
            if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
            indices = rest;
        }
        is_name(name) && indices.is_empty()
    };
    path.split('.').all(is_segment).then_some((path, message))
}

/// Read the config JSON text into `C`; errors name the field path (see the module docs).
pub(crate) fn parse<C: DeserializeOwned>(json: &str) -> Result<C, ConfigError> {
    // Parse to a value first: syntax errors keep serde_json's position, and errors about the
    // shape come from the value deserializer, which adds no "at line 1 column 57" noise to a
    // message that already names the field.
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|err| ConfigError::new(format!("the config is not valid JSON: {err}")))?;
    // For the message only: `C` decides what it accepts (a `Value` takes anything, and serde
    // reads a struct from an array too).
    let root_kind = (!value.is_object()).then(|| kind(&value));
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = match err.path().to_string() {
            root if root == "." => String::new(),
            path => path,
        };
        let message = without_type_names(&err.into_inner().to_string());
        let wants_object = ["expected an object", "expected a map"]
            .iter()
            .any(|expected| message.ends_with(expected));
        if let (true, true, Some(kind)) = (path.is_empty(), wants_object, root_kind) {
            return ConfigError::new(format!(
                "the config must be an object (a table in sluice.toml), got {kind}"
            ));
        }
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

/// `message` with the Rust type names serde's derived impls put in their expectations
/// (`expected struct Rule`, `expected enum Mode`, …) replaced by what the operator must write.
fn without_type_names(message: &str) -> String {
    const UNTAGGED: &str = "data did not match any variant of untagged enum ";
    if message.starts_with(UNTAGGED) {
        return "matches none of the accepted forms".to_owned();
    }
    let Some((head, expected)) = message.rsplit_once(", expected ") else {
        return message.to_owned();
    };
    // `with N elements`: the length serde wanted when a struct was given as an array.
    let (what, elements) = expected
        .split_once(" with ")
        .map_or((expected, None), |(what, n)| (what, Some(n)));
    let plain = [
        ("struct variant ", "an object"),
        ("struct ", "an object"),
        ("tuple struct ", "an array"),
        ("unit struct ", "null"),
        ("internally tagged enum ", "an object"),
        ("adjacently tagged enum ", "an object"),
        ("enum ", "one of the accepted values"),
    ]
    .into_iter()
    .find_map(|(prefix, plain)| {
        let name = what.strip_prefix(prefix)?;
        let is_type_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
        is_type_name.then_some(plain)
    });
    match (plain, elements) {
        (Some("an array"), Some(elements)) => format!("{head}, expected an array of {elements}"),
        (Some(plain), _) => format!("{head}, expected {plain}"),
        (None, _) => message.to_owned(),
    }
}

/// How the operator's value is described: `a string`, `an array`, ….
fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
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
        let err = parse::<Config>("{").expect_err("not JSON");
        assert_eq!(err.path, "");
        assert!(
            err.message.starts_with("the config is not valid JSON"),
            "{err}"
        );
    }

    #[test]
    fn a_config_that_is_not_an_object_says_so_without_type_names() {
        for (json, kind) in [
            (r#""https://x""#, "a string"),
            ("5", "a number"),
            ("true", "a boolean"),
            ("null", "null"),
        ] {
            let err = parse::<Config>(json).expect_err(json);
            assert_eq!(
                err,
                ConfigError::new(format!(
                    "the config must be an object (a table in sluice.toml), got {kind}"
                ))
            );
        }
        let err = parse::<BTreeMap<String, String>>("[]").expect_err("a map");
        assert_eq!(
            err.to_string(),
            "the config must be an object (a table in sluice.toml), got an array"
        );
        // A config type that is not an object keeps serde's message.
        let err = parse::<Vec<u8>>(r#""x""#).expect_err("a list");
        assert_eq!(
            err.to_string(),
            r#"invalid type: string "x", expected a sequence"#
        );
        assert_eq!(parse::<serde_json::Value>(r#""x""#), Ok("x".into()));
    }

    #[test]
    fn nested_type_names_are_reworded() {
        assert_eq!(
            error(r#"{"url": "https://x", "rules": [5]}"#),
            "rules[0]: invalid type: integer `5`, expected an object"
        );
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        enum Mode {
            Fast,
            Safe,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Pair(u8, u8);
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Modes {
            mode: Mode,
            pair: Option<Pair>,
        }
        let err = parse::<Modes>(r#"{"mode": 1}"#).expect_err("not a variant");
        assert_eq!(
            err.to_string(),
            "mode: invalid type: integer `1`, expected string or map"
        );
        let err = parse::<Modes>(r#"{"mode": "Slow"}"#).expect_err("unknown variant");
        assert_eq!(
            err.to_string(),
            "mode: unknown variant `Slow`, expected `Fast` or `Safe`"
        );
        let err = parse::<Modes>(r#"{"mode": "Fast", "pair": [1]}"#).expect_err("short");
        assert_eq!(
            err.to_string(),
            "pair: invalid length 1, expected an array of 2 elements"
        );
        for (serde, plain) in [
            (
                "invalid type: map, expected unit struct Marker",
                "invalid type: map, expected null",
            ),
            (
                "invalid type: string \"x\", expected internally tagged enum Auth",
                "invalid type: string \"x\", expected an object",
            ),
            (
                "invalid type: integer `1`, expected enum Mode",
                "invalid type: integer `1`, expected one of the accepted values",
            ),
            (
                "data did not match any variant of untagged enum Target",
                "matches none of the accepted forms",
            ),
            (
                "invalid type: map, expected a string",
                "invalid type: map, expected a string",
            ),
            (
                "custom: expected struct of art",
                "custom: expected struct of art",
            ),
        ] {
            assert_eq!(without_type_names(serde), plain);
        }
    }

    #[test]
    fn text_errors_take_a_leading_field_path() {
        let err: ConfigError = String::from("secret: must not be empty").into();
        assert_eq!(err, ConfigError::field("secret", "must not be empty"));
        assert_eq!(err.to_string(), "secret: must not be empty");
        for (text, path) in [
            ("headers.X-Env: not allowed", "headers.X-Env"),
            ("rules[2].name: too long", "rules[2].name"),
            ("matrix[0][1]: out of range", "matrix[0][1]"),
        ] {
            let err = ConfigError::from(text);
            assert_eq!(err.path, path, "{text}");
            assert_eq!(err.to_string(), text);
        }
        for text in [
            "set either url or host, not both",
            "https://x: unreachable",
            "url:must be http(s)",
            "two words: no path",
            "rules[]: empty index",
            "rules[a]: not an index",
            ".url: empty segment",
            ": nothing",
        ] {
            let err = ConfigError::from(text);
            assert_eq!(err, ConfigError::new(text), "{text}");
        }
        let err = ConfigError::field("headers.Host", "not configurable");
        assert_eq!(err.to_string(), "headers.Host: not configurable");
        assert_eq!(ConfigError::new("bad").to_string(), "bad");
    }
}
