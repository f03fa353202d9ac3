//! `sluice jobs|destinations|sources|apply|plugins|stats`: the admin API from a terminal or a
//! script.
//!
//! The URL and token come from `--url`/`--token` or `SLUICE_ADMIN_URL`/`SLUICE_ADMIN_TOKEN`.
//! Output is a table, or the API's JSON with `--json`. Exit codes: see [`EXIT_CODES`].

mod catalog;
mod client;
mod render;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use client::{CliError, Client};

/// Shown in every admin command's `--help`.
pub const EXIT_CODES: &str = "Exit status: 0 success; 1 failure (unreachable, not found, \
server error); 2 usage error (bad arguments, or the API refused the request as invalid); \
77 authentication or permission refused (no token, wrong token, read-only token on a change).";

/// Where the admin API is and how to call it.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// The admin API's base URL.
    #[arg(
        long,
        env = "SLUICE_ADMIN_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    url: String,
    /// A bearer token from `[[admin.tokens]]`.
    #[arg(
        long,
        env = "SLUICE_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// The admin commands, flattened into `sluice`'s own.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// List, show, retry, abort and replay jobs (admin API).
    #[command(after_help = EXIT_CODES)]
    Jobs {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Destinations: create, show, update, delete; lanes: depth, rates, breaker, lease;
    /// blocked keys; pause and resume (admin API).
    #[command(after_help = EXIT_CODES)]
    Destinations {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: DestinationsCommand,
    },
    /// Sources: list, create, show, update, delete, rotate their write keys (admin API).
    #[command(after_help = EXIT_CODES)]
    Sources {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: catalog::SourcesCommand,
    },
    /// Make the catalog of the workspaces a file names match its `[[source]]` and
    /// `[[destination]]` tables: create what is missing, update what changed, delete what the
    /// file does not name (admin API).
    #[command(after_help = EXIT_CODES)]
    Apply {
        #[command(flatten)]
        conn: Conn,
        /// A TOML file with `[[source]]` and `[[destination]]` tables (as in sluice.toml).
        file: std::path::PathBuf,
        /// Print the changes and make none.
        #[arg(long)]
        dry_run: bool,
    },
    /// Plugins each host runs, and each destination's plugin errors (admin API).
    #[command(after_help = EXIT_CODES)]
    Plugins {
        #[command(flatten)]
        conn: Conn,
    },
    /// One lane's outcomes per minute (admin API).
    #[command(after_help = EXIT_CODES)]
    Stats {
        #[command(flatten)]
        conn: Conn,
        workspace: String,
        destination: String,
        /// How many minutes back (1-1440).
        #[arg(long, default_value_t = 60)]
        minutes: u32,
    },
}

/// Narrows jobs (list) or chooses them (actions).
#[derive(Args, Debug, Clone, Default)]
pub struct JobFilterArgs {
    #[arg(long)]
    source: Option<String>,
    /// The user key: userId, else anonymousId.
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    error_code: Option<String>,
    /// A substring of the last error, taken literally.
    #[arg(long)]
    error: Option<String>,
    /// Received at or after (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Received before (RFC 3339).
    #[arg(long)]
    until: Option<String>,
}

