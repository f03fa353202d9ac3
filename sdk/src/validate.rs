//! Checks for config fields that many destinations share: an endpoint URL and extra headers.
//!
//! Contract: every error is a [`ConfigError`] naming the field (`url`, `headers.X-Env`), since
//! the operator sees it verbatim. The checks catch the obvious mistakes when the destination
//! is configured, rather than at its first delivery; the host parses URLs for real (WHATWG
//! rules) when a request is sent, and derives a templated allowlist from them.

use std::collections::BTreeMap;

use crate::config::ConfigError;

/// Headers the host's HTTP client owns: a config setting them would break request framing.
pub const HOST_HEADERS: [&str; 3] = ["content-length", "host", "transfer-encoding"];

/// `url`, trimmed, if it is an absolute `http://` or `https://` URL with a host; `field`
/// names it in errors (`field: why, got "…"`).
///
/// Accepted, and returned as written (only surrounding whitespace is removed):
/// - the scheme in any case (`HTTPS://`, as RFC 3986 allows; the host normalises it);
/// - a port (`:8080`, 1 to 65535), a path, and a query (`?token=…`: many webhook
///   endpoints carry their key there; the host masks it wherever it prints the URL);
/// - IP literals (`http://10.0.0.5`, `http://[::1]:8080`): whether they may be reached is
///   the host's network policy's decision, made when connecting;
/// - user info (`user:password@`), masked by the host like the query, but not turned into an
///   `Authorization` header: put credentials in a header instead.
///
/// Rejected: another scheme or none (`api.example.com`), whitespace or control characters
/// anywhere, no host (`https://`, `https://:80/x`), a port that is not a number from 1 to 65535,
/// and a fragment (`#…`): a fragment is never sent in an HTTP request, so one in an endpoint
/// is a mistake (often an unescaped `#` meant for the query).
///
/// ```
/// use sluice_sdk::validate::http_url;
///
/// assert_eq!(http_url("url", " https://api.example.com/v1 ").unwrap(), "https://api.example.com/v1");
/// assert!(http_url("url", "HTTP://hooks.example.com/in?key=k").is_ok());
/// let err = http_url("endpoint", "api.example.com").unwrap_err();
/// assert_eq!(err.to_string(), r#"endpoint: must start with http:// or https://, got "api.example.com""#);
/// let err = http_url("url", "https://example.com/hook#token").unwrap_err();
/// assert_eq!(err.path, "url");
/// ```
pub fn http_url(field: &str, url: &str) -> Result<String, ConfigError> {
    let url = url.trim();
    let invalid = |why: &str| ConfigError::field(field, format!("{why}, got {url:?}"));
    let rest = strip_prefix_ignore_case(url, "https://")
        .or_else(|| strip_prefix_ignore_case(url, "http://"))
        .ok_or_else(|| invalid("must start with http:// or https://"))?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("must not contain whitespace or control characters"));
    }
    if url.contains('#') {
        return Err(invalid(
            "must not have a fragment (`#…`, never sent to the server; write `%23` for a `#` \
             in the query or path)",
        ));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let bad_port = || invalid("has a port that is not a number from 1 to 65535");
    // `[v6 address]:port` or `name:port`; the port is optional.
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (address, after) = v6
                .split_once(']')
                .ok_or_else(|| invalid("has an unclosed `[` in its host"))?;
            match after {
                "" => (address, None),
                _ => (address, Some(after.strip_prefix(':').ok_or_else(bad_port)?)),
            }
        }
        None => match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Err(invalid("has no host"));
    }
    if let Some(port) = port
        && !(port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0))
    {
        return Err(bad_port());
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
        for good in [
            "HTTP://localhost:8080",
            "https://api.example.com",
            "https://api.example.com:443/v1/events",
            "https://hooks.example.com/in?key=k&x=%23",
            "https://user:pw@hooks.example.com/in",
            "http://10.0.0.5/hook",
            "http://[::1]:8080/hook",
            "http://[::1]",
        ] {
            assert_eq!(http_url("url", good), Ok(good.to_owned()), "{good}");
        }
        assert_eq!(
            http_url("url", "\thttps://x/\n"),
            Ok("https://x/".into()),
            "trimmed"
        );
        for (bad, why) in [
            ("ftp://x", "must start with http:// or https://"),
            ("x.com", "must start with http:// or https://"),
            ("", "must start with http:// or https://"),
            ("https://", "has no host"),
            ("https://:80/x", "has no host"),
            ("https://user@/x", "has no host"),
            ("https://a b", "must not contain whitespace"),
            ("https://x/\u{7f}", "must not contain whitespace"),
            ("https://x/hook#frag", "must not have a fragment"),
            ("https://x/hook?token=a#b", "must not have a fragment"),
            ("https://x#", "must not have a fragment"),
            ("https://x:http/", "has a port that is not a number"),
            ("https://x:/", "has a port that is not a number"),
            ("https://x:65536/", "has a port that is not a number"),
            ("https://x:-1/", "has a port that is not a number"),
            ("https://x:0/", "has a port that is not a number"),
            ("http://[::1]x/", "has a port that is not a number"),
            ("http://[::1/", "has an unclosed `[`"),
        ] {
            let err = http_url("url", bad).expect_err(bad);
            assert_eq!(err.path, "url", "{bad}");
            assert!(err.message.starts_with(why), "{bad}: {err}");
            assert!(
                err.message.ends_with(&format!("got {bad:?}")),
                "{bad}: {err}"
            );
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
