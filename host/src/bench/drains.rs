//! The drain scenarios: a backlog filled through ingest, then delivered by a host of its own
//! (no-op delivery at 100k, 1M and 10M, fan-out), timed from the first delivery the store
//! records.

use std::time::Duration;

use anyhow::Context;

use super::cpu_split::{CpuMark, CpuUsed};
use super::env::{self, ConfigBuilder, Host, wait_drained};
use super::load::{self, Shape};
use super::table::{self, Row, short};
use super::{Bench, median, tools};

/// 100k no-op drains whose median is the 10M row's baseline.
const TEN_MILLION_BASELINES: usize = 3;

/// What draining a backlog measured.
pub(super) struct Drained {
    /// Events delivered to every destination, per second.
    pub(super) events_per_s: f64,
    /// Jobs (an event for one destination) per second.
    pub(super) jobs_per_s: f64,
    /// The delivering host's CPU per job, in microseconds.
    pub(super) host_us_per_job: f64,
    /// Where the CPU went meanwhile (whether the two cores were full).
    pub(super) used: CpuUsed,
    /// PostgreSQL's CPU per job meanwhile (every backend of the bench's server), in
    /// microseconds.
    pub(super) db_us_per_job: f64,
}

impl Bench {
    /// Fills a backlog of `events` through ingest from one source feeding `destinations`
    /// destinations of `plugin`, with delivery off (the plugins not loaded), then starts a host
    /// that delivers it all; rates and CPU are from the first delivery it records to the last
    /// (the jobs delivered before the first look are left out).
    pub(super) async fn drain(
        &mut self,
        label: &str,
        events: u64,
        destinations: usize,
        plugin: &str,
        plugin_config: &str,
    ) -> anyhow::Result<Drained> {
        let db = self.pg.fresh_db(label).await?;
        let mut config = ConfigBuilder::new(&self.empty_plugins);
        for d in 0..destinations {
            let id = if destinations == 1 {
                "dest".to_string()
            } else {
                format!("dest-{d}")
            };
            config = config.destination(&id, plugin, plugin_config);
        }
        let shape = Shape::STANDARD;
        {
            let filler = Host::start(
                &self.host_dir(&format!("{label}-fill")),
                &config.text(),
                &db,
            )?;
            let r = load::ingest(&filler.url("/v1/batch"), "wk_0", events, shape, 8, label).await?;
            eprintln!(
                "bench: {label}: {} events filled at {:.0}/s",
                r.events,
                r.rate()
            );
        }
        config.plugins_dir = self.plugins.clone();
        let baseline = {
            let pool = sqlx::PgPool::connect(&db).await?;
            let sum = env::cursor_sum(&pool).await?;
            pool.close().await;
            sum
        };
        // Timed from the first delivery recorded, not from the host listening: its lanes
        // start first (`env::FirstDelivery`).
        let mut host = Host::spawn(
            &self.host_dir(&format!("{label}-drain")),
            &config.text(),
            &db,
        )?;
        let pid = host.pid().context("the host's pid")?;
        let postmaster = self.pg.postmaster_pid();
        let first = tokio::spawn(env::first_delivery(db.clone(), baseline, pid, postmaster));
        tokio::task::block_in_place(|| host.wait_ready())?;
        let first = first.await.context("watching for the first delivery")??;
        eprintln!(
            "bench: {label}: first delivery seen {:.3} s after the host listened ({} jobs by then)",
            first.at.saturating_duration_since(host.ready).as_secs_f64()
                - host.ready.saturating_duration_since(first.at).as_secs_f64(),
            first.jobs
        );
        let done = wait_drained(&db, Duration::from_secs(3600)).await?;
        let used = first.cpu.until(&CpuMark::now(Some(pid), postmaster));
        let (cpu, db_used) = (used.host, used.db);
        let secs = done.duration_since(first.at).as_secs_f64();
        let jobs = events * destinations as u64;
        let timed = jobs.saturating_sub(first.jobs.max(0) as u64);
        anyhow::ensure!(
            timed > 0,
            "{label}: drained before a first delivery was seen"
        );
        let timed = timed as f64;
        Ok(Drained {
            events_per_s: timed / destinations as f64 / secs,
            jobs_per_s: timed / secs,
            host_us_per_job: cpu * 1e6 / timed,
            db_us_per_job: db_used * 1e6 / timed,
            used,
        })
    }

