//! The `sluice` command line.

mod admin_cli;
mod bench;
mod catalog_check;
mod demo;
mod plugin_build;
mod plugin_call;
mod plugin_new;
mod secrets_key;
mod server;
mod sink;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use sluice_config::Config;

// Delivery allocates small buffers on many threads at a high rate (events, requests, plugin
// payloads); glibc's allocator spent a fifth of the host's time on it, mimalloc a fraction.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use plugin_build::BuildOptions;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Event delivery with a PostgreSQL job store and WebAssembly destinations"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: ingest API, job store and delivery.
    Serve {
        /// Config file.
        #[arg(long, short, default_value = "sluice.toml", env = "SLUICE_CONFIG")]
        config: PathBuf,
        /// Override `server.listen` (e.g. 127.0.0.1:0 for any free port).
        #[arg(long, env = "SLUICE_LISTEN")]
        listen: Option<SocketAddr>,
    },
    /// Build the webhook plugin, start a local sink and run Sluice with a demo source.
    Demo {
        /// Where the demo keeps its config, plugins and embedded database.
        #[arg(long, default_value = "var/demo")]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo sink receives webhooks.
        #[arg(long, default_value = "127.0.0.1:9000")]
        sink: SocketAddr,
        /// Where the admin API and the operator page listen.
        #[arg(long, default_value = "127.0.0.1:8081")]
        admin: SocketAddr,
    },
    /// Receive webhooks, verify their Standard Webhooks signatures and print them.
    ///
    /// A delivery is accepted (200) when one of its `v1` signatures matches the secret and its
    /// `webhook-timestamp` is within 5 minutes of now; otherwise it is answered 401. Give the
    /// secret with --secret-file PATH or SLUICE_SINK_SECRET; --secret also works, but other
    /// users of the machine can read it in `ps`. --secret-file wins over the others.
    #[command(group(
        clap::ArgGroup::new("secret_source")
            .required(true)
            .multiple(true)
            .args(["secret", "secret_file"])
    ))]
    Sink {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// The destination's webhook secret (`whsec_<base64>` or plain text).
        #[arg(long, env = "SLUICE_SINK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Read the secret from this file (surrounding whitespace is ignored).
        #[arg(long, value_name = "PATH")]
        secret_file: Option<PathBuf>,
    },
    /// Create, build and check plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Measure Sluice against its peers on this machine and print a table of ratios.
    Bench {
        /// The peer scripts (copy-limit.sh, naive-queue.sh); default ../shared/peers.
        #[arg(long)]
        peers: Option<PathBuf>,
        /// Smaller sizes, for a quick look.
        #[arg(long)]
        quick: bool,
        /// Also drain a 10M-event backlog (the fill alone takes minutes).
        #[arg(long)]
        ten_million: bool,
        /// Run only these scenarios.
        #[arg(long = "scenario", value_parser = bench::SCENARIOS)]
        only: Vec<String>,
        /// Write the run's table into the `<!-- sluice-bench:begin -->` blocks of this file
        /// (repeatable; e.g. README.md, docs/scaling.md).
        #[arg(long, value_name = "FILE")]
        update: Vec<PathBuf>,
        /// Keep each host's log (JSON lines) in DIR, one file per host, named for its
        /// scenario.
        #[arg(long, value_name = "DIR")]
        host_logs: Option<PathBuf>,
        /// More for the hosts to log, as a RUST_LOG directive added to the default
        /// (`warn,sluice=info`); e.g. `sqlx::query=debug` logs every statement with its time.
        #[arg(long, value_name = "FILTER", requires = "host_logs")]
        host_log_filter: Option<String>,
    },
    /// `jobs`, `destinations`, `plugins`, `stats`: the admin API from the command line.
    #[command(flatten)]
    Admin(Box<admin_cli::AdminCommand>),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a new plugin crate (anywhere on disk) with a passing unit test.
    New {
        /// The plugin's name: lowercase letters, digits and `-`, e.g. `my-dest`.
        name: String,
        /// The directory to create (default: ./NAME); it must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Build against this local sluice-sdk crate (a [patch.crates-io] override); default:
        /// the SDK of the checkout this binary was built from, when it exists.
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Compile a plugin crate to wasm32-wasip2 and write NAME.wasm + NAME.toml into --out.
    Build {
        crate_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Cargo target directory.
        #[arg(long)]
        target_dir: Option<PathBuf>,
        /// Use the dev profile.
        #[arg(long)]
        debug: bool,
    },
    /// Load a plugin the way `serve` does and print its manifest.
    Check { wasm: PathBuf },
    /// Run a plugin's transform (and optionally send) on one event, under the sandbox.
    Call {
        wasm: PathBuf,
        /// The destination config, as JSON.
        #[arg(long, default_value = "{}")]
        config: String,
        /// The event, as JSON.
        #[arg(long)]
        event: String,
        /// Also call `send` with the payloads (makes real HTTP requests).
        #[arg(long)]
        send: bool,
        /// Call transform this many times and report the mean time per call.
        #[arg(long, default_value_t = 1)]
        repeat: u32,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let command = match cli.command {
        Command::Admin(admin) => {
            let code = rt.block_on(admin_cli::run(*admin));
            drop(rt);
            std::process::exit(code);
        }
        other => other,
    };
    rt.block_on(async move {
        match command {
            Command::Serve { config, listen } => {
                let mut config = Config::load(&config)?;
                if let Some(listen) = listen {
                    config.server.listen = listen;
                }
                crate::server::run(config, None, shutdown_on_signal()).await
            }
            Command::Demo {
                dir,
                listen,
                sink,
                admin,
            } => {
                let at = demo::Addresses {
                    listen,
                    sink,
                    admin,
                };
                demo::run(&dir, at, shutdown_on_signal()).await
            }
            Command::Sink {
                listen,
                secret,
                secret_file,
            } => {
                let secret = match (secret, secret_file) {
                    (_, Some(path)) => std::fs::read_to_string(&path)
                        .with_context(|| format!("reading the sink secret {}", path.display()))?
                        .trim()
                        .to_owned(),
                    (Some(secret), None) => secret,
                    (None, None) => anyhow::bail!(
                        "give the secret with --secret-file, SLUICE_SINK_SECRET or --secret"
                    ),
                };
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("binding {listen}"))?;
                // The bound address, so that `--listen 127.0.0.1:0` tells where it went.
                println!("sink listening on http://{}", listener.local_addr()?);
                crate::sink::serve(listener, secret, shutdown_on_signal()).await
            }
            Command::Plugin(PluginCommand::New {
                name,
                dir,
                sdk_path,
            }) => {
                let created = crate::plugin_new::create(&crate::plugin_new::NewOptions {
                    name: name.clone(),
                    dir,
                    sdk_path,
                })?;
                let dir = created.dir.display();
                println!("created plugin `{name}` in {dir}:");
                for file in &created.files {
                    println!("  {}", file.display());
                }
                match &created.sdk_path {
                    Some(sdk) => println!("sluice-sdk: {} (see [patch.crates-io])", sdk.display()),
                    None => println!(
                        "sluice-sdk: {} from crates.io",
                        crate::plugin_new::SDK_VERSION
                    ),
                }
                println!("next: cd {dir} && cargo test && sluice plugin build . --out plugins");
                Ok(())
            }
            Command::Plugin(PluginCommand::Build {
                crate_dir,
                out,
                target_dir,
                debug,
            }) => {
                let built = plugin_build::build(&BuildOptions {
                    crate_dir,
                    out_dir: out,
                    target_dir,
                    debug,
                })
                .await?;
                println!(
                    "built plugin `{}`: {} ({} bytes) and {}",
                    built.name,
                    built.wasm.display(),
                    built.bytes,
                    built.manifest.display()
                );
                Ok(())
            }
            Command::Plugin(PluginCommand::Call {
                wasm,
                config,
                event,
                send,
                repeat,
            }) => {
                let report = crate::plugin_call::call(&wasm, &config, &event, repeat, send).await?;
                for (i, p) in report.payloads.iter().enumerate() {
                    println!("payload[{i}]: {p}");
                }
                if let Some(outcomes) = report.outcomes {
                    for (i, o) in outcomes.iter().enumerate() {
                        println!("outcome[{i}]: {o}");
                    }
                }
                println!(
                    "transform: {} call(s), mean {:.2} µs per call",
                    report.transform_calls,
                    report.transform_mean.as_secs_f64() * 1e6
                );
                if let Some(t) = report.send_time {
                    println!("send: {:.2} ms", t.as_secs_f64() * 1e3);
                }
                println!(
                    "peak memory: {} KiB (linear memory of the plugin instance)",
                    report.peak_memory / 1024
                );
                Ok(())
            }
            Command::Bench {
                peers,
                quick,
                ten_million,
                only,
                update,
                host_logs,
                host_log_filter,
            } => {
                let command = bench_command(quick, ten_million, &only);
                bench::run(bench::Options {
                    peers,
                    quick,
                    ten_million,
                    only,
                    update,
                    command,
                    host_logs: bench::HostLogs {
                        dir: host_logs,
                        filter: host_log_filter,
                    },
                })
                .await
            }
            Command::Admin(_) => unreachable!("handled above"),
            Command::Plugin(PluginCommand::Check { wasm }) => {
                let manifest = plugin_build::check(&wasm).await?;
                println!(
                    "{}: ok\n{}",
                    wasm.display(),
                    toml::to_string_pretty(&manifest)?
                );
                Ok(())
            }
        }
    })
}

fn init_tracing(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A log that cannot be written (stderr piped into `head`, a closed terminal) must not take
    // the server down: tracing's own complaint about it would go to that same stderr, and
    // std's eprintln! panics when it cannot write.
    // Colour only for a person at a terminal: a file or a pipe gets plain text (NO_COLOR too).
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .log_internal_errors(false);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A token cancelled by SIGINT or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}

/// `sluice bench` with the options that shape its figures, as the documents show it.
fn bench_command(quick: bool, ten_million: bool, only: &[String]) -> String {
    let mut command = String::from("sluice bench");
    if quick {
        command.push_str(" --quick");
    }
    if ten_million {
        command.push_str(" --ten-million");
    }
    for scenario in only {
        command.push_str(" --scenario ");
        command.push_str(scenario);
    }
    command
}
