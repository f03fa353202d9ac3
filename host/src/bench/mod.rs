//! `sluice bench`: measures Sluice against its peers on this machine, in one run, on one
//! PostgreSQL, and prints one table of ratios.
//!
//! Every Sluice figure is put next to what a peer or a physical limit does in the same run:
//! - **ingest** vs raw COPY of the same events (`copy-limit.sh`), in three pairs (COPY, then
//!   Sluice) whose ratios' median is the figure;
//! - **four workspaces ingesting at once** with four ingest writers vs one (per-workspace
//!   ingest locks);
//! - **browser** traffic: 1,000 clients sending the two browser SDKs' single events and small
//!   batches with CORS, a connection per request, vs batch ingest on the same host; p50/p99;
//! - **stalled uploads**: 200 and 400 uploads of 3,999,000 of 4,000,000 bytes that stall, vs
//!   `ingest_memory` (256 MiB) plus its documented overhead in the host's RSS;
//! - **no-op delivery** (the `devnull` plugin) of a 100k / 1M (/ 10M) backlog vs the classic
//!   `FOR UPDATE SKIP LOCKED` queue draining the same backlog (`naive-queue.sh`);
//! - **webhook delivery** to nginx vs what `wrk` gets from that nginx;
//! - **latency** at a steady 1,000 events/s, client send to receiver (targets, no peer);
//! - **idle CPU** of Sluice and PostgreSQL with 100 destinations and nothing to do;
//! - **a small receiver** (Python's ThreadingHTTPServer, accept backlog 5) vs `wrk`;
//! - **the plugin platform**: the component boundary per call vs the same code natively,
//!   instantiation, loading 20 plugins from the compile cache, a hot swap under load;
//! - **the catalog**: how fast a change reaches two hosts, and a host with 10,000 destinations;
//! - **backfill**: a destination created at `earliest` over 1M retained events, and the wait of
//!   100 trickle lanes beside it.
//!
//! It starts what it needs (embedded PostgreSQL unless `DATABASE_URL` is set, `sluice serve`
//! processes, receivers, load) and stops it all at the end.

mod backfill;
mod browser;
mod browser_sdk;
mod catalog;
mod citus;
mod cpu_split;
mod docs;
mod drains;
mod env;
mod fairness;
mod latency;
mod load;
mod operator;
mod plugins;
mod stalled_uploads;
mod table;
mod tools;
mod trickle;
mod workspaces;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpu_split::{CpuMark, CpuUsed};
pub use env::HostLogs;
use env::{BenchPg, ConfigBuilder, Host, build_plugins, wait_drained};
use load::Shape;
use table::{Row, render_rows, short, thousands};

/// Options of `sluice bench`.
#[derive(Debug, Clone)]
pub struct Options {
    pub peers: Option<PathBuf>,
    /// Smaller sizes, for a quick look.
    pub quick: bool,
    /// Also drain a 10M backlog (long: the fill alone takes minutes).
    pub ten_million: bool,
    /// Run only these scenarios (all when empty).
    pub only: Vec<String>,
    /// Documents whose `sluice-bench` blocks get this run's table (see `docs`).
    pub update: Vec<PathBuf>,
    /// How the run was invoked, shown above the table in those documents.
    pub command: String,
    /// Where the hosts' logs are kept, and what more they log.
    pub host_logs: env::HostLogs,
}

pub const SCENARIOS: [&str; 19] = [
    "latency",
    "idle",
    "slow-sink",
    "ingest",
    "ingest-workspaces",
    "citus",
    "slow-clients",
    "browser",
    "stalled-uploads",
    "delivery",
    "webhook",
    "fanout",
    "flood",
    "two-hosts",
    "plugins",
    "hot-swap",
    "operator",
    "catalog",
    "backfill",
];

