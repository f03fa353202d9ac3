//! What a benchmark run stands on: one PostgreSQL (embedded, or `DATABASE_URL`), a fresh
//! database per scenario, the plugins built once, and `sluice serve` processes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::plugin_build::{self, BuildOptions};
use anyhow::{Context, bail};
use serde_json::Value;
use sluice_store::embedded_pg::EmbeddedPostgres;

/// The server every scenario uses.
pub struct BenchPg {
    embedded: Option<EmbeddedPostgres>,
    /// URL of the `postgres` database (peers run there; scenarios get their own).
    pub admin_url: String,
    next_db: usize,
    /// The databases of the scenario that runs, dropped when it ends.
    scenario_dbs: Vec<String>,
}

impl BenchPg {
    pub async fn start(dir: &Path) -> anyhow::Result<BenchPg> {
        if let Ok(url) = std::env::var("DATABASE_URL")
            && !url.is_empty()
        {
            return Ok(BenchPg {
                embedded: None,
                admin_url: url,
                next_db: 0,
                scenario_dbs: Vec::new(),
            });
        }
        let pg = EmbeddedPostgres::start(dir)
            .await
            .context("starting the embedded PostgreSQL")?;
        Ok(BenchPg {
            admin_url: pg.url().to_string(),
            embedded: Some(pg),
            next_db: 0,
            scenario_dbs: Vec::new(),
        })
    }

    /// The embedded cluster's postmaster pid, for CPU accounting.
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.embedded.as_ref()?.postmaster_pid()
    }

    /// A new empty database; its URL.
    pub async fn fresh_db(&mut self, label: &str) -> anyhow::Result<String> {
        anyhow::ensure!(
            label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "a database label is lowercase letters, digits and _: {label:?}"
        );
        self.next_db += 1;
        let name = format!("bench_{}_{label}", self.next_db);
        let admin = sqlx::PgPool::connect(&self.admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}"
        )))
        .execute(&admin)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await?;
        admin.close().await;
        let url = with_db(&self.admin_url, &name);
        self.scenario_dbs.push(name);
        Ok(url)
    }

    /// Drops the databases of the scenario that ended. Left behind, an earlier scenario's
    /// tables (the 10M backlog's, say) get autovacuumed under a later scenario's figures, and
    /// the idle rows count the whole cluster's CPU.
    pub async fn drop_scenario_dbs(&mut self) -> anyhow::Result<()> {
        let admin = sqlx::PgPool::connect(&self.admin_url).await?;
        for name in self.scenario_dbs.drain(..) {
            // FORCE: a pool the scenario dropped may still be closing its connections.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&admin)
            .await
            .with_context(|| format!("dropping the bench database {name}"))?;
        }
        admin.close().await;
        Ok(())
    }

    pub async fn stop(self) {
        if let Some(pg) = self.embedded
            && let Err(e) = pg.stop().await
        {
            eprintln!("stopping the embedded PostgreSQL failed: {e}");
        }
    }
}

/// `url` with its database replaced by `db`.
fn with_db(url: &str, db: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_path(&format!("/{db}"));
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// Builds the plugins the scenarios use (devnull, webhook) into `dir`.
pub async fn build_plugins(dir: &Path) -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in ["plugins/devnull", "plugins/webhook"] {
        plugin_build::build(&BuildOptions {
            crate_dir: root.join(krate),
            out_dir: dir.to_path_buf(),
            target_dir: Some(root.join("target/bench-guests")),
            debug: false,
        })
        .await
        .with_context(|| format!("building {krate}"))?;
    }
    Ok(())
}

/// Where the hosts' logs are kept, and what they log beyond the default (`--host-logs`,
/// `--host-log-filter`): the statements behind a figure, for instance, with
/// `sqlx::query=debug` (each statement with its time).
#[derive(Debug, Clone, Default)]
pub struct HostLogs {
    pub dir: Option<PathBuf>,
    pub filter: Option<String>,
}

/// The run's host logs: its [`HostLogs`] and the numbering of the logs it keeps (a scenario
/// may start several hosts in one directory). One per run, shared by every host it starts.
pub struct RunLogs {
    settings: HostLogs,
    kept: std::sync::atomic::AtomicUsize,
}

impl RunLogs {
    /// Creates the log directory, if logs are kept.
    pub fn new(settings: HostLogs) -> anyhow::Result<Arc<RunLogs>> {
        if let Some(dir) = &settings.dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the host log directory {}", dir.display()))?;
        }
        Ok(Arc::new(RunLogs {
            settings,
            kept: Default::default(),
        }))
    }

    /// The hosts' `RUST_LOG`: the scenarios read their info lines (addresses, lanes taken).
    fn rust_log(&self) -> String {
        match self.settings.filter.as_deref() {
            Some(extra) => format!("warn,sluice=info,{extra}"),
            None => "warn,sluice=info".into(),
        }
    }

    /// Keeps the log of the host `name`, if logs are kept.
    fn keep(&self, name: &str, text: impl FnOnce() -> String) {
        let Some(dir) = &self.settings.dir else {
            return;
        };
        let n = self.kept.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("{n:02}-{name}.log"));
        if let Err(e) = std::fs::write(&path, text() + "\n") {
            eprintln!("bench: cannot keep the host log {}: {e}", path.display());
        }
    }
}

