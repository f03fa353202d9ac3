//! The webhook destination's config: deserialized by the SDK, checked once in `configure`.
//!
//! Contract: `{ "url": "http(s)://…" (required), "secret": "…" (required, non-empty),
//! "headers": {name: value} (optional), "timeout_ms": positive integer up to 2^32-1
//! (optional) }`. Types, missing and unknown fields are serde's job (the SDK reports them with
//! their field path; unknown fields are rejected so that a typo such as `"header"` does not
//! silently do nothing). This module checks the rest: the URL's scheme and host, a secret
//! that yields a key, and header names and values the plugin may send. Every error names
//! the offending field, because the operator sees it verbatim.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use serde::Deserialize;
use sluice_sdk::{ConfigError, validate};

use sluice_sdk::webhooks::Secret;

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

/// The config as the operator writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where every event is POSTed.
    pub url: String,
    /// The signing secret: `whsec_<base64>` or any other text.
    pub secret: String,
    /// Extra headers (sent in name order).
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Per-request deadline in milliseconds; the host's default when absent.
    #[serde(default)]
    pub timeout_ms: Option<NonZeroU32>,
}

/// `url`, trimmed, if it is an absolute http(s) URL with a host.
pub fn url(url: &str) -> Result<String, ConfigError> {
    validate::http_url("url", url)
}

/// The signing secret, which must not be empty (nor an empty `whsec_` secret).
pub fn secret(secret: &str) -> Result<Secret, ConfigError> {
    Secret::parse(secret).map_err(|err| ConfigError::field("secret", err.to_string()))
}

/// The extra headers, checked: valid names, not reserved, no control characters in values.
pub fn headers(
    headers: Option<BTreeMap<String, String>>,
) -> Result<Vec<(String, String)>, ConfigError> {
    validate::headers("headers", headers, &RESERVED_HEADERS)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};
    use sluice_sdk::testing::configure;

    use crate::Webhook;

    fn error(config: Value) -> String {
        configure::<Webhook>(&config.to_string())
            .expect_err("invalid config")
            .to_string()
    }

    #[test]
    fn parses_a_full_config() {
        let webhook = configure::<Webhook>(
            &json!({
                "url": " https://hooks.example.com/in?x=1",
                "secret": "whsec_aGk=",
                "headers": {"X-Env": "prod", "Authorization": "Bearer t"},
                "timeout_ms": 1500
            })
            .to_string(),
        )
        .expect("valid");
        assert_eq!(webhook.url, "https://hooks.example.com/in?x=1");
        assert_eq!(webhook.secret.key(), b"hi");
        let names: Vec<&str> = webhook.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Authorization", "X-Env"]);
        assert_eq!(webhook.timeout, Some(Duration::from_millis(1500)));

        let minimal = configure::<Webhook>(r#"{"url": "HTTP://localhost:8080", "secret": "s"}"#)
            .expect("valid");
        assert_eq!((minimal.headers.len(), minimal.timeout), (0, None));
        let nulls = configure::<Webhook>(
            r#"{"url": "http://x", "secret": "s", "headers": null, "timeout_ms": null}"#,
        );
        assert!(nulls.is_ok());
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
        assert!(base(json!({"headers": ["a"]})).starts_with("headers: invalid type: sequence"));
        assert_eq!(
            base(json!({"headers": {"X": 1}})),
            "headers.X: invalid type: integer `1`, expected a string"
        );
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
            let err = base(json!({ "timeout_ms": bad }));
            assert!(err.starts_with("timeout_ms: invalid "), "{bad}: {err}");
        }
        assert_eq!(
            base(json!({"timeout_ms": "100"})),
            r#"timeout_ms: invalid type: string "100", expected a nonzero u32"#
        );
        assert!(base(json!({"timeout": 5})).starts_with("timeout: unknown field `timeout`"));
        assert_eq!(
            error(json!("https://x")),
            "the config must be an object (a table in sluice.toml), got a string",
            "the whole config has no field path"
        );
    }
}
