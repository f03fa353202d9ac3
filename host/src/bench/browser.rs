//! `browser`: browser-shaped traffic (issue "Browser sources").
//!
//! 1,000 concurrent clients, each a visitor of `https://shop.example` using one of the two
//! browser SDKs (half each, [`super::browser_sdk`]): single events to `/v1/track|page|identify`
//! (RudderStack) and `/v1/t|p` (Segment), small batches (2–10 events) by beacon and to
//! `/v1/b`. Each client preflights every URL it posts to once (browsers cache preflights for
//! `Access-Control-Max-Age`), except the beacon, which has none. Every request goes on a fresh
//! TCP connection: a page talking to a cross-site host has no long-lived pool, and a new
//! connection per request is the costly end of what browsers do.
//!
//! Every POST must answer 200 with `Access-Control-Allow-Origin: https://shop.example`, and
//! every preflight 2xx with it; any other answer fails the scenario. Reported: the events/s
//! accepted over the run's wall time (checked against the store), as a ratio to batch ingest
//! (100-event batches over 8 kept-alive connections) on the same host in the same run, and
//! the p50/p99 answer time of the POSTs (connect included, as for a browser's new connection).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::browser_sdk::{ORIGIN, Page, SdkRequest, USER_AGENT};
use super::env::{ConfigBuilder, Host};
use super::load::{self, Shape};
use super::{Bench, Row, thousands, tools};

const CLIENTS: usize = 1000;
const WRITE_KEY: &str = "wk_browser";
/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Error texts kept for the report (the count is exact).
const ERROR_SAMPLES: usize = 5;

/// The browser source. Its per-client limit is raised: every bench client comes from
/// 127.0.0.1, so the browser default (20 events/s per IP, burst 200) would measure the limiter,
/// not ingest. The source as a whole has no limit unless set (also the browser default).
fn browser_source() -> String {
    format!(
        "[[source]]\nid = \"browser\"\nworkspace = \"bench\"\nwrite_key = \"{WRITE_KEY}\"\n\
         destinations = [\"noop\"]\nallowed_origins = [\"{ORIGIN}\"]\n\
         limits = {{ client_events_per_second = 1000000000.0, client_burst = 1000000000 }}\n\n"
    )
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    accepted: u64,
    posts: u64,
    preflights: u64,
    /// Answer times of the POSTs that were answered (sorted once the run is over).
    post_times: Vec<Duration>,
    errors: u64,
    samples: Vec<String>,
}

impl Tally {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.samples.len() < ERROR_SAMPLES {
            self.samples.push(what);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.accepted += other.accepted;
        self.posts += other.posts;
        self.preflights += other.preflights;
        self.post_times.extend(other.post_times);
        self.errors += other.errors;
        for s in other.samples {
            if self.samples.len() < ERROR_SAMPLES {
                self.samples.push(s);
            }
        }
    }
}

impl Bench {
    pub(super) async fn browser(&mut self) -> anyhow::Result<()> {
        let per_client = self.sized(100, 5) as usize;
        let db = self.pg.fresh_db("browser").await?;
        let config = ConfigBuilder::new(&self.empty_plugins).destination("noop", "devnull", "{}");
        let text = format!("{}{}", config.text(), browser_source());
        let host = Host::start(&self.host_dir("browser"), &text, &db)?;

        // The baseline: batch ingest on this host, before the browsers.
        let shape = Shape::STANDARD;
        let batch_total = self.sized(100_000, 30_000);
        let batch = load::ingest(
            &host.url("/v1/batch"),
            "wk_0",
            batch_total,
            shape,
            8,
            "browser-batch",
        )
        .await?;

        let run = measure(&host, self.pg.postmaster_pid(), per_client).await?;
        let stored = stored_events(&db).await?;
        drop(host);
        self.push_browser_rows(&run, batch.rate(), stored, per_client);
        anyhow::ensure!(
            run.tally.errors == 0,
            "{} browser requests failed, e.g.: {}",
            run.tally.errors,
            run.tally.samples.join(" | ")
        );
        anyhow::ensure!(
            stored == run.tally.accepted,
            "{} events accepted but {stored} stored",
            run.tally.accepted
        );
        Ok(())
    }

