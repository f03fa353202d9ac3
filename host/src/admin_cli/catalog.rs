//! `sluice sources …`, `sluice destinations create|show|update|delete` and `sluice apply`:
//! the catalog through the admin API (docs/catalog.md).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{CliError, Client};
use super::{pretty, render, seg};

#[derive(Subcommand, Debug)]
pub enum SourcesCommand {
    /// Every source: workspace, enabled, links, key hints.
    List,
    /// One source.
    Show { workspace: String, id: String },
    /// A new source; its write key is printed once (unless given with --write-key).
    Create {
        workspace: String,
        id: String,
        /// A destination of the workspace to send its events to (repeat for several).
        #[arg(long = "destination")]
        destinations: Vec<String>,
        /// Use this key instead of a made one (8-256 characters).
        #[arg(long, env = "SLUICE_WRITE_KEY", hide_env_values = true)]
        write_key: Option<String>,
        /// Create it disabled (its key gets 401 until enabled).
        #[arg(long)]
        disabled: bool,
        /// A browser origin that may send with its key (`https://shop.example`,
        /// `*.example.com` or `*`); repeat for several. None: browsers are refused.
        #[arg(long = "allowed-origin")]
        allowed_origins: Vec<String>,
    },
    /// Change its links or whether it is enabled.
    Update {
        workspace: String,
        id: String,
        /// The destinations its new events go to, replacing the current ones (repeat the
        /// flag; `--destination ''` for none).
        #[arg(long = "destination")]
        destinations: Option<Vec<String>>,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
        /// The browser origins allowed, replacing the current ones (repeat the flag;
        /// `--allowed-origin ''` for none).
        #[arg(long = "allowed-origin")]
        allowed_origins: Option<Vec<String>>,
    },
    /// Delete it: its keys get 401 at once; what it accepted is still delivered.
    Delete { workspace: String, id: String },
    /// A new write key; the others stop working after the grace period.
    RotateKey {
        workspace: String,
        id: String,
        #[arg(long, env = "SLUICE_WRITE_KEY", hide_env_values = true)]
        write_key: Option<String>,
        /// How long the old keys keep working (e.g. 24h, 30m, 0s).
        #[arg(long, default_value = "24h")]
        grace: String,
        /// Keep the old keys with no end (add a key).
        #[arg(long)]
        keep_others: bool,
    },
}

/// A destination's fields as flags (create and update).
#[derive(Args, Debug, Default)]
pub struct DestinationFlags {
    /// The plugin (a `<name>.wasm` in the plugins directory).
    #[arg(long)]
    plugin: Option<String>,
    /// The plugin's config as JSON.
    #[arg(long, conflicts_with = "config_file")]
    config: Option<String>,
    /// The plugin's config from a JSON file.
    #[arg(long)]
    config_file: Option<PathBuf>,
    /// Set one config field: `key=value` (dotted keys for nested fields; the value is JSON
    /// when it parses as JSON, else text). Repeat for several.
    #[arg(long = "set")]
    set: Vec<String>,
    #[arg(long)]
    max_concurrency: Option<usize>,
    /// Events per second at most.
    #[arg(long)]
    rate_limit: Option<f64>,
    /// Which events go to it, as JSON: `{"deny_types": ["identify"], "deny_events": ["X"]}`
    /// (also `allow_types`, `allow_events`); `{}` removes the filter.
    #[arg(long)]
    filter: Option<String>,
}

impl DestinationFlags {
    /// Applies the flags to a destination body.
    fn apply(self, body: &mut Value) -> Result<(), CliError> {
        if let Some(p) = self.plugin {
            body["plugin"] = json!(p);
        }
        let config = match (self.config, self.config_file) {
            (Some(text), _) => Some(text),
            (None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?,
            ),
            (None, None) => None,
        };
        if let Some(text) = config {
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| CliError::Usage(format!("--config: not JSON: {e}")))?;
            body["config"] = v;
        }
        for pair in self.set {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| CliError::Usage(format!("--set {pair}: expected key=value")))?;
            let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
            let mut node = &mut body["config"];
            for part in key.split('.') {
                if !node.is_object() {
                    *node = json!({});
                }
                node = &mut node[part];
            }
            *node = value;
        }
        if let Some(n) = self.max_concurrency {
            body["max_concurrency"] = json!(n);
        }
        if let Some(r) = self.rate_limit {
            body["rate_limit"] = json!(r);
        }
        if let Some(text) = self.filter {
            body["filter"] = serde_json::from_str(&text)
                .map_err(|e| CliError::Usage(format!("--filter: not JSON: {e}")))?;
        }
        Ok(())
    }
}

fn item_path(kind: &str, workspace: &str, id: &str) -> String {
    format!("/api/v1/catalog/{kind}/{}/{}", seg(workspace), seg(id))
}

