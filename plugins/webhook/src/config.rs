//! The webhook destination's config: parsed and validated once, in `configure`.
//!
//! Contract: `{ "url": "http(s)://…" (required), "secret": "…" (required, non-empty),
//! "headers": {name: value} (optional), "timeout_ms": positive integer (optional) }`.
//! Every error names the offending field, because the operator sees it verbatim. Unknown
//! fields are rejected so that a typo (`"header"`, `"timeout"`) does not silently do nothing.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::signature::signing_key;

/// Headers the plugin computes itself or the host's HTTP client owns: letting the config
/// set them would break the signature or the request framing.
const RESERVED_HEADERS: [&str; 6] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-length",
    "host",
    "transfer-encoding",
];

const FIELDS: [&str; 4] = ["url", "secret", "headers", "timeout_ms"];

/// A validated webhook config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where every event is POSTed.
    pub url: String,
    /// The HMAC key derived from the secret.
    pub key: Vec<u8>,
    /// Extra headers, in the config's order.
    pub headers: Vec<(String, String)>,
    /// Per-request deadline; the host's default when `None`.
    pub timeout: Option<Duration>,
}

impl Config {
    /// Validate `config` as described in the module docs.
    pub fn parse(config: &Value) -> Result<Config, String> {
        let Value::Object(obj) = config else {
            return Err("the webhook config must be a JSON object".to_owned());
        };
        if let Some(unknown) = obj.keys().find(|key| !FIELDS.contains(&key.as_str())) {
            return Err(format!(
                "{unknown}: unknown field (expected one of {})",
                FIELDS.join(", ")
            ));
        }
        Ok(Config {
            url: url(obj)?,
            key: key(obj)?,
            headers: headers(obj)?,
            timeout: timeout(obj)?,
        })
    }
}

fn url(obj: &Map<String, Value>) -> Result<String, String> {
    let url = match obj.get("url") {
        Some(Value::String(url)) => url.trim(),
        Some(_) => return Err("url: must be a string".to_owned()),
        None => return Err("url: required (the http:// or https:// endpoint)".to_owned()),
    };
    let rest = strip_prefix_ignore_case(url, "https://")
        .or_else(|| strip_prefix_ignore_case(url, "http://"))
        .ok_or_else(|| format!("url: must start with http:// or https://, got {url:?}"))?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("url: must not contain whitespace, got {url:?}"));
    }
    // The host parses the URL for real (and derives the allowlist from it); this only
    // catches the obvious mistakes early, with a message naming the field.
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    if host_port.is_empty() || host_port.starts_with(':') {
        return Err(format!("url: has no host, got {url:?}"));
    }
    Ok(url.to_owned())
}

fn key(obj: &Map<String, Value>) -> Result<Vec<u8>, String> {
    let secret = match obj.get("secret") {
        Some(Value::String(secret)) => secret,
        Some(_) => return Err("secret: must be a string".to_owned()),
        None => return Err("secret: required (the signing secret, e.g. whsec_…)".to_owned()),
    };
    let key = signing_key(secret);
    if key.is_empty() {
        return Err("secret: must not be empty".to_owned());
    }
    Ok(key)
}

fn headers(obj: &Map<String, Value>) -> Result<Vec<(String, String)>, String> {
    let map = match obj.get("headers") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err("headers: must be an object of header names to strings".to_owned()),
    };
    map.iter()
        .map(|(name, value)| {
            let Value::String(value) = value else {
                return Err(format!("headers.{name}: must be a string"));
            };
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(format!("headers.{name}: not a valid header name"));
            }
            if RESERVED_HEADERS
                .iter()
                .any(|r| r.eq_ignore_ascii_case(name))
            {
                return Err(format!(
                    "headers.{name}: set by the webhook plugin or the host, not configurable"
                ));
            }
            if value.chars().any(|c| c.is_control() && c != '\t') {
                return Err(format!(
                    "headers.{name}: value must not contain control characters"
                ));
            }
            Ok((name.clone(), value.clone()))
        })
        .collect()
}

fn timeout(obj: &Map<String, Value>) -> Result<Option<Duration>, String> {
    match obj.get("timeout_ms") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_u64().and_then(|ms| u32::try_from(ms).ok()) {
            Some(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms.into()))),
            _ => Err(format!(
                "timeout_ms: must be a positive integer (milliseconds) up to {}, got {value}",
                u32::MAX
            )),
        },
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// RFC 9110 `tchar`: the bytes allowed in a header name.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error(config: Value) -> String {
        Config::parse(&config).expect_err("invalid config")
    }

    #[test]
    fn parses_a_full_config() {
        let config = Config::parse(&json!({
            "url": "https://hooks.example.com/in?x=1",
            "secret": "whsec_aGk=",
            "headers": {"Authorization": "Bearer t", "X-Env": "prod"},
            "timeout_ms": 1500
        }))
        .expect("valid");
        assert_eq!(config.url, "https://hooks.example.com/in?x=1");
        assert_eq!(config.key, b"hi");
        assert_eq!(config.headers.len(), 2);
        assert_eq!(config.timeout, Some(Duration::from_millis(1500)));

        let minimal = Config::parse(&json!({"url": "HTTP://localhost:8080", "secret": "s"}));
        assert_eq!(minimal.map(|c| (c.headers.len(), c.timeout)), Ok((0, None)));
    }

    #[test]
    fn url_errors_name_the_field() {
        for config in [
            json!({"secret": "s"}),
            json!({"url": 5, "secret": "s"}),
            json!({"url": "ftp://x", "secret": "s"}),
            json!({"url": "hooks.example.com", "secret": "s"}),
            json!({"url": "https://", "secret": "s"}),
            json!({"url": "https://:80/x", "secret": "s"}),
            json!({"url": "https://a b", "secret": "s"}),
        ] {
            let err = error(config.clone());
            assert!(err.starts_with("url:"), "{config}: {err}");
        }
    }

    #[test]
    fn secret_errors_name_the_field() {
        for config in [
            json!({"url": "https://x"}),
            json!({"url": "https://x", "secret": ""}),
            json!({"url": "https://x", "secret": "whsec_"}),
            json!({"url": "https://x", "secret": ["s"]}),
        ] {
            let err = error(config.clone());
            assert!(err.starts_with("secret:"), "{config}: {err}");
        }
    }

    #[test]
    fn header_timeout_and_shape_errors() {
        let base = |extra: Value| {
            let mut config = json!({"url": "https://x", "secret": "s"});
            if let (Value::Object(c), Value::Object(e)) = (&mut config, extra) {
                c.extend(e);
            }
            error(config)
        };
        assert!(base(json!({"headers": ["a"]})).starts_with("headers:"));
        assert!(base(json!({"headers": {"X": 1}})).starts_with("headers.X:"));
        assert!(base(json!({"headers": {"bad name": "v"}})).starts_with("headers.bad name:"));
        assert!(base(json!({"headers": {"Webhook-Signature": "v"}})).contains("not configurable"));
        assert!(base(json!({"headers": {"X": "a\r\nInjected: 1"}})).contains("control"));
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!("100"),
            json!(5_000_000_000_u64),
        ] {
            assert!(base(json!({ "timeout_ms": bad })).starts_with("timeout_ms:"));
        }
        assert!(base(json!({"timeout": 5})).starts_with("timeout: unknown field"));
        assert_eq!(
            error(json!("https://x")),
            "the webhook config must be a JSON object"
        );
    }
}