    /// The rate (as a ratio to batch ingest) and the answer times, with what explains them.
    fn push_browser_rows(
        &mut self,
        run: &Measured,
        batch_rate: f64,
        stored: u64,
        per_client: usize,
    ) {
        let tally = &run.tally;
        let secs = run.elapsed.as_secs_f64();
        let rate = tally.accepted as f64 / secs;
        let ms = |q: f64| percentile(&tally.post_times, q).as_secs_f64() * 1000.0;
        // A connection dropped at a full accept queue is retried by the client's SYN a second
        // later: these answers wait at least that long.
        let slow = tally
            .post_times
            .iter()
            .filter(|t| **t >= Duration::from_secs(1))
            .count();
        let overflows = run.overflows.map_or("?".into(), |n| n.to_string());
        let cores = run.cpu.map(|c| c / secs);
        eprintln!(
            "bench: browser: {} POSTs and {} preflights in {secs:.1} s, {} events accepted, {stored} stored; \
             {slow} POSTs took 1 s or more; accept queue overflows {overflows}; CPU (cores): host {:.2}, clients {:.2}, PostgreSQL {:.2}",
            tally.posts, tally.preflights, tally.accepted, cores[0], cores[1], cores[2],
        );
        self.rows.push(Row {
            scenario: format!(
                "browser: {} clients (RudderStack and Segment SDK requests, CORS, a connection per request), {per_client} POSTs each",
                thousands(CLIENTS as f64)
            ),
            sluice: format!(
                "{} events/s ({} POSTs/s)",
                thousands(rate),
                thousands(tally.posts as f64 / secs)
            ),
            peer: format!(
                "batch ingest, same host: {} events/s; CPU during the browser run (cores): host {:.2}, clients {:.2}, PostgreSQL {:.2}",
                thousands(batch_rate),
                cores[0],
                cores[1],
                cores[2],
            ),
            ratio: Some(rate / batch_rate.max(1e-9)),
            target: "reported".into(),
            met: None,
        });
        self.rows.push(Row {
            scenario: "browser: answer time per POST (connect included)".into(),
            sluice: format!("p50 {:.1} ms, p99 {:.1} ms", ms(0.5), ms(0.99)),
            peer: format!(
                "{} POSTs + {} preflights, {} errors; {stored} of {} events stored; {slow} POSTs ≥ 1 s, {overflows} accept queue overflows; per-client limit raised (all clients are 127.0.0.1)",
                tally.posts, tally.preflights, tally.errors, tally.accepted,
            ),
            ratio: None,
            target: "every answer 2xx with CORS (p99 informational)".into(),
            met: Some(tally.errors == 0 && stored == tally.accepted),
        });
    }
}

/// The browser clients' run, with what it cost.
struct Measured {
    tally: Tally,
    elapsed: Duration,
    /// CPU seconds of the host, the clients (this process) and PostgreSQL during the run.
    cpu: [f64; 3],
    /// Connections the kernel dropped because the host's accept queue was full (machine-wide
    /// counter, read before and after).
    overflows: Option<u64>,
}

async fn measure(host: &Host, pg: Option<u32>, per_client: usize) -> anyhow::Result<Measured> {
    // PostgreSQL through its postmaster: a backend that ends during the run still counts.
    let cpu = || {
        [
            tools::cpu_seconds(host.pid().as_slice()),
            tools::cpu_seconds(&[std::process::id()]),
            pg.map_or(0.0, tools::server_cpu_seconds),
        ]
    };
    let (cpu0, overflows0) = (cpu(), tools::listen_overflows());
    let started = Instant::now();
    let mut tally = run_clients(&host.url(""), per_client).await?;
    let elapsed = started.elapsed();
    tally.post_times.sort();
    let (cpu1, overflows1) = (cpu(), tools::listen_overflows());
    Ok(Measured {
        tally,
        elapsed,
        cpu: [0, 1, 2].map(|i| cpu1[i] - cpu0[i]),
        overflows: overflows0.zip(overflows1).map(|(a, b)| b - a),
    })
}