/// Where a host runs (its config file) and the run's logs: one per scenario host, from
/// `Bench::host_dir`.
pub struct HostDir {
    pub path: PathBuf,
    pub logs: Arc<RunLogs>,
}

/// A `sluice serve` process.
pub struct Host {
    child: Option<Child>,
    /// Named for its scenario's directory: the file its log is kept in, if logs are kept.
    name: String,
    logs: Arc<RunLogs>,
    log: Arc<Mutex<Vec<Value>>>,
    pub addr: String,
    /// When it logged that it listens (plugins loaded; its lanes may have been delivering for
    /// a while already).
    pub ready: Instant,
}

/// One secrets key for every host this run starts.
fn bench_secrets_key() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(sluice_store::sealer::Sealer::new_key_text)
}

impl Host {
    /// Starts `sluice serve` with `config` (written to `dir/sluice.toml`) on `database_url`,
    /// and waits until it listens.
    pub fn start(host_dir: &HostDir, config: &str, database_url: &str) -> anyhow::Result<Host> {
        let mut host = Host::spawn(host_dir, config, database_url)?;
        host.wait_ready()?;
        Ok(host)
    }

    /// Starts `sluice serve` without waiting for it: its lanes start delivering before it
    /// listens (see [`Host::wait_ready`]).
    pub fn spawn(host_dir: &HostDir, config: &str, database_url: &str) -> anyhow::Result<Host> {
        let dir = &host_dir.path;
        std::fs::create_dir_all(dir)?;
        let config_path = dir.join("sluice.toml");
        std::fs::write(&config_path, config)?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&config_path)
            .env("DATABASE_URL", database_url)
            // The hosts of one database share its secrets key.
            .env(crate::secrets_key::KEY_ENV, bench_secrets_key())
            .env("RUST_LOG", host_dir.logs.rust_log())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting sluice serve")?;
        let stderr = child.stderr.take().context("stderr")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if let Ok(mut l) = sink.lock() {
                    l.push(v);
                }
            }
        });
        let name = dir
            .file_name()
            .map_or_else(|| "host".into(), |n| n.to_string_lossy().into_owned());
        Ok(Host {
            child: Some(child),
            name,
            logs: host_dir.logs.clone(),
            log,
            addr: String::new(),
            ready: Instant::now(),
        })
    }

    /// Waits until the host logs the address it listens on (blocking: it polls the log).
    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(addr) = self.find(|l| l["fields"]["addr"].as_str().map(str::to_string)) {
                self.addr = addr;
                self.ready = Instant::now();
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!("sluice serve exited ({status}):\n{}", self.log_text());
            }
            if Instant::now() > deadline {
                bail!("sluice serve did not start:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many log lines have this message.
    pub fn count_log(&self, message: &str) -> usize {
        self.log
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|v| v["fields"]["message"] == message)
                    .count()
            })
            .unwrap_or(0)
    }

    /// The timestamp of the first log line matching `pred`.
    pub fn log_time(&self, pred: impl Fn(&Value) -> bool) -> Option<time::OffsetDateTime> {
        self.find(|l| {
            pred(l)
                .then(|| l["timestamp"].as_str())
                .flatten()
                .and_then(|t| {
                    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
        })
    }

    /// Whether the process is still running; the last log lines when it is not.
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        let tail: Vec<String> = self
            .log
            .lock()
            .map(|l| l.iter().rev().take(3).map(Value::to_string).collect())
            .unwrap_or_default();
        Some(format!(
            "exited ({status}); last log lines: {}",
            tail.join(" | ")
        ))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn find<T>(&self, f: impl Fn(&Value) -> Option<T>) -> Option<T> {
        self.log.lock().ok()?.iter().find_map(f)
    }

    fn log_text(&self) -> String {
        self.log
            .lock()
            .map(|l| {
                l.iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }

    /// The admin API's address, when the config has an `[admin]` listener.
    pub fn admin_addr(&self) -> Option<String> {
        self.find(|l| l["fields"]["admin_addr"].as_str().map(str::to_string))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM, and wait for the process to finish.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
        self.logs.keep(&self.name, || self.log_text());
    }
}

/// Config text: one workspace `bench`, `sources` sources each feeding every destination.
pub struct ConfigBuilder {
    pub plugins_dir: PathBuf,
    pub server_extra: String,
    pub sources: Vec<String>,
    /// (id, plugin, config TOML inline table, extra destination lines)
    pub destinations: Vec<(String, String, String, String)>,
    /// Explicit routes (source, write key, destinations); when empty, every source feeds every
    /// destination.
    pub routes: Vec<(String, String, Vec<String>)>,
}

impl ConfigBuilder {
    pub fn new(plugins_dir: &Path) -> ConfigBuilder {
        ConfigBuilder {
            plugins_dir: plugins_dir.to_path_buf(),
            server_extra: String::new(),
            sources: vec!["web".into()],
            destinations: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// A source with its own write key feeding only `destinations`.
    pub fn route(
        mut self,
        source: &str,
        write_key: &str,
        destinations: &[String],
    ) -> ConfigBuilder {
        self.routes
            .push((source.into(), write_key.into(), destinations.to_vec()));
        self
    }

    pub fn destination(mut self, id: &str, plugin: &str, config: &str) -> ConfigBuilder {
        self.destinations
            .push((id.into(), plugin.into(), config.into(), String::new()));
        self
    }

    pub fn text(&self) -> String {
        // One compiled-plugin cache for every host of the run: hosts start in milliseconds.
        let cache = self.plugins_dir.with_file_name("plugin-cache");
        let mut t = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nplugins_dir = \"{}\"\nplugin_cache_dir = \"{}\"\ndata_dir = \"data\"\nallowed_private_networks = [\"127.0.0.0/8\"]\n{}\n",
            self.plugins_dir.display(),
            cache.display(),
            self.server_extra
        );
        let dests: Vec<String> = self
            .destinations
            .iter()
            .map(|d| format!("\"{}\"", d.0))
            .collect();
        if self.routes.is_empty() {
            for (i, s) in self.sources.iter().enumerate() {
                t.push_str(&format!(
                    "[[source]]\nid = \"{s}\"\nworkspace = \"bench\"\nwrite_key = \"wk_{i}\"\ndestinations = [{}]\n\n",
                    dests.join(", ")
                ));
            }
        }
        for (s, key, to) in &self.routes {
            let to: Vec<String> = to.iter().map(|d| format!("\"{d}\"")).collect();
            t.push_str(&format!(
                "[[source]]\nid = \"{s}\"\nworkspace = \"bench\"\nwrite_key = \"{key}\"\ndestinations = [{}]\n\n",
                to.join(", ")
            ));
        }
        for (id, plugin, config, extra) in &self.destinations {
            t.push_str(&format!(
                "[[destination]]\nid = \"{id}\"\nworkspace = \"bench\"\nplugin = \"{plugin}\"\nconfig = {config}\nretry = {{ min_backoff = \"1s\", max_backoff = \"5s\" }}\n{extra}\n"
            ));
        }
        t
    }
}

/// The first delivery a draining host recorded, seen by polling its lanes' cursors from the
/// moment it was spawned. A host's lanes start before it logs that it listens: a clock
/// started at that line counted the lanes' head start as free (in a 100k drain with the
/// statement log on, 2026-12-04T14:28Z, the first log read ended 0.49 s before the line and
/// the drain took 1.08 s; without the log, the lanes' first 8,000 jobs are recorded about
/// 0.06 s after it), and the host's CPU before it was not counted.
pub struct FirstDelivery {
    pub at: Instant,
    /// Jobs delivered by then (the lanes' cursors moved past them).
    pub jobs: i64,
    /// The CPU used so far by the host, PostgreSQL and the machine.
    pub cpu: super::cpu_split::CpuMark,
}

/// The sum of the live lanes' cursors: on a fresh log of one workspace (ids from 1) with no
/// failures, the jobs its lanes have delivered.
pub async fn cursor_sum(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(cursor), 0)::bigint FROM lanes WHERE retired_at IS NULL",
    )
    .fetch_one(pool)
    .await?)
}

/// Polls until the lanes' cursors move past `baseline` (see [`FirstDelivery`]).
pub async fn first_delivery(
    database_url: String,
    baseline: i64,
    host: u32,
    postmaster: Option<u32>,
) -> anyhow::Result<FirstDelivery> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&database_url)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let sum = cursor_sum(&pool).await?;
        if sum > baseline {
            let first = FirstDelivery {
                at: Instant::now(),
                jobs: sum - baseline,
                cpu: super::cpu_split::CpuMark::now(Some(host), postmaster),
            };
            pool.close().await;
            return Ok(first);
        }
        if Instant::now() > deadline {
            bail!("no delivery within 300 s of the host's start");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until every lane of `database_url` has delivered everything (cursor at the head,
/// no unfinished rows); returns when that happened.
pub async fn wait_drained(database_url: &str, timeout: Duration) -> anyhow::Result<Instant> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await?;
    let deadline = Instant::now() + timeout;
    loop {
        let (behind, open): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM lanes l
                     JOIN workspace_heads h ON h.workspace_id = l.workspace_id
                     WHERE l.retired_at IS NULL AND l.cursor < h.last_id),
                    (SELECT count(*) FROM job_state WHERE state IN ('pending', 'failed'))",
        )
        .fetch_one(&pool)
        .await?;
        if behind == 0 && open == 0 {
            let at = Instant::now();
            pool.close().await;
            return Ok(at);
        }
        if Instant::now() > deadline {
            bail!("not drained after {timeout:?} ({behind} lanes behind, {open} open jobs)");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
