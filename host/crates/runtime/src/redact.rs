//! Keeping secrets out of logs, error texts and CLI output.
//!
//! Two kinds of secret:
//! - config values a manifest marks secret (`secrets = ["api_key", "headers.Authorization"]`):
//!   the plugin's `configure` gets them unchanged, but any text the plugin hands back (failure
//!   messages, log lines, trap output) has every occurrence replaced by `***` before the host
//!   stores or prints it ([`Scrubber`]); an admin API shows configs through [`redact_config`];
//! - credentials in URLs (`https://user:pass@host/…?token=…`): the user info, query string and
//!   fragment of every URL in such texts are replaced by `***` ([`redact_urls`]), since
//!   webhook URLs routinely carry tokens.

use std::borrow::Cow;

use serde_json::Value;

/// What a redacted value or URL part is replaced by.
pub const MASK: &str = "***";

/// Secret values shorter than this are not scrubbed from free text: replacing every `ab` in a
/// message would make it unreadable, and a value that short protects nothing anyway.
const MIN_SCRUBBED_LEN: usize = 4;

pub use sluice_core::catalog::redact_config;

/// The text values of `config` at the secret paths (every string leaf below a path that names
/// an object or array; numbers too, as written).
fn secret_values(config: &Value, secrets: &[String]) -> Vec<String> {
    fn leaves(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
            Value::Object(map) => map.values().for_each(|v| leaves(v, out)),
            Value::Null | Value::Bool(_) => {}
        }
    }
    let mut out = Vec::new();
    for path in secrets {
        let mut node = Some(config);
        for part in path.split('.') {
            node = node.and_then(|n| n.get(part));
        }
        if let Some(value) = node {
            leaves(value, &mut out);
        }
    }
    out
}

/// Scrubs the secret values of one destination's config, and URL credentials, from text the
/// plugin produced.
#[derive(Debug, Clone, Default)]
pub struct Scrubber {
    /// Longest first, so that a secret containing another is masked whole.
    values: Vec<String>,
}

impl Scrubber {
    /// The scrubber for a destination's config under a manifest's `secrets`.
    pub fn new(config: &Value, secrets: &[String]) -> Scrubber {
        let mut values: Vec<String> = secret_values(config, secrets)
            .into_iter()
            .filter(|v| v.len() >= MIN_SCRUBBED_LEN)
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Scrubber { values }
    }

    /// The same, from the config's JSON text (unparseable text has no secrets to find).
    pub fn from_json(config_json: &str, secrets: &[String]) -> Scrubber {
        match serde_json::from_str::<Value>(config_json) {
            Ok(config) => Scrubber::new(&config, secrets),
            Err(_) => Scrubber::default(),
        }
    }

    /// `text` with every secret value and every URL's credentials masked.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = Cow::Borrowed(text);
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = Cow::Owned(out.replace(value.as_str(), MASK));
            }
        }
        redact_urls(&out).into_owned()
    }

    /// [`Scrubber::scrub`] in place.
    pub fn scrub_in_place(&self, text: &mut String) {
        let scrubbed = self.scrub(text);
        if scrubbed != *text {
            *text = scrubbed;
        }
    }
}

/// `text` with the user info, query string and fragment of every `http(s)://` URL in it
/// replaced by `***`: `https://u:p@h/x?token=t` becomes `https://***@h/x?***`.
///
/// Works on the text, not on a parsed URL, so that nothing that fails to parse slips through:
/// a URL runs until whitespace, a quote, `<`, `>` or a backtick.
pub fn redact_urls(text: &str) -> Cow<'_, str> {
    let lower = text.to_ascii_lowercase();
    let starts: Vec<usize> = lower
        .match_indices("http://")
        .chain(lower.match_indices("https://"))
        .map(|(i, _)| i)
        .collect();
    if starts.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut starts = starts;
    starts.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for start in starts {
        if start < copied {
            continue; // inside a URL already handled (`http://x/?next=https://…`)
        }
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .map_or(text.len(), |n| start + n);
        out.push_str(&text[copied..start]);
        out.push_str(&redact_url(&text[start..end]));
        copied = end;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// One URL with its user info, query string and fragment masked.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str(MASK);
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    match tail.find(['?', '#']) {
        Some(q) => {
            out.push_str(&tail[..q]);
            out.push_str(&tail[q..=q]);
            out.push_str(MASK);
        }
        None => out.push_str(tail),
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn paths(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn redact_config_masks_the_secret_paths_only() {
        let config = json!({
            "url": "https://x.example/in",
            "api_key": "k-123456",
            "headers": {"Authorization": "Bearer abc", "X-Other": "keep"},
            "nested": {"list": ["a", "b"]},
        });
        let secrets = paths(&["api_key", "headers.Authorization", "nested", "absent.path"]);
        let redacted = redact_config(&config, &secrets);
        assert_eq!(
            redacted,
            json!({
                "url": "https://x.example/in",
                "api_key": "***",
                "headers": {"Authorization": "***", "X-Other": "keep"},
                "nested": "***",
            })
        );
        assert_eq!(config["api_key"], "k-123456", "the original is untouched");
    }

    #[test]
    fn the_scrubber_masks_every_occurrence_of_every_secret_value() {
        let config = json!({"secret": "S3CRET-value", "headers": {"Authorization": "Bearer tok-42"}, "pin": 12345, "short": "ab"});
        let scrubber = Scrubber::new(
            &config,
            &paths(&["secret", "headers.Authorization", "pin", "short"]),
        );
        assert_eq!(
            scrubber
                .scrub("bad S3CRET-value (S3CRET-value) with Bearer tok-42 and 12345; ab stays"),
            "bad *** (***) with *** and ***; ab stays"
        );
        assert_eq!(
            Scrubber::from_json("not json", &paths(&["secret"])).scrub("S3CRET"),
            "S3CRET"
        );
    }

    #[test]
    fn urls_lose_user_info_query_and_fragment() {
        assert_eq!(
            redact_url("https://user:pw@hooks.example/in?token=URLTOKEN&x=1"),
            "https://***@hooks.example/in?***"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:9/hook#frag"),
            "http://127.0.0.1:9/hook#***"
        );
        assert_eq!(redact_url("http://h?t=1"), "http://h?***");
        assert_eq!(redact_url("http://h/plain"), "http://h/plain");
        assert_eq!(
            redact_urls(
                "error sending request for url (HTTP://127.0.0.1:9/hook?token=URLTOKEN): refused; see \"https://a@b/c\""
            ),
            "error sending request for url (HTTP://127.0.0.1:9/hook?*** refused; see \"https://***@b/c\""
        );
        assert!(matches!(redact_urls("no urls here"), Cow::Borrowed(_)));
        let nested = redact_urls("http://x/?next=https://y/?token=T");
        assert!(!nested.contains("token=T"), "{nested}");
    }
}
