//! The key destination configs are sealed with (docs/catalog.md, "Secrets"): from
//! `SLUICE_SECRETS_KEY`, else `[server] secrets_key_file`, else `secrets.key` in the data
//! directory, made on first start so that the demo and a single host need no setup. Hosts that
//! share a database must share the key: a host with another key fails at start, naming the
//! destination it cannot open.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use sluice_config::ServerConfig;
use sluice_store::sealer::{Sealer, read_key_file};

pub const KEY_ENV: &str = "SLUICE_SECRETS_KEY";

pub fn sealer(server: &ServerConfig) -> anyhow::Result<Arc<Sealer>> {
    let (text, from) = match (std::env::var(KEY_ENV), &server.secrets_key_file) {
        (Ok(text), _) if !text.trim().is_empty() => (text, KEY_ENV.to_string()),
        (_, Some(path)) => (read_key_file(path)?, path.display().to_string()),
        (_, None) => {
            let path = server.data_dir.join("secrets.key");
            (own_key(&path)?, path.display().to_string())
        }
    };
    let sealer = Sealer::new(&text, &from, &server.secrets_old_key_files)?;
    tracing::info!(key = %sealer.current_id(), from = %from, "secrets key");
    Ok(Arc::new(sealer))
}

/// The data directory's key, made (readable by this user only) when there is none.
fn own_key(path: &Path) -> anyhow::Result<String> {
    if path.exists() {
        return Ok(read_key_file(path)?);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = Sealer::new_key_text();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating the secrets key {}", path.display()))?;
    writeln!(file, "{text}").with_context(|| format!("writing {}", path.display()))?;
    tracing::warn!(path = %path.display(), "made a new secrets key; every host sharing this database needs the same key (secrets_key_file or SLUICE_SECRETS_KEY)");
    Ok(text)
}
