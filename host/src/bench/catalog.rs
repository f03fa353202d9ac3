//! `catalog`: how fast a catalog change reaches every host, and what a big catalog costs.
//!
//! - **Propagation**: two hosts on one database; 100 updates of one destination through the
//!   first host's admin API. For each, the time from its commit (the writing host's
//!   `destination updated` line) to the later of the two hosts' `catalog changed` lines for
//!   that version (both from the hosts' JSON logs, same clock). p50 and p99.
//! - **10,000 destinations**: a host started with a catalog of 10,000 `devnull` destinations
//!   (seeded from its file): time from spawn to listening, resident memory, and idle CPU of the
//!   host and PostgreSQL once its lanes have settled (target < 1% of a core, as with 100).

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use time::OffsetDateTime;

use super::env::{ConfigBuilder, Host};
use super::{Bench, Row, tools};

pub(super) const TOKEN: &str = "bench-catalog-operator-token";

pub(super) fn admin_section() -> String {
    format!(
        "\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[admin.tokens]]\nname = \"bench\"\nscope = \"operator\"\ntoken = \"{TOKEN}\"\n"
    )
}

impl Bench {
    pub(super) async fn catalog(&mut self) -> anyhow::Result<()> {
        self.catalog_propagation().await?;
        self.catalog_size().await
    }

    async fn catalog_propagation(&mut self) -> anyhow::Result<()> {
        let db = self.pg.fresh_db("catalog").await?;
        let config = ConfigBuilder::new(&self.plugins).destination("d0", "devnull", "{}");
        let text = format!("{}{}", config.text(), admin_section());
        let a = Host::start(&self.host_dir("catalog-a"), &text, &db)?;
        let b = Host::start(&self.host_dir("catalog-b"), &text, &db)?;
        let admin = a.admin_addr().context("the admin API logs its address")?;
        // reqwest is built without a bundled crypto provider (see runtime::host_api).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let changes = 100;
        let mut lags = Vec::with_capacity(changes);
        for i in 0..changes {
            let resp = http
                .put(format!(
                    "http://{admin}/api/v1/catalog/destinations/bench/d0"
                ))
                .bearer_auth(TOKEN)
                .json(&json!({ "plugin": "devnull", "config": { "n": i } }))
                .send()
                .await?;
            anyhow::ensure!(resp.status().is_success(), "update {i}: {}", resp.status());
            let body: serde_json::Value = resp.json().await?;
            let version = body["version"].as_i64().context("a version")?;
            let committed = wait_time(&a, |l| {
                l["fields"]["message"] == "destination updated"
                    && l["fields"]["version"].as_i64() == Some(version)
            })
            .await?;
            let mut last = committed;
            for host in [&a, &b] {
                let took = wait_time(host, |l| {
                    l["fields"]["message"] == "catalog changed"
                        && l["fields"]["version"].as_i64() == Some(version)
                })
                .await?;
                last = last.max(took);
            }
            lags.push((last - committed).as_seconds_f64() * 1000.0);
        }
        lags.sort_by(f64::total_cmp);
        let at = |q: f64| lags[((lags.len() as f64 - 1.0) * q).round() as usize];
        let (p50, p99) = (at(0.5), at(0.99));
        self.rows.push(Row {
            scenario: format!("catalog: a change reaches both of 2 hosts ({changes} updates)"),
            sluice: format!("p50 {p50:.1} ms, p99 {p99:.1} ms"),
            peer: String::new(),
            ratio: None,
            target: "< 1 s".into(),
            met: Some(p99 < 1000.0),
        });
        Ok(())
    }

    async fn catalog_size(&mut self) -> anyhow::Result<()> {
        let n = self.sized(10_000, 2_000) as usize;
        let db = self.pg.fresh_db("catalog_big").await?;
        let mut config = ConfigBuilder::new(&self.plugins);
        for i in 0..n {
            config = config.destination(&format!("d{i}"), "devnull", "{}");
        }
        let spawned = Instant::now();
        let mut host = Host::start(&self.host_dir("catalog-big"), &config.text(), &db)?;
        let start_s = host.ready.duration_since(spawned).as_secs_f64();
        let pid = host.pid().context("the host runs")?;
        let pool = sqlx::PgPool::connect(&db).await?;
        // Lanes look once at start, then give their leases back after lingering; idle CPU is
        // only measured once they have. A catalog too big for that is reported as such.
        let settle_for = Duration::from_secs(180);
        let settle = Instant::now() + settle_for;
        let held = loop {
            let held: i64 =
                sqlx::query_scalar("SELECT count(*) FROM lanes WHERE owner IS NOT NULL")
                    .fetch_one(&pool)
                    .await?;
            if held == 0 || Instant::now() > settle || host.exited().is_some() {
                break held;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let rss_mib = tools::rss_bytes(pid) as f64 / (1 << 20) as f64;
        let scenario = format!(
            "catalog: {} destinations on one host (start, memory, idle)",
            super::thousands(n as f64)
        );
        if let Some(exit) = host.exited() {
            pool.close().await;
            self.rows.push(Row {
                scenario,
                sluice: format!("start {start_s:.1} s, then the host {exit}"),
                peer: String::new(),
                ratio: None,
                target: "idle < 1%".into(),
                met: Some(false),
            });
            return Ok(());
        }
        if held > 0 {
            pool.close().await;
            self.rows.push(Row {
                scenario,
                sluice: format!(
                    "start {start_s:.1} s, RSS {rss_mib:.0} MiB; {held} lanes still held {}s after start: not idle",
                    settle_for.as_secs()
                ),
                peer: String::new(),
                ratio: None,
                target: "idle < 1%".into(),
                met: Some(false),
            });
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu = || tools::host_and_server_cpu_seconds(Some(pid), self.pg.postmaster_pid());
        let window = Duration::from_secs(self.sized(20, 10));
        let c0 = cpu();
        tokio::time::sleep(window).await;
        let c1 = cpu();
        let pct = (c1 - c0) / window.as_secs_f64() * 100.0;
        let rss_mib = tools::rss_bytes(pid) as f64 / (1 << 20) as f64;
        pool.close().await;
        self.rows.push(Row {
            scenario: format!(
                "catalog: {} destinations on one host (start, memory, idle)",
                super::thousands(n as f64)
            ),
            sluice: format!("start {start_s:.1} s, RSS {rss_mib:.0} MiB, idle {pct:.2}% of a core"),
            peer: String::new(),
            ratio: None,
            target: "idle < 1%".into(),
            met: Some(pct < 1.0),
        });
        drop(host);
        Ok(())
    }
}

/// Waits (up to 10 s) for a log line of `host` matching `pred`; returns its timestamp.
async fn wait_time(
    host: &Host,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<OffsetDateTime> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(t) = host.log_time(&pred) {
            return Ok(t);
        }
        anyhow::ensure!(Instant::now() < deadline, "no such log line within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