fn written(json: bool, v: &Value, what: &str) -> String {
    if json {
        return pretty(v);
    }
    match v["version"].as_i64() {
        Some(version) => format!("{what} (catalog version {version})\n"),
        None => format!("{what}: nothing changed\n"),
    }
}

pub async fn sources(c: &Client, json: bool, command: SourcesCommand) -> Result<String, CliError> {
    match command {
        SourcesCommand::List => {
            let v = c.get("/api/v1/catalog", &[]).await?;
            if json {
                return Ok(pretty(&v["sources"]));
            }
            let empty = Vec::new();
            let rows: Vec<Value> = v["sources"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|s| {
                    json!({
                        "workspace": s["workspace"], "id": s["id"], "enabled": s["enabled"],
                        "destinations": s["destinations"],
                        "keys": s["keys"].as_array().map(|k| k.iter().map(|k| k["hint"].clone()).collect::<Vec<_>>()),
                    })
                })
                .collect();
            Ok(format!(
                "{}\n",
                render::table(
                    &rows,
                    &[
                        ("WORKSPACE", "workspace"),
                        ("SOURCE", "id"),
                        ("ENABLED", "enabled"),
                        ("DESTINATIONS", "destinations"),
                        ("KEYS", "keys")
                    ]
                )
            ))
        }
        SourcesCommand::Show { workspace, id } => {
            let v = c.get(&item_path("sources", &workspace, &id), &[]).await?;
            Ok(pretty(if json { &v } else { &v["source"] }))
        }
        SourcesCommand::Create {
            workspace,
            id,
            destinations,
            write_key,
            disabled,
            allowed_origins,
        } => {
            let mut body = json!({
                "workspace": workspace, "id": id, "destinations": destinations,
                "enabled": !disabled, "allowed_origins": allowed_origins,
            });
            if let Some(k) = write_key {
                body["write_key"] = json!(k);
            }
            let v = c.post("/api/v1/catalog/sources", &body).await?;
            let mut out = written(json, &v, &format!("source {workspace}/{id} created"));
            if !json && let Some(key) = v["write_key"].as_str() {
                out.push_str(&format!("write key (shown once): {key}\n"));
            }
            Ok(out)
        }
        SourcesCommand::Update {
            workspace,
            id,
            destinations,
            enable,
            disable,
            allowed_origins,
        } => {
            let mut body = json!({});
            if let Some(list) = destinations {
                let list: Vec<String> = list.into_iter().filter(|d| !d.is_empty()).collect();
                body["destinations"] = json!(list);
            }
            if let Some(list) = allowed_origins {
                let list: Vec<String> = list.into_iter().filter(|o| !o.is_empty()).collect();
                body["allowed_origins"] = json!(list);
            }
            if enable || disable {
                body["enabled"] = json!(enable);
            }
            let v = c.put(&item_path("sources", &workspace, &id), &body).await?;
            Ok(written(
                json,
                &v,
                &format!("source {workspace}/{id} updated"),
            ))
        }
        SourcesCommand::Delete { workspace, id } => {
            let v = c.delete(&item_path("sources", &workspace, &id)).await?;
            Ok(written(
                json,
                &v,
                &format!("source {workspace}/{id} deleted"),
            ))
        }
        SourcesCommand::RotateKey {
            workspace,
            id,
            write_key,
            grace,
            keep_others,
        } => {
            let mut body = json!({ "grace": grace, "keep_others": keep_others });
            if let Some(k) = write_key {
                body["write_key"] = json!(k);
            }
            let path = format!("{}/keys", item_path("sources", &workspace, &id));
            let v = c.post(&path, &body).await?;
            if json {
                return Ok(pretty(&v));
            }
            let mut out = written(false, &v, &format!("new write key for {workspace}/{id}"));
            if let Some(key) = v["write_key"].as_str() {
                out.push_str(&format!("write key (shown once): {key}\n"));
            }
            match v["others_expire_at"].as_str() {
                Some(at) => out.push_str(&format!("the other keys stop working at {at}\n")),
                None => out.push_str("the other keys keep working\n"),
            }
            Ok(out)
        }
    }
}

/// `sluice destinations create`.
#[derive(Args, Debug)]
pub struct CreateDestination {
    workspace: String,
    id: String,
    #[command(flatten)]
    flags: DestinationFlags,
    /// `now` (default), `earliest` (every retained event of its sources first), or an
    /// RFC 3339 time.
    #[arg(long)]
    start: Option<String>,
    /// A source of the workspace to link (repeat for several).
    #[arg(long = "source")]
    sources: Vec<String>,
    /// `user` (default), `source_user` or `none`.
    #[arg(long)]
    ordering: Option<String>,
}