impl JobFilterArgs {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("source", &self.source),
            ("user", &self.user),
            ("error_code", &self.error_code),
            ("error", &self.error),
            ("since", &self.since),
            ("until", &self.until),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

/// Which jobs of a lane an action takes.
#[derive(Args, Debug, Clone)]
pub struct ActionArgs {
    workspace: String,
    destination: String,
    /// Event ids (repeat the flag for several).
    #[arg(long = "id")]
    ids: Vec<i64>,
    /// Every job of the lane the action applies to.
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    #[command(flatten)]
    filter: JobFilterArgs,
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// List jobs, oldest first; filters combine.
    List {
        #[arg(long)]
        workspace: Option<String>,
        #[arg(long)]
        destination: Option<String>,
        /// pending, executing, failed, delivered or aborted.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        filter: JobFilterArgs,
        /// Jobs per page (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Start after this cursor (printed below the previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One job: its state, every attempt with its error, and the event.
    Show {
        workspace: String,
        destination: String,
        event_id: i64,
    },
    /// Retry failed jobs now (with the jobs parked behind them); no ids or filter: all.
    Retry(ActionArgs),
    /// Abort failed jobs and the jobs parked behind them.
    Abort(ActionArgs),
    /// Replay aborted jobs.
    Replay(ActionArgs),
}

#[derive(Subcommand, Debug)]
pub enum DestinationsCommand {
    /// Every lane: depth, oldest age, rate, failure rate, limit, breaker, lease, plugin.
    List,
    /// A new destination; its plugin must accept the config.
    Create(catalog::CreateDestination),
    /// A destination's plugin, config (secrets as ***), settings and sources.
    Show { workspace: String, id: String },
    /// Change a destination's plugin, config or settings; calls in flight finish on the old.
    Update {
        workspace: String,
        id: String,
        #[command(flatten)]
        flags: catalog::DestinationFlags,
    },
    /// Delete a destination: its lane stops and its unfinished jobs are aborted; with
    /// `--drain`, it first delivers what its sources accepted until now, then goes.
    Delete {
        workspace: String,
        id: String,
        /// Take no new events, deliver the unfinished jobs, then delete it.
        #[arg(long)]
        drain: bool,
    },
    /// A lane's blocked keys, each with the job that blocks it.
    Blocked {
        workspace: String,
        destination: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Stop delivering to a lane (ingest goes on).
    Pause {
        workspace: String,
        destination: String,
    },
    /// Deliver again.
    Resume {
        workspace: String,
        destination: String,
    },
}

/// Runs an admin command; returns the process exit code.
pub async fn run(command: AdminCommand) -> i32 {
    match execute(command).await {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

pub(crate) fn seg(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

pub(crate) fn pretty(v: &Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default())
}

async fn execute(command: AdminCommand) -> Result<String, CliError> {
    match command {
        AdminCommand::Jobs { conn, command } => {
            let c = Client::new(&conn.url, conn.token.clone())?;
            jobs(&c, conn.json, command).await
        }
        AdminCommand::Destinations { conn, command } => {
            let c = Client::new(&conn.url, conn.token.clone())?;
            destinations(&c, conn.json, command).await
        }
        AdminCommand::Sources { conn, command } => {
            let c = Client::new(&conn.url, conn.token.clone())?;
            catalog::sources(&c, conn.json, command).await
        }
        AdminCommand::Apply {
            conn,
            file,
            dry_run,
        } => {
            let c = Client::new(&conn.url, conn.token.clone())?;
            catalog::apply(&c, conn.json, file, dry_run).await
        }
        AdminCommand::Plugins { conn } => {
            let c = Client::new(&conn.url, conn.token.clone())?;
            let v = c.get("/api/v1/plugins", &[]).await?;
            if conn.json {
                return Ok(pretty(&v));
            }
            let empty = Vec::new();
            let hosts = v["hosts"].as_array().unwrap_or(&empty);
            let lanes = v["destinations"].as_array().unwrap_or(&empty);
            Ok(format!(
                "{}\n{}\n",
                render::table(
                    hosts,
                    &[
                        ("PLUGIN", "plugin"),
                        ("VERSION", "version"),
                        ("SHA256", "sha256"),
                        ("HOST", "host"),
                        ("PID", "pid"),
                        ("LOADED", "loaded_at")
                    ],
                ),
                render::table(
                    lanes,
                    &[
                        ("WORKSPACE", "workspace"),
                        ("DESTINATION", "destination"),
                        ("PLUGIN", "plugin"),
                        ("ERROR", "error")
                    ],
                )
            ))
        }
        AdminCommand::Stats {
            conn,
            workspace,
            destination,
            minutes,
        } => {
            let c = Client::new(&conn.url, conn.token.clone())?;
            let path = format!(
                "/api/v1/destinations/{}/{}/stats",
                seg(&workspace),
                seg(&destination)
            );
            let v = c.get(&path, &[("minutes", minutes.to_string())]).await?;
            if conn.json {
                return Ok(pretty(&v));
            }
            let empty = Vec::new();
            Ok(format!(
                "{}\n",
                render::table(
                    v["minutes"].as_array().unwrap_or(&empty),
                    &[
                        ("MINUTE", "minute"),
                        ("DELIVERED", "delivered"),
                        ("FAILED", "failed"),
                        ("ABORTED", "aborted"),
                        ("THROTTLED", "throttled"),
                        ("FILTERED", "filtered"),
                        ("LIMIT", "concurrency_limit"),
                        ("BREAKER", "breaker_open")
                    ],
                )
            ))
        }
    }
}

async fn jobs(c: &Client, json: bool, command: JobsCommand) -> Result<String, CliError> {
    match command {
        JobsCommand::List {
            workspace,
            destination,
            state,
            filter,
            limit,
            cursor,
        } => {
            let mut q = filter.pairs();
            for (k, v) in [
                ("workspace", workspace),
                ("destination", destination),
                ("state", state),
                ("cursor", cursor),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            q.push(("limit", limit.to_string()));
            let v = c.get("/api/v1/jobs", &q).await?;
            if json {
                return Ok(pretty(&v));
            }
            let empty = Vec::new();
            let mut out = render::table(
                v["jobs"].as_array().unwrap_or(&empty),
                &[
                    ("EVENT", "event_id"),
                    ("WORKSPACE", "workspace"),
                    ("DESTINATION", "destination"),
                    ("STATE", "state"),
                    ("ATTEMPT", "attempt"),
                    ("USER", "user"),
                    ("CODE", "error_code"),
                    ("ERROR", "error"),
                    ("RECEIVED", "received_at"),
                ],
            );
            out.push('\n');
            if let Some(next) = v["next_cursor"].as_str() {
                out.push_str(&format!("more: --cursor {next}\n"));
            }
            Ok(out)
        }
        JobsCommand::Show {
            workspace,
            destination,
            event_id,
        } => {
            let path = format!(
                "/api/v1/jobs/{}/{}/{event_id}",
                seg(&workspace),
                seg(&destination)
            );
            let v = c.get(&path, &[]).await?;
            if json {
                return Ok(pretty(&v));
            }
            let empty = Vec::new();
            Ok(format!(
                "{}\nattempts:\n{}\nerror_text:\n{}\n\nevent:\n{}",
                render::fields(
                    &v,
                    &[
                        "workspace",
                        "destination",
                        "event_id",
                        "source",
                        "user",
                        "message_id",
                        "state",
                        "attempt",
                        "error_code",
                        "received_at",
                        "first_attempt_at",
                        "last_attempt_at",
                        "next_attempt_at"
                    ],
                ),
                render::table(
                    v["attempts"].as_array().unwrap_or(&empty),
                    &[
                        ("ATTEMPT", "attempt"),
                        ("AT", "at"),
                        ("OUTCOME", "outcome"),
                        ("CODE", "error_code"),
                        ("ERROR", "error_text")
                    ],
                ),
                v["error_text"].as_str().unwrap_or(""),
                pretty(&v["event"])
            ))
        }
        JobsCommand::Retry(a) => action(c, json, "retry", a).await,
        JobsCommand::Abort(a) => action(c, json, "abort", a).await,
        JobsCommand::Replay(a) => action(c, json, "replay", a).await,
    }
}

async fn action(c: &Client, json: bool, what: &str, a: ActionArgs) -> Result<String, CliError> {
    let filter: serde_json::Map<String, Value> = a
        .filter
        .pairs()
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v)))
        .collect();
    let mut body = json!({ "workspace": a.workspace, "destination": a.destination });
    if !a.ids.is_empty() {
        if !filter.is_empty() {
            return Err(CliError::Usage(
                "give --id or filter flags, not both".into(),
            ));
        }
        body["event_ids"] = json!(a.ids);
    } else if !filter.is_empty() {
        if a.all {
            return Err(CliError::Usage(
                "give --all or filter flags, not both".into(),
            ));
        }
        body["filter"] = Value::Object(filter);
    } else if a.all {
        body["all"] = json!(true);
    }
    let v = c.post(&format!("/api/v1/jobs/{what}"), &body).await?;
    if json {
        return Ok(pretty(&v));
    }
    Ok(format!("{what}: {} jobs\n", v["jobs"]))
}

async fn destinations(
    c: &Client,
    json: bool,
    command: DestinationsCommand,
) -> Result<String, CliError> {
    let lane_path = |ws: &str, dest: &str, what: &str| {
        format!("/api/v1/destinations/{}/{}/{what}", seg(ws), seg(dest))
    };
    let empty = Vec::new();
    match command {
        DestinationsCommand::Create(args) => catalog::create_destination(c, json, args).await,
        DestinationsCommand::Show { workspace, id } => {
            catalog::show_destination(c, json, workspace, id).await
        }
        DestinationsCommand::Update {
            workspace,
            id,
            flags,
        } => catalog::update_destination(c, json, workspace, id, flags).await,
        DestinationsCommand::Delete {
            workspace,
            id,
            drain,
        } => catalog::delete_destination(c, json, workspace, id, drain).await,
        DestinationsCommand::List => {
            let v = c.get("/api/v1/destinations", &[]).await?;
            if json {
                return Ok(pretty(&v));
            }
            Ok(format!(
                "{}\n",
                render::table(
                    v["destinations"].as_array().unwrap_or(&empty),
                    &[
                        ("WORKSPACE", "workspace"),
                        ("DESTINATION", "destination"),
                        ("PENDING", "pending"),
                        ("FAILED", "failed"),
                        ("OLDEST S", "oldest_age_seconds"),
                        ("RATE/MIN", "rate_per_minute"),
                        ("FAIL RATE", "failure_rate"),
                        ("LIMIT", "concurrency_limit"),
                        ("BREAKER", "breaker_open"),
                        ("OWNER", "owner_host"),
                        ("PAUSED", "paused"),
                        ("PLUGIN", "plugin"),
                        ("PLUGIN ERROR", "plugin_error")
                    ],
                )
            ))
        }
        DestinationsCommand::Blocked {
            workspace,
            destination,
            limit,
        } => {
            let v = c
                .get(
                    &lane_path(&workspace, &destination, "blocked"),
                    &[("limit", limit.to_string())],
                )
                .await?;
            if json {
                return Ok(pretty(&v));
            }
            Ok(format!(
                "{}\n",
                render::table(
                    v["keys"].as_array().unwrap_or(&empty),
                    &[
                        ("KEY", "order_key"),
                        ("WAITING", "waiting"),
                        ("DUE", "next_attempt_at"),
                        ("HEAD", "head_event_id"),
                        ("STATE", "head_state"),
                        ("ATTEMPT", "head_attempt"),
                        ("CODE", "head_error_code"),
                        ("ERROR", "head_error")
                    ],
                )
            ))
        }
        DestinationsCommand::Pause {
            workspace,
            destination,
        } => {
            let v = c
                .post(&lane_path(&workspace, &destination, "pause"), &json!({}))
                .await?;
            Ok(if json {
                pretty(&v)
            } else {
                format!("{workspace}/{destination} paused\n")
            })
        }
        DestinationsCommand::Resume {
            workspace,
            destination,
        } => {
            let v = c
                .post(&lane_path(&workspace, &destination, "resume"), &json!({}))
                .await?;
            Ok(if json {
                pretty(&v)
            } else {
                format!("{workspace}/{destination} resumed\n")
            })
        }
    }
}