/// The middle value of `values` (the upper of the two middle ones for an even count); not
/// empty.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Sluice-COPY pairs of the ingest row.
const INGEST_PAIRS: usize = 3;
struct Bench {
    opts: Options,
    peers: PathBuf,
    dir: tempfile::TempDir,
    pg: BenchPg,
    plugins: PathBuf,
    empty_plugins: PathBuf,
    rows: Vec<Row>,
    /// The no-op drain rates at 100k (the first is the 100k row's) and at 1M.
    delivery_100k: Vec<f64>,
    delivery_1m: Option<f64>,
    /// Ingest rate of the plain ingest scenario (the baseline of slow-clients).
    ingest_rate: Option<f64>,
    host_logs: Arc<env::RunLogs>,
}

pub async fn run(mut opts: Options) -> anyhow::Result<()> {
    let peers = opts.peers.clone().unwrap_or_else(tools::default_peers);
    anyhow::ensure!(
        peers.join("naive-queue.sh").exists(),
        "no peer scripts in {} (pass --peers DIR)",
        peers.display()
    );
    let host_logs = env::RunLogs::new(std::mem::take(&mut opts.host_logs))?;
    let dir = tempfile::Builder::new().prefix("sluice-bench-").tempdir()?;
    {
        use std::os::unix::fs::PermissionsExt;
        // The embedded server runs as `postgres` when we are root.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    eprintln!(
        "bench: starting PostgreSQL and building plugins in {}",
        dir.path().display()
    );
    let pg = BenchPg::start(&dir.path().join("pg")).await?;
    let plugins = dir.path().join("plugins");
    build_plugins(&plugins).await?;
    let empty_plugins = dir.path().join("no-plugins");
    std::fs::create_dir_all(&empty_plugins)?;
    let mut bench = Bench {
        opts,
        peers,
        pg,
        plugins,
        empty_plugins,
        rows: Vec::new(),
        delivery_100k: Vec::new(),
        delivery_1m: None,
        ingest_rate: None,
        host_logs,
        dir,
    };
    let started = Instant::now();
    // The scenario of each row, for the documents' per-scenario blocks.
    let mut tags: Vec<&'static str> = Vec::new();
    for scenario in SCENARIOS {
        if !bench.opts.only.is_empty() && !bench.opts.only.iter().any(|o| o == scenario) {
            continue;
        }
        eprintln!("bench: {scenario} ...");
        let result = match scenario {
            "ingest" => bench.ingest().await,
            "ingest-workspaces" => bench.ingest_workspaces().await,
            "citus" => bench.citus().await,
            "delivery" => bench.delivery().await,
            "webhook" => bench.webhook().await,
            "fanout" => bench.fanout().await,
            "latency" => bench.latency().await,
            "idle" => bench.idle().await,
            "slow-sink" => bench.slow_sink().await,
            "slow-clients" => bench.slow_clients().await,
            "browser" => bench.browser().await,
            "stalled-uploads" => bench.stalled_uploads().await,
            "flood" => bench.flood().await,
            "two-hosts" => bench.two_hosts().await,
            "plugins" => bench.plugins().await,
            "hot-swap" => bench.hot_swap().await,
            "operator" => bench.operator().await,
            "catalog" => bench.catalog().await,
            "backfill" => bench.backfill().await,
            _ => Ok(()),
        };
        if let Err(e) = result {
            eprintln!("bench: {scenario} failed: {e:#}");
            bench.rows.push(Row::failed(scenario, &e));
        }
        if let Err(e) = bench.pg.drop_scenario_dbs().await {
            eprintln!("bench: after {scenario}: {e:#}");
        }
        tags.resize(bench.rows.len(), scenario);
    }
    let header = table::header(started.elapsed());
    let rows: Vec<&Row> = bench.rows.iter().collect();
    println!("\nsluice bench — {header}\n\n{}", render_rows(&rows));
    bench.pg.stop().await;
    let run = docs::Run {
        header: format!("`{}` (release build), {header}:", bench.opts.command),
        rows: &bench.rows,
        scenarios: &tags,
        complete: bench.opts.only.is_empty(),
    };
    for path in &bench.opts.update {
        let n = docs::update(path, &run)?;
        eprintln!("bench: {}: {n} table(s) written", path.display());
    }
    Ok(())
}

impl Bench {
    fn sized(&self, full: u64, quick: u64) -> u64 {
        if self.opts.quick { quick } else { full }
    }

