//! Checks for config fields that many destinations share: an endpoint URL and extra headers.
//!
//! Contract: every error is a [`ConfigError`] naming the field (`url`, `headers.X-Env`), since
//! the operator sees it verbatim. The checks catch the obvious mistakes early; the host parses
//! URLs for real (and derives a templated allowlist from them).

use std::collections::BTreeMap;

use crate::config::ConfigError;

/// Headers the host's HTTP client owns: a config setting them would break request framing.
pub const HOST_HEADERS: [&str; 3] = ["content-length", "host", "transfer-encoding"];

/// `url`, trimmed, if it is an absolute http(s) URL with a host; `field` names it in errors.
///
/// ```
/// use sluice_sdk::validate::http_url;
///
/// assert_eq!(http_url("url", " https://api.example.com/v1 ").unwrap(), "https://api.example.com/v1");
/// let err = http_url("endpoint", "api.example.com").unwrap_err();
/// assert_eq!(err.to_string(), r#"endpoint: must start with http:// or https://, got "api.example.com""#);
/// ```
pub fn http_url(field: &str, url: &str) -> Result<String, ConfigError> {
    let url = url.trim();
    let invalid = |why: &str| ConfigError::field(field, format!("{why}, got {url:?}"));
    let rest = strip_prefix_ignore_case(url, "https://")
        .or_else(|| strip_prefix_ignore_case(url, "http://"))
        .ok_or_else(|| invalid("must start with http:// or https://"))?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("must not contain whitespace"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    if host_port.is_empty() || host_port.starts_with(':') {
        return Err(invalid("has no host"));
    }
    Ok(url.to_owned())
}

/// The extra headers of config field `field`, checked: valid names, none of `reserved`
/// (compared case-insensitively; include [`HOST_HEADERS`]), no control characters in values.
/// Returned in name order.
pub fn headers(
    field: &str,
    headers: Option<BTreeMap<String, String>>,
    reserved: &[&str],
) -> Result<Vec<(String, String)>, ConfigError> {
    headers
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| {
            let path = format!("{field}.{name}");
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(ConfigError::field(path, "not a valid header name"));
            }
            if reserved.iter().any(|r| r.eq_ignore_ascii_case(&name)) {
                return Err(ConfigError::field(
                    path,
                    "set by the plugin or the host, not configurable",
                ));
            }
            if value.chars().any(|c| c.is_control() && c != '\t') {
                return Err(ConfigError::field(
                    path,
                    "value must not contain control characters",
                ));
            }
            Ok((name, value))
        })
        .collect()
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

    #[test]
    fn urls() {
        assert_eq!(
            http_url("url", "HTTP://localhost:8080"),
            Ok("HTTP://localhost:8080".into())
        );
        for bad in [
            "ftp://x",
            "x.com",
            "https://",
            "https://:80/x",
            "https://a b",
            "",
        ] {
            let err = http_url("url", bad).expect_err(bad);
            assert_eq!(err.path, "url", "{bad}");
        }
    }

    #[test]
    fn header_checks() {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        let ok = headers(
            "headers",
            map(&[("X-B", "2"), ("Authorization", "t")]),
            &HOST_HEADERS,
        );
        let names: Vec<String> = ok.expect("valid").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Authorization", "X-B"]);
        assert_eq!(headers("headers", None, &HOST_HEADERS), Ok(Vec::new()));
        let err = |pairs: &[(&str, &str)]| {
            headers("h", map(pairs), &["x-mine", "host"])
                .expect_err("invalid")
                .to_string()
        };
        assert_eq!(
            err(&[("bad name", "v")]),
            "h.bad name: not a valid header name"
        );
        assert_eq!(
            err(&[("X-Mine", "v")]),
            "h.X-Mine: set by the plugin or the host, not configurable"
        );
        assert_eq!(
            err(&[("X", "a\r\nInjected: 1")]),
            "h.X: value must not contain control characters"
        );
    }
}