    pub(super) async fn delivery(&mut self) -> anyhow::Result<()> {
        let sizes: Vec<u64> = if self.opts.quick {
            vec![100_000]
        } else {
            vec![100_000, 1_000_000]
        };
        for n in sizes {
            let naive = tools::peer_script(
                &self.peers,
                "naive-queue.sh",
                &[&n.to_string(), "4"],
                &self.pg.admin_url,
                "jobs_per_s",
            )?;
            let drained = self
                .drain(&format!("noop{n}"), n, 1, "devnull", "{}")
                .await?;
            let rate = drained.events_per_s;
            match n {
                100_000 => self.delivery_100k.push(rate),
                1_000_000 => self.delivery_1m = Some(rate),
                _ => {}
            }
            self.rows.push(
                Row::ratio(
                    &format!("no-op delivery, {} backlog (10k users)", short(n)),
                    rate,
                    "events/s",
                    "naive queue",
                    naive,
                    2.0,
                )
                .with_cpu(drained.host_us_per_job, drained.db_us_per_job, "event"),
            );
        }
        if self.opts.ten_million {
            // A 100k drain lasts under a second and its rate moved by half between runs of
            // the same code: the baseline is the median of three.
            for extra in 1..TEN_MILLION_BASELINES {
                let drained = self
                    .drain(&format!("noop100k_{extra}"), 100_000, 1, "devnull", "{}")
                    .await?;
                self.delivery_100k.push(drained.events_per_s);
            }
            let n = 10_000_000;
            let drained = self.drain("noop10m", n, 1, "devnull", "{}").await?;
            anyhow::ensure!(
                !self.delivery_100k.is_empty(),
                "the 100k runs are the baseline"
            );
            let base = median(self.delivery_100k.clone());
            let drains: Vec<String> = self
                .delivery_100k
                .iter()
                .map(|r| table::thousands(*r))
                .collect();
            let peer = format!("Sluice at 100k (median of drains {})", drains.join(", "));
            let mut row = Row::ratio(
                "no-op delivery, 10M backlog",
                drained.events_per_s,
                "events/s",
                &peer,
                base,
                0.8,
            );
            if let Some(m) = self.delivery_1m {
                row.sluice = format!(
                    "{} ({:.2}× the 1M drain's {})",
                    row.sluice,
                    drained.events_per_s / m,
                    table::thousands(m)
                );
            }
            self.rows
                .push(row.with_cpu(drained.host_us_per_job, drained.db_us_per_job, "event"));
        }
        Ok(())
    }

    /// One source feeding ten no-op destinations: each event written once, read by ten lanes.
    pub(super) async fn fanout(&mut self) -> anyhow::Result<()> {
        const DESTINATIONS: usize = 10;
        let events = self.sized(100_000, 20_000);
        let jobs = events * DESTINATIONS as u64;
        let naive = tools::peer_script(
            &self.peers,
            "naive-queue.sh",
            &[&jobs.to_string(), "4"],
            &self.pg.admin_url,
            "jobs_per_s",
        )?;
        let drained = self
            .drain("fanout", events, DESTINATIONS, "devnull", "{}")
            .await?;
        self.rows.push(
            Row::ratio(
                &format!(
                    "fan-out: one source → {DESTINATIONS} no-op destinations, {} events ({} jobs)",
                    short(events),
                    short(jobs)
                ),
                drained.jobs_per_s,
                "jobs/s",
                &format!("naive queue draining {} jobs", short(jobs)),
                naive,
                5.0,
            )
            .with_host_cpu(drained.host_us_per_job, "job"),
        );
        Ok(())
    }
}