    fn host_dir(&self, name: &str) -> env::HostDir {
        env::HostDir {
            path: self.dir.path().join("hosts").join(name),
            logs: self.host_logs.clone(),
        }
    }

    /// Ingest alone (the destination's plugin is not loaded) against the COPY limit, in pairs:
    /// each Sluice run right after a COPY run, the ratio the median of the pairs'. The COPY
    /// limit of this machine moved from 41.6k to 105k rows/s between runs, so one of each, a
    /// minute apart, compared the minutes as much as the two writers.
    async fn ingest(&mut self) -> anyhow::Result<()> {
        let total = self.sized(300_000, 60_000);
        let pairs = if self.opts.quick { 1 } else { INGEST_PAIRS };
        let mut runs = Vec::new();
        let mut retried = 0;
        let postmaster = self.pg.postmaster_pid();
        let (mut copy_cpu, mut sluice_cpu) = (CpuUsed::default(), CpuUsed::default());
        for pair in 0..pairs {
            let before = CpuMark::now(None, postmaster);
            let copy = tools::peer_script(
                &self.peers,
                "copy-limit.sh",
                &[&total.to_string(), "1000", "text"],
                &self.pg.admin_url,
                "rows_per_s",
            )?;
            copy_cpu = copy_cpu + before.until(&CpuMark::now(None, postmaster));
            let label = format!("ingest{pair}");
            let db = self.pg.fresh_db(&label).await?;
            let config =
                ConfigBuilder::new(&self.empty_plugins).destination("noop", "devnull", "{}");
            let host = Host::start(&self.host_dir(&label), &config.text(), &db)?;
            let shape = Shape::STANDARD;
            let before = CpuMark::now(host.pid(), postmaster);
            let r = load::ingest(&host.url("/v1/batch"), "wk_0", total, shape, 8, &label).await?;
            sluice_cpu = sluice_cpu + before.until(&CpuMark::now(host.pid(), postmaster));
            drop(host);
            eprintln!(
                "bench: ingest pair {pair}: {:.0} events/s, COPY {copy:.0} rows/s ({:.2})",
                r.rate(),
                r.rate() / copy
            );
            retried += r.failed_requests;
            runs.push((r.rate(), copy));
        }
        let rate = median(runs.iter().map(|r| r.0).collect());
        let ratios: Vec<f64> = runs.iter().map(|(s, c)| s / c).collect();
        let ratio = median(ratios.clone());
        self.ingest_rate = Some(rate);
        let listed = |v: Vec<String>| v.join(", ");
        // Each side's CPU over all the pairs: what bounds a ratio short of the target.
        let rows = (total * pairs as u64) as f64;
        let mut peer = format!(
            "COPY limit, before each: {} rows/s ({})",
            listed(runs.iter().map(|r| table::thousands(r.1)).collect()),
            copy_cpu.per_peer_row(rows)
        );
        if retried > 0 {
            peer.push_str(&format!("; {retried} requests had to be retried"));
        }
        self.rows.push(Row {
            scenario: "ingest: 100-event batches of ~1 KB, 8 connections".into(),
            sluice: format!(
                "{} events/s median ({}); each pair's ratio: {} ({})",
                table::thousands(rate),
                listed(runs.iter().map(|r| table::thousands(r.0)).collect()),
                listed(ratios.iter().map(|r| format!("{r:.2}")).collect()),
                sluice_cpu.per_sluice_event(rows)
            ),
            peer,
            ratio: Some(ratio),
            target: "≥ 0.8×".into(),
            met: Some(ratio >= 0.8),
        });
        Ok(())
    }

