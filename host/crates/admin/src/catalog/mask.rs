//! Secrets in destination configs: masked on the way out, kept on the way back in.

use serde_json::Value;

use crate::redact::{REDACTED, redact_url, redact_value};
use sluice_runtime::redact::redact_config;

/// The config as the API shows it: the declared secret paths and every value whose key looks
/// secret are `***` (`None`: the plugin is not loaded, so every value is masked).
pub fn masked(config: &Value, secret_paths: Option<&[String]>) -> Value {
    match secret_paths {
        Some(paths) => redact_value(&redact_config(config, paths)),
        None => mask_all(config),
    }
}

fn mask_all(config: &Value) -> Value {
    match config {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), mask_all(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(mask_all).collect()),
        Value::Null => Value::Null,
        _ => Value::String(REDACTED.into()),
    }
}

/// `new` with every `***` replaced by the stored value at the same place: a client that read a
/// config (secrets masked) and sends it back changed does not erase the secrets it never saw.
/// A `***` with no stored value at its place stays as sent (the plugin will refuse it, or take
/// it literally).
pub fn keep_secrets(new: &Value, old: &Value) -> Value {
    match (new, old) {
        (Value::String(s), old) if s == REDACTED && !old.is_null() => old.clone(),
        // A URL shown with its password or secret query values masked, sent back as shown.
        (Value::String(s), Value::String(o)) if s.contains(REDACTED) && *s == redact_url(o) => {
            old.clone()
        }
        (Value::Object(n), Value::Object(o)) => Value::Object(
            n.iter()
                .map(|(k, v)| {
                    let kept = match o.get(k) {
                        Some(old) => keep_secrets(v, old),
                        None => v.clone(),
                    };
                    (k.clone(), kept)
                })
                .collect(),
        ),
        (Value::Array(n), Value::Array(o)) => Value::Array(
            n.iter()
                .enumerate()
                .map(|(i, v)| match o.get(i) {
                    Some(old) => keep_secrets(v, old),
                    None => v.clone(),
                })
                .collect(),
        ),
        _ => new.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn declared_and_secret_looking_values_are_masked() {
        let config = json!({"url": "https://x", "api_key": "k1", "headers": {"X-Sig": "s"}});
        let shown = masked(&config, Some(&["headers.X-Sig".to_string()]));
        assert_eq!(
            shown,
            json!({"url": "https://x", "api_key": "***", "headers": {"X-Sig": "***"}})
        );
        assert_eq!(masked(&config, None)["url"], "***");
    }

    #[test]
    fn a_masked_value_sent_back_keeps_the_stored_one() {
        let old = json!({"url": "https://a", "api_key": "k1", "h": {"a": "s"},
                         "hook": "https://u:pw@h.example/x?token=t1"});
        let shown = masked(&old, Some(&["h.a".to_string()]));
        assert_eq!(shown["hook"], "https://u:***@h.example/x?token=***");
        let mut new = shown.clone();
        new["url"] = json!("https://b");
        new["x"] = json!("***");
        assert_eq!(
            keep_secrets(&new, &old),
            json!({"url": "https://b", "api_key": "k1", "h": {"a": "s"}, "x": "***",
                   "hook": "https://u:pw@h.example/x?token=t1"})
        );
    }
}