/// Runs the clients to the end; what they saw, merged.
async fn run_clients(base: &str, per_client: usize) -> anyhow::Result<Tally> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // No idle connection is kept: each request opens its own.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the browser clients' HTTP client")?;
    let base: Arc<str> = base.into();
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..CLIENTS {
        let (http, base) = (http.clone(), base.clone());
        clients.spawn(async move { client(&http, &base, id, per_client).await });
    }
    let mut tally = Tally::default();
    while let Some(done) = clients.join_next().await {
        tally.merge(done.context("a browser client panicked")?);
    }
    Ok(tally)
}

/// One visitor: `requests` POSTs, each URL preflighted before its first POST.
async fn client(http: &reqwest::Client, base: &str, id: usize, requests: usize) -> Tally {
    let page = Page::new(id, WRITE_KEY);
    let mut preflighted = HashSet::new();
    let mut tally = Tally::default();
    for n in 0..requests {
        let request = page.request(n);
        if let Some(asks) = request.preflight
            && preflighted.insert(request.path.clone())
        {
            tally.preflights += 1;
            if let Err(e) = preflight(http, base, &request.path, asks).await {
                tally.error(format!("OPTIONS {}: {e:#}", request.path));
            }
        }
        let started = Instant::now();
        let answer = post(http, base, &request).await;
        tally.posts += 1;
        match answer {
            Ok(accepted) => {
                tally.post_times.push(started.elapsed());
                tally.accepted += accepted;
            }
            Err(e) => tally.error(format!("POST {}: {e:#}", request.path)),
        }
    }
    tally
}

/// What a browser asks before a POST it may not send unasked.
async fn preflight(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    asks: &str,
) -> anyhow::Result<()> {
    let answer = http
        .request(reqwest::Method::OPTIONS, format!("{base}{path}"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", asks)
        .header("user-agent", USER_AGENT)
        .send()
        .await?;
    anyhow::ensure!(answer.status().is_success(), "answered {}", answer.status());
    allowed_origin(&answer)
}

/// Sends `request` as the browser would; the number of events the answer says it accepted.
async fn post(http: &reqwest::Client, base: &str, request: &SdkRequest) -> anyhow::Result<u64> {
    let mut builder = http
        .post(format!("{base}{}", request.path))
        .header("origin", ORIGIN)
        .header("referer", format!("{ORIGIN}/"))
        .header("user-agent", USER_AGENT)
        .body(request.body.clone());
    if request.basic_auth {
        builder = builder.basic_auth(WRITE_KEY, Some(""));
    }
    for (name, value) in &request.headers {
        builder = builder.header(*name, value);
    }
    let answer = builder.send().await?;
    let status = answer.status();
    let cors = allowed_origin(&answer);
    let body = answer.text().await?;
    anyhow::ensure!(status.as_u16() == 200, "answered {status}: {body}");
    cors?;
    let parsed: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("answer is not JSON: {body}"))?;
    let accepted = parsed["accepted"]
        .as_u64()
        .with_context(|| format!("no `accepted` in {body}"))?;
    anyhow::ensure!(
        accepted == request.events,
        "{accepted} of {} events accepted: {body}",
        request.events
    );
    Ok(accepted)
}

/// The answer lets the shop's pages read it.
fn allowed_origin(answer: &reqwest::Response) -> anyhow::Result<()> {
    let allowed = answer
        .headers()
        .get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok());
    anyhow::ensure!(
        allowed == Some(ORIGIN),
        "access-control-allow-origin is {allowed:?}"
    );
    Ok(())
}

/// Events the browser source stored.
async fn stored_events(db: &str) -> anyhow::Result<u64> {
    let pool = sqlx::PgPool::connect(db).await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE source_id = 'browser'")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    Ok(u64::try_from(n).unwrap_or_default())
}

/// The `q` quantile of `sorted` (zero when empty).
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}
