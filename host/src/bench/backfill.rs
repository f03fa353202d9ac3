//! `backfill`: a destination created with `start = "earliest"` over 1M retained events, beside
//! 100 trickle lanes.
//!
//! A host with `[server.datasets] retain = "7d"` takes 1M events for source `flood` and
//! delivers them to `seen` (devnull); they stay in their (closed) datasets. Then a destination
//! `backfill` (devnull) is created through the admin API with `start = "earliest"`, and while
//! it reads the 1M back, 100 webhook lanes get two events a second each. Reported: the
//! backfill's rate, and the trickle's p99 wait (send → receiver), which fair lanes keep within
//! one pickup round.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::catalog::{TOKEN, admin_section};
use super::env::{ConfigBuilder, Host};
use super::load::{self, Shape};
use super::trickle::Trickle;
use super::{Bench, Row, short, thousands};

impl Bench {
    pub(super) async fn backfill(&mut self) -> anyhow::Result<()> {
        let total = self.sized(1_000_000, 200_000);
        let trickle = Trickle::start().await?;
        let mut config = trickle.add_to(
            ConfigBuilder::new(&self.plugins)
                .route("flood", "wk_flood", &["seen".to_string()])
                .destination("seen", "devnull", "{}"),
        );
        config.server_extra = "[server.datasets]\nretain = \"7d\"\n".into();
        let text = format!("{}{}", config.text(), admin_section());
        let db = self.pg.fresh_db("backfill").await?;
        let host = Host::start(&self.host_dir("backfill"), &text, &db)?;
        let shape = Shape::STANDARD;
        load::ingest(
            &host.url("/v1/batch"),
            "wk_flood",
            total,
            shape,
            8,
            "backfill",
        )
        .await?;
        let pool = sqlx::PgPool::connect(&db).await?;
        let head: i64 = sqlx::query_scalar("SELECT last_id FROM ingest_head")
            .fetch_one(&pool)
            .await?;
        wait_cursor(&pool, "seen", head, Duration::from_secs(600)).await?;
        let retained: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await?;

        let admin = host
            .admin_addr()
            .context("the admin API logs its address")?;
        let http = reqwest::Client::new();
        let resp = http
            .post(format!("http://{admin}/api/v1/catalog/destinations"))
            .bearer_auth(TOKEN)
            .json(&json!({
                "id": "backfill", "workspace": "bench", "plugin": "devnull", "config": {},
                "sources": ["flood"], "start": "earliest",
            }))
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "creating the backfill destination: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
        let created = Instant::now();
        let done = {
            let pool = pool.clone();
            tokio::spawn(async move {
                wait_cursor(&pool, "backfill", head, Duration::from_secs(600)).await?;
                anyhow::Ok(created.elapsed())
            })
        };
        // Two events a second to each trickle lane while the backfill reads.
        let secs = self.sized(10, 5);
        let expected = trickle.run(&host.url("/v1/batch"), secs).await?;
        let took = done.await??;
        pool.close().await;
        let rate = head as f64 / took.as_secs_f64();
        self.rows.push(Row {
            scenario: format!(
                "backfill: `start = \"earliest\"` over {} retained events (devnull)",
                short(total)
            ),
            sluice: format!(
                "{} events/s ({:.1} s; {} events retained)",
                thousands(rate),
                took.as_secs_f64(),
                thousands(retained as f64)
            ),
            peer: String::new(),
            ratio: None,
            target: String::new(),
            met: None,
        });
        self.rows.push(trickle.row(
            format!(
                "backfill beside 100 trickle lanes (trickle for the first {secs} s): trickle p99"
            ),
            expected,
        )?);
        drop(host);
        Ok(())
    }
}

/// Waits until `destination`'s lane has read up to `head`.
async fn wait_cursor(
    pool: &sqlx::PgPool,
    destination: &str,
    head: i64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let cursor: Option<i64> =
            sqlx::query_scalar("SELECT cursor FROM lanes WHERE destination_id = $1")
                .bind(destination)
                .fetch_optional(pool)
                .await?;
        if cursor.is_some_and(|c| c >= head) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{destination} read up to {cursor:?} of {head} in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
