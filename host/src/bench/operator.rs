//! What an operator's reads cost at a large backlog: the metrics scrape, the lane list (the
//! web page polls it every 3 s), pages of jobs and one job, each against the same calls at a
//! small backlog in the same run, the calls to the two stores taking turns. "Fast at any backlog
//! size" means the ratio stays near 1.
//!
//! The backlog is held by a destination whose plugin is not loaded (nothing drains it). Its
//! first tenth is marked delivered with 200 jobs failed in it, as a destination that rejects
//! some users would leave it, and the store is vacuumed as autovacuum would have done by the
//! time an operator looks. The views the API used before (`destination_depth`, `job_overview`) are timed on the
//! same data for comparison.

use std::time::{Duration, Instant};

use anyhow::Context;

use super::env::{ConfigBuilder, Host};
use super::load::{self, Shape};
use super::{Bench, Row};

const TOKEN: &str = "bench-operator-token";
/// Each figure is the median of this many calls.
const CALLS: usize = 21;

/// One timed call: a label and the path (on the admin listener, or `/metrics` on ingest).
struct Call {
    label: &'static str,
    path: String,
    on_admin: bool,
}

/// A filled store with its host up, and the calls to time against it.
struct Store {
    label: String,
    db: String,
    urls: Vec<(&'static str, String)>,
    /// Kept alive while the calls run.
    _host: Host,
}

impl Bench {
    pub(super) async fn operator(&mut self) -> anyhow::Result<()> {
        let big = self.sized(1_000_000, 100_000);
        let small = 10_000;
        let at_small = self.operator_store("operator_small", small).await?;
        let at_big = self.operator_store("operator_big", big).await?;
        let client = reqwest::Client::new();
        for ((label, small_url), (_, big_url)) in at_small.urls.iter().zip(&at_big.urls) {
            let (small_ms, big_ms) = median_ms(&client, small_url, big_url).await?;
            eprintln!(
                "bench: operator: {label}: {small_ms:.1} ms at {}, {big_ms:.1} ms at {}",
                super::short(small),
                super::short(big)
            );
            let ratio = small_ms / big_ms.max(1e-9);
            self.rows.push(Row {
                scenario: format!("operator read at {} backlog: {label}", super::short(big)),
                sluice: format!("{big_ms:.1} ms"),
                peer: format!(
                    "same call at {} backlog: {small_ms:.1} ms",
                    super::short(small)
                ),
                ratio: Some(ratio),
                target: "≥ 0.5× (at most 2× slower)".into(),
                met: Some(ratio >= 0.5),
            });
        }
        for store in [&at_small, &at_big] {
            time_views(&store.label, &store.db).await?;
        }
        Ok(())
    }

