//! Secret fields given by reference (docs/catalog.md, "Secrets"): at a path the manifest
//! declares secret, a config may hold `{ env = "AMPLITUDE_KEY" }` or
//! `{ file = "/run/secrets/amplitude" }` instead of the value. The host that configures the
//! plugin puts the value in its place, read from its own environment or file system, so the
//! value is in no file and no table; each host reads it when it (re)configures the
//! destination. Only declared secret paths are looked at: elsewhere such an object is plain
//! config.

use std::path::PathBuf;

use serde_json::Value;

/// Why a referenced secret could not be read; names the field and the reference.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SecretRefError {
    #[error("config.{field}: environment variable {var} is not set on this host")]
    MissingEnv { field: String, var: String },
    #[error("config.{field}: cannot read {path}: {error}")]
    File {
        field: String,
        path: PathBuf,
        error: String,
    },
}

impl SecretRefError {
    /// The config field (dotted) whose reference failed.
    pub fn field(&self) -> &str {
        match self {
            SecretRefError::MissingEnv { field, .. } | SecretRefError::File { field, .. } => field,
        }
    }

    /// What went wrong, without the field.
    pub fn reason(&self) -> String {
        match self {
            SecretRefError::MissingEnv { var, .. } => {
                format!("environment variable {var} is not set on this host")
            }
            SecretRefError::File { path, error, .. } => {
                format!("cannot read {}: {error}", path.display())
            }
        }
    }
}

/// `config` with every reference at a `secrets` path replaced by what it names. A file's
/// trailing newline is dropped (`echo key > file` writes one).
pub fn resolve(config: &Value, secrets: &[String]) -> Result<Value, SecretRefError> {
    let mut out = config.clone();
    for path in secrets {
        let mut node = Some(&mut out);
        for part in path.split('.') {
            node = node.and_then(|n| n.get_mut(part));
        }
        let Some(value) = node else { continue };
        if let Some(resolved) = referenced(value, path)? {
            *value = Value::String(resolved);
        }
    }
    Ok(out)
}

/// The value a reference names, or `None` when `value` is not a reference.
fn referenced(value: &Value, field: &str) -> Result<Option<String>, SecretRefError> {
    let Value::Object(map) = value else {
        return Ok(None);
    };
    if map.len() != 1 {
        return Ok(None);
    }
    match (map.get("env"), map.get("file")) {
        (Some(Value::String(var)), None) => {
            std::env::var(var)
                .map(Some)
                .map_err(|_| SecretRefError::MissingEnv {
                    field: field.into(),
                    var: var.clone(),
                })
        }
        (None, Some(Value::String(path))) => std::fs::read_to_string(path)
            .map(|text| Some(text.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|e| SecretRefError::File {
                field: field.into(),
                path: path.into(),
                error: e.to_string(),
            }),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn references_at_secret_paths_are_replaced_and_others_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-a-file\n").unwrap();
        // A name no environment sets.
        let var = "SLUICE_TEST_SECRET_REF_7f3a";
        let config = json!({
            "api_key": {"env": var},
            "headers": {"Authorization": {"file": file.display().to_string()}},
            "other": {"env": var},
        });
        let secrets = vec!["api_key".to_string(), "headers.Authorization".to_string()];
        let err = resolve(&config, &secrets).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("config.api_key: environment variable {var} is not set on this host")
        );
        // Setting a variable in a threaded test process is unsound; PATH is always set.
        let config = json!({
            "api_key": {"env": "PATH"},
            "headers": {"Authorization": {"file": file.display().to_string()}},
            "other": {"env": "PATH"},
        });
        let resolved = resolve(&config, &secrets).unwrap();
        assert_eq!(resolved["api_key"], std::env::var("PATH").unwrap());
        assert_eq!(resolved["headers"]["Authorization"], "from-a-file");
        assert_eq!(
            resolved["other"],
            json!({"env": "PATH"}),
            "not a secret path"
        );
        let missing = json!({"api_key": {"file": "/nonexistent/secret"}});
        assert!(matches!(
            resolve(&missing, &secrets),
            Err(SecretRefError::File { .. })
        ));
    }
}