pub async fn create_destination(
    c: &Client,
    json: bool,
    args: CreateDestination,
) -> Result<String, CliError> {
    let CreateDestination {
        workspace,
        id,
        flags,
        start,
        sources,
        ordering,
    } = args;
    if flags.plugin.is_none() {
        return Err(CliError::Usage("--plugin is required".into()));
    }
    let mut body = json!({ "workspace": workspace, "id": id, "config": {}, "sources": sources });
    flags.apply(&mut body)?;
    if let Some(s) = start {
        body["start"] = json!(s);
    }
    if let Some(o) = ordering {
        body["ordering"] = json!(o);
    }
    let v = c.post("/api/v1/catalog/destinations", &body).await?;
    Ok(written(
        json,
        &v,
        &format!("destination {workspace}/{id} created"),
    ))
}

/// `sluice destinations update`: reads the destination, changes what the flags say, writes it
/// back (secrets come back as `***`, which the server keeps as they are).
pub async fn update_destination(
    c: &Client,
    json: bool,
    workspace: String,
    id: String,
    flags: DestinationFlags,
) -> Result<String, CliError> {
    let path = item_path("destinations", &workspace, &id);
    let current = c.get(&path, &[]).await?;
    let d = &current["destination"];
    let mut body = json!({
        "plugin": d["plugin"], "config": d["config"], "retry": d["retry"],
        "ordering": d["ordering"], "max_concurrency": d["max_concurrency"],
        "rate_limit": d["rate_limit"],
        "allowed_private_networks": d["allowed_private_networks"],
        "filter": d["filter"],
    });
    flags.apply(&mut body)?;
    let v = c.put(&path, &body).await?;
    Ok(written(
        json,
        &v,
        &format!("destination {workspace}/{id} updated"),
    ))
}

pub async fn show_destination(
    c: &Client,
    json: bool,
    workspace: String,
    id: String,
) -> Result<String, CliError> {
    let v = c
        .get(&item_path("destinations", &workspace, &id), &[])
        .await?;
    Ok(pretty(if json { &v } else { &v["destination"] }))
}

pub async fn delete_destination(
    c: &Client,
    json: bool,
    workspace: String,
    id: String,
    drain: bool,
) -> Result<String, CliError> {
    let path = item_path("destinations", &workspace, &id);
    if drain {
        let v = c.delete(&format!("{path}?drain=true")).await?;
        return Ok(written(
            json,
            &v,
            &format!(
                "destination {workspace}/{id} draining: it takes no new events and is deleted \
                 once it has delivered what it had"
            ),
        ));
    }
    let v = c.delete(&path).await?;
    Ok(written(
        json,
        &v,
        &format!("destination {workspace}/{id} deleted; its unfinished jobs were aborted"),
    ))
}

/// `sluice apply FILE`: the file's tables become the catalog of the workspaces they name.
pub async fn apply(
    c: &Client,
    json: bool,
    file: PathBuf,
    dry_run: bool,
) -> Result<String, CliError> {
    let config = sluice_config::Config::load(&file).map_err(|e| CliError::Usage(e.to_string()))?;
    if config.sources.is_empty() && config.destinations.is_empty() {
        return Err(CliError::Usage(format!(
            "{}: no [[source]] or [[destination]] tables",
            file.display()
        )));
    }
    let body = json!({
        "sources": config.sources,
        "destinations": config.destinations,
        "dry_run": dry_run,
    });
    let v = c.post("/api/v1/catalog/apply", &body).await?;
    if json {
        return Ok(pretty(&v));
    }
    let empty = Vec::new();
    let changes = v["changes"].as_array().unwrap_or(&empty);
    if changes.is_empty() {
        return Ok("no changes\n".into());
    }
    let mut out = String::new();
    for ch in changes {
        let sign = match ch["action"].as_str() {
            Some("create") => "+",
            Some("delete") => "-",
            _ => "~",
        };
        out.push_str(&format!(
            "{sign} {} {}/{}",
            ch["kind"].as_str().unwrap_or_default(),
            ch["workspace"].as_str().unwrap_or_default(),
            ch["id"].as_str().unwrap_or_default()
        ));
        if let Some(fields) = ch["fields"].as_array() {
            let names: Vec<&str> = fields.iter().filter_map(Value::as_str).collect();
            out.push_str(&format!(" ({})", names.join(", ")));
        }
        if ch["action"] == "rotate_key" {
            out.push_str(" new write key; the old one works for 24h");
        }
        out.push('\n');
    }
    out.push_str(&match (dry_run, v["version"].as_i64()) {
        (true, _) => format!("dry run: {} changes, nothing written\n", changes.len()),
        (false, Some(version)) => format!("applied: catalog version {version}\n"),
        (false, None) => "nothing written\n".into(),
    });
    Ok(out)
}
