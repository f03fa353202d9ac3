//! Sluice on a Citus cluster (issue "Past one PostgreSQL"): four workspaces ingesting at once,
//! delivered to a no-op destination, on the run's plain PostgreSQL and on a coordinator with
//! two workers (`CitusCluster`, built from the vendored source when missing), in the same run.
//!
//! On one machine the cluster cannot be faster: its three servers share the same cores, and
//! every statement crosses the coordinator. What the scenario measures is that overhead (the
//! ratio) and where the CPU goes (per node, per event), which is what `docs/scaling.md`'s
//! growth model is built from.

use std::time::{Duration, Instant};

use anyhow::Context;
use sluice_store::embedded_pg::citus::{CitusCluster, CitusSource, ensure_citus_installed};

use super::env::{Host, wait_drained};
use super::load::Shape;
use super::workspaces::{CONNECTIONS, WORKSPACES, config, ingest_all};
use super::{Bench, Row, tools};

/// Workers beside the coordinator.
const WORKERS: usize = 2;

/// What one run measured.
struct Run {
    /// Events/s the clients saw acknowledged.
    ingest: f64,
    /// Events/s from the first request until every lane had delivered everything.
    delivered: f64,
    /// CPU seconds per node over the run (name, seconds), PostgreSQL servers then the host.
    cpu: Vec<(String, f64)>,
    events: u64,
    /// Milliseconds of a `SELECT count(*)` of each view, after the run (the best of three).
    views: Vec<(&'static str, f64)>,
}

/// The operator views (docs/sql.md). On Citus each reads every shard of its tables.
const VIEWS: [&str; 8] = [
    "lane_status",
    "lane_backlog",
    "job_overview",
    "pending_jobs",
    "failed_jobs",
    "blocked_jobs",
    "destination_depth",
    "ingest_head",
];

/// How long a `SELECT count(*)` of each view takes on `database_url` (the best of three).
async fn views_timed(database_url: &str) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await?;
    let mut timed = Vec::new();
    for view in VIEWS {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            let _: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {view}")))
                    .fetch_one(&pool)
                    .await
                    .with_context(|| format!("reading the view {view}"))?;
            best = best.min(started.elapsed().as_secs_f64() * 1e3);
        }
        timed.push((view, best));
    }
    pool.close().await;
    Ok(timed)
}

fn views_text(views: &[(&str, f64)]) -> String {
    views
        .iter()
        .map(|(v, ms)| format!("{v} {ms:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
        + " ms"
}

impl Run {
    /// CPU microseconds per event of the nodes whose name starts with `prefix`.
    fn cpu_per_event(&self, prefix: &str) -> f64 {
        let secs: f64 = self
            .cpu
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, s)| s)
            .sum();
        secs * 1e6 / self.events as f64
    }
}

impl Bench {
    /// Four workspaces (each a source and a `devnull` destination) ingest `total` events at
    /// once on `database_url`; then waits until everything is delivered. `servers` are the
    /// PostgreSQL postmasters to account CPU to.
    async fn citus_run(
        &mut self,
        label: &str,
        database_url: &str,
        servers: &[(String, u32)],
        total: u64,
    ) -> anyhow::Result<Run> {
        let mut host = Host::start(
            &self.host_dir(label),
            &config(&self.plugins, 4),
            database_url,
        )?;
        let shape = Shape::STANDARD;
        let per_workspace = total / WORKSPACES as u64;
        let url = host.url("/v1/batch");
        let host_pid = host.pid().context("the host's pid")?;
        let cpu_at = |servers: &[(String, u32)]| -> Vec<(String, f64)> {
            servers
                .iter()
                .map(|(n, pid)| (n.clone(), tools::server_cpu_seconds(*pid)))
                .chain(std::iter::once((
                    "sluice".to_string(),
                    tools::cpu_seconds(&[host_pid]),
                )))
                .collect()
        };
        let before = cpu_at(servers);
        let started = Instant::now();
        ingest_all(&url, label, WORKSPACES, per_workspace, CONNECTIONS, shape).await?;
        let ingested = started.elapsed();
        let drained = wait_drained(database_url, Duration::from_secs(900)).await?;
        let after = cpu_at(servers);
        host.stop();
        let views = views_timed(database_url).await?;
        let events = per_workspace * WORKSPACES as u64;
        Ok(Run {
            ingest: events as f64 / ingested.as_secs_f64(),
            delivered: events as f64 / (drained - started).as_secs_f64(),
            cpu: before
                .into_iter()
                .zip(after)
                .map(|((n, b), (_, a))| (n, a - b))
                .collect(),
            events,
            views,
        })
    }

    /// Plain PostgreSQL, then a coordinator and two workers.
    pub(super) async fn citus(&mut self) -> anyhow::Result<()> {
        let total = self.sized(200_000, 40_000);
        let db = self.pg.fresh_db("citus_plain").await?;
        let postmaster = self
            .pg
            .postmaster_pid()
            .map(|pid| vec![("postgres".to_string(), pid)])
            .unwrap_or_default();
        let plain = self
            .citus_run("citus_plain", &db, &postmaster, total)
            .await?;

        let source = CitusSource::from_env();
        tokio::task::spawn_blocking(move || ensure_citus_installed(&source))
            .await?
            .context("installing Citus")?;
        let cluster = CitusCluster::start(&self.dir.path().join("citus"), WORKERS)
            .await
            .context("starting the Citus cluster")?;
        let url = cluster.create_database("bench_citus").await?;
        let servers = cluster.postmaster_pids();
        let on_citus = self.citus_run("citus", &url, &servers, total).await;
        if let Err(e) = cluster.stop().await {
            eprintln!("stopping the Citus cluster failed: {e}");
        }
        let on_citus = on_citus?;

        self.rows.push(Row::report(
            "citus: ingest, 4 workspaces at once (coordinator + 2 workers, one machine)",
            on_citus.ingest,
            "events/s",
            "plain PostgreSQL",
            plain.ingest,
        ));
        self.rows.push(Row::report(
            "citus: ingest + no-op delivery, first request to all delivered",
            on_citus.delivered,
            "events/s",
            "plain PostgreSQL",
            plain.delivered,
        ));
        let db_cpu = |r: &Run| {
            r.cpu_per_event("coordinator") + r.cpu_per_event("worker") + r.cpu_per_event("postgres")
        };
        self.rows.push(Row::report_text(
            "citus: database CPU per event (ingested and delivered)",
            format!(
                "{:.0} µs (coordinator {:.0} + workers {:.0}); host {:.0} µs",
                db_cpu(&on_citus),
                on_citus.cpu_per_event("coordinator"),
                on_citus.cpu_per_event("worker"),
                on_citus.cpu_per_event("sluice"),
            ),
            format!(
                "plain PostgreSQL: {:.0} µs; host {:.0} µs",
                db_cpu(&plain),
                plain.cpu_per_event("sluice"),
            ),
            db_cpu(&on_citus) / db_cpu(&plain).max(1e-9),
        ));
        let total_ms = |r: &Run| r.views.iter().map(|(_, ms)| ms).sum::<f64>();
        self.rows.push(Row::report_text(
            "citus: the views, `SELECT count(*)` each (multi-shard on Citus)",
            views_text(&on_citus.views),
            format!("plain PostgreSQL: {}", views_text(&plain.views)),
            total_ms(&on_citus) / total_ms(&plain).max(1e-9),
        ));
        Ok(())
    }
}