    /// Fills a fresh store with `events`, leaves its host up and says what to call on it.
    async fn operator_store(&mut self, label: &str, events: u64) -> anyhow::Result<Store> {
        let db = self.pg.fresh_db(label).await?;
        let config = ConfigBuilder::new(&self.empty_plugins).destination("dest", "devnull", "{}");
        let text = format!(
            "{}\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[admin.tokens]]\nname = \"bench\"\nscope = \"read\"\ntoken = \"{TOKEN}\"\n",
            config.text()
        );
        let host = Host::start(&self.host_dir(label), &text, &db)?;
        let shape = Shape::STANDARD;
        let r = load::ingest(&host.url("/v1/batch"), "wk_0", events, shape, 8, label).await?;
        anyhow::ensure!(r.events == events, "filled {} of {events} events", r.events);
        let middle = fail_some(&db).await?;
        let admin = host
            .admin_addr()
            .context("the admin API logs its address")?;

        let lane = "workspace=bench&destination=dest&limit=50";
        let calls = [
            Call {
                label: "metrics scrape",
                path: "/metrics".into(),
                on_admin: false,
            },
            Call {
                label: "lanes (depth, age, rates)",
                path: "/api/v1/destinations".into(),
                on_admin: true,
            },
            Call {
                label: "first page of a lane's jobs",
                path: format!("/api/v1/jobs?{lane}"),
                on_admin: true,
            },
            Call {
                label: "page from the middle of the backlog",
                path: format!("/api/v1/jobs?{lane}&cursor={middle}:dest"),
                on_admin: true,
            },
            Call {
                label: "failed jobs",
                path: format!("/api/v1/jobs?{lane}&state=failed"),
                on_admin: true,
            },
            Call {
                label: "one job with its attempts",
                path: format!("/api/v1/jobs/bench/dest/{middle}"),
                on_admin: true,
            },
        ];
        let urls = calls
            .into_iter()
            .map(|call| {
                let url = if call.on_admin {
                    format!("http://{admin}{}", call.path)
                } else {
                    host.url(&call.path)
                };
                (call.label, url)
            })
            .collect();
        Ok(Store {
            label: label.to_string(),
            db,
            urls,
            _host: host,
        })
    }
}

/// Times the views the API's calls replace, on one store.
async fn time_views(label: &str, db: &str) -> anyhow::Result<()> {
    for (what, sql) in [
        ("destination_depth", "SELECT * FROM destination_depth"),
        (
            "job_overview page",
            "SELECT event_id FROM job_overview WHERE workspace_id = 'bench'
             AND destination_id = 'dest' ORDER BY event_id, destination_id LIMIT 50",
        ),
    ] {
        let ms = time_sql(db, sql).await?;
        eprintln!("bench: {label}: the view it replaces, {what}: {ms:.1} ms");
    }
    Ok(())
}

/// Moves the lane a tenth of the way through the log, as if it had delivered that much with
/// 200 jobs failed early on (one in five of the first thousand: rows, keys blocked), the same
/// at every backlog so that only the backlog differs; returns an event id from the middle of
/// the log.
async fn fail_some(database_url: &str) -> anyhow::Result<i64> {
    let pool = sqlx::PgPool::connect(database_url).await?;
    sqlx::raw_sql(
        "INSERT INTO job_state (dataset, workspace_id, destination_id, event_id, source_id,
                                order_key, state, attempt, error_code, error_text,
                                first_attempt_at, last_attempt_at, next_attempt_at)
         SELECT e.dataset, e.workspace_id, 'dest', e.id, e.source_id, e.user_key, 'failed', 1,
                'http_503', 'service unavailable', now(), now(), now() + interval '1 hour'
         FROM events e WHERE e.id % 5 = 0 AND e.id <= 1000;
         INSERT INTO blocked_keys (workspace_id, destination_id, order_key, next_attempt_at)
         SELECT workspace_id, destination_id, order_key, min(next_attempt_at)
         FROM job_state GROUP BY 1, 2, 3 ON CONFLICT DO NOTHING;
         UPDATE lanes l SET cursor = h.last_id / 10, claimed_to = h.last_id / 10
         FROM ingest_head h WHERE l.destination_id = 'dest';",
    )
    .execute(&pool)
    .await
    .context("marking jobs failed")?;
    // As autovacuum would have left a store that has held its backlog for a while (visibility
    // map set, statistics current): the figures are then not those of the first minute.
    sqlx::raw_sql("VACUUM ANALYZE")
        .execute(&pool)
        .await
        .context("vacuuming")?;
    let middle: i64 = sqlx::query_scalar("SELECT last_id / 2 FROM ingest_head")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    Ok(middle)
}

/// The median of `CALLS` calls of each URL, the two taking turns so that both see the same
/// machine: on two shared cores a millisecond call's time moves with whatever else runs, and
/// calls timed a minute apart compared that as much as the backlogs.
async fn median_ms(client: &reqwest::Client, a: &str, b: &str) -> anyhow::Result<(f64, f64)> {
    let mut times = (Vec::with_capacity(CALLS), Vec::with_capacity(CALLS));
    // Three calls first: connections, prepared statements and caches warm up.
    for i in 0..CALLS + 3 {
        let ta = time_call(client, a).await?;
        let tb = time_call(client, b).await?;
        if i >= 3 {
            times.0.push(ta);
            times.1.push(tb);
        }
    }
    Ok((super::median(times.0), super::median(times.1)))
}

async fn time_call(client: &reqwest::Client, url: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let resp = client
        .get(url)
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    resp.bytes().await?;
    anyhow::ensure!(status.is_success(), "GET {url}: {status}");
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

async fn time_sql(database_url: &str, sql: &str) -> anyhow::Result<f64> {
    let pool = sqlx::PgPool::connect(database_url).await?;
    let started = Instant::now();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&pool)
        .await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    pool.close().await;
    Ok(ms)
}