    async fn webhook(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            tools::have("nginx") && tools::have("wrk"),
            "needs nginx and wrk (apt-get install nginx wrk)"
        );
        let nginx = tools::nginx(self.dir.path())?;
        let wrk = tools::wrk(&nginx.url, 2, 64, Duration::from_secs(10), self.dir.path())?;
        let n = self.sized(100_000, 30_000);
        let config = format!("{{ url = \"{}\", secret = \"whsec_YmVuY2g=\" }}", nginx.url);
        let drained = self.drain("webhook", n, 1, "webhook", &config).await?;
        self.rows.push(
            Row::ratio(
                &format!("webhook delivery to nginx, {} backlog", short(n)),
                drained.events_per_s,
                "events/s",
                "wrk -c64 on that nginx",
                wrk,
                0.5,
            )
            .with_host_cpu(drained.host_us_per_job, "event")
            .with_note(&drained.used.cores()),
        );
        Ok(())
    }

    async fn idle(&mut self) -> anyhow::Result<()> {
        let db = self.pg.fresh_db("idle").await?;
        let mut config = ConfigBuilder::new(&self.plugins);
        for i in 0..100 {
            config = config.destination(&format!("d{i}"), "devnull", "{}");
        }
        let host = Host::start(&self.host_dir("idle"), &config.text(), &db)?;
        let pool = sqlx::PgPool::connect(&db).await?;
        // Lanes look once at start, then give their leases back after lingering.
        let settle = Instant::now() + Duration::from_secs(60);
        loop {
            let held: i64 =
                sqlx::query_scalar("SELECT count(*) FROM lanes WHERE owner IS NOT NULL")
                    .fetch_one(&pool)
                    .await?;
            if held == 0 {
                break;
            }
            anyhow::ensure!(Instant::now() < settle, "{held} lanes still held after 60s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Let the statistics of the start-up settle too.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let xacts = || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
            )
            .fetch_one(&pool)
            .await
        };
        let cpu = || tools::host_and_server_cpu_seconds(host.pid(), self.pg.postmaster_pid());
        let window = Duration::from_secs(self.sized(20, 10));
        let x0 = xacts().await?;
        let c0 = cpu();
        tokio::time::sleep(window).await;
        let c1 = cpu();
        // Our own two counter queries are the only expected transactions (stats lag aside).
        let statements = xacts().await? - x0 - 1;
        let pct = (c1 - c0) / window.as_secs_f64() * 100.0;
        pool.close().await;
        self.rows.push(Row {
            scenario: "idle: 100 destinations, nothing queued (host + PostgreSQL)".into(),
            sluice: format!("{pct:.2}% of a core"),
            peer: format!(
                "{} transactions in {}s",
                statements.max(0),
                window.as_secs()
            ),
            ratio: None,
            target: "< 1%".into(),
            met: Some(pct < 1.0),
        });
        drop(host);
        Ok(())
    }

    async fn slow_sink(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            tools::have("wrk") && tools::have("python3"),
            "needs wrk and python3"
        );
        let sink = tools::python_sink(self.dir.path())?;
        let wrk = tools::wrk(&sink.url, 1, 4, Duration::from_secs(10), self.dir.path())?;
        let db = self.pg.fresh_db("slow").await?;
        let config = ConfigBuilder::new(&self.plugins).destination(
            "dest",
            "webhook",
            &format!("{{ url = \"{}\", secret = \"whsec_YmVuY2g=\" }}", sink.url),
        );
        let host = Host::start(&self.host_dir("slow"), &config.text(), &db)?;
        let n = self.sized(10_000, 5_000);
        let shape = Shape {
            users: 200,
            pad: 900,
            batch: 100,
        };
        let started = Instant::now();
        load::ingest(&host.url("/v1/batch"), "wk_0", n, shape, 4, "slow").await?;
        let done = wait_drained(&db, Duration::from_secs(900)).await?;
        let rate = n as f64 / done.duration_since(started).as_secs_f64();
        let pool = sqlx::PgPool::connect(&db).await?;
        let (retried, aborted): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE attempt > 0), count(*) FILTER (WHERE state = 'aborted')
             FROM job_state",
        )
        .fetch_one(&pool)
        .await?;
        pool.close().await;
        let mut row = Row::ratio(
            &format!("small receiver (Python, backlog 5), {} events", short(n)),
            rate,
            "events/s",
            "wrk -c4 on it",
            wrk,
            0.5,
        );
        row.peer
            .push_str(&format!("; {retried} jobs retried, {aborted} aborted"));
        row.met = row.met.map(|m| m && aborted == 0);
        self.rows.push(row);
        drop(host);
        Ok(())
    }
}
