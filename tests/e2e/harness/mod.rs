//! Test harness: the real binary, real embedded Postgres, real compiled plugins, a local sink.

pub mod browser;
pub mod citus;
pub mod mock_api;
pub mod pg;
pub mod plugins;
pub mod probe;
pub mod process;
pub mod server;
pub mod sink;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::PgPool;

pub use mock_api::{Call, MockApi};
pub use pg::SharedPg;
pub use probe::{Probe, ProbeOptions};
pub use process::Sluice;
pub use sink::{Received, Sink};

/// The `sluice` binary under test: the one cargo built for this test run, or `SLUICE_E2E_BIN`
/// when set (a copy of it, say, so that a rebuild during a long run does not swap the binary
/// under the tests' feet).
pub fn sluice_bin() -> std::path::PathBuf {
    std::env::var_os("SLUICE_E2E_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_sluice").into())
}

pub const WRITE_KEY: &str = "wk_test";
pub const SECRET: &str = "whsec_dGVzdC1zZWNyZXQ=";

/// The source `web` of workspace `acme` (`WRITE_KEY`) feeding `destinations`, followed by
/// their `[[destination]]` tables.
pub fn source_config(destinations: &[&str], tables: &str) -> String {
    let ids: Vec<String> = destinations.iter().map(|d| format!("{d:?}")).collect();
    format!(
        r#"
[[source]]
id = "web"
workspace = "acme"
write_key = "{WRITE_KEY}"
destinations = [{}]
{tables}
"#,
        ids.join(", ")
    )
}

/// A `[[destination]]` table of workspace `acme`; `config` and `retry` are inline TOML tables.
pub fn destination_table(id: &str, plugin: &str, config: &str, retry: &str) -> String {
    format!(
        r#"
[[destination]]
id = "{id}"
workspace = "acme"
plugin = "{plugin}"
config = {config}
retry = {retry}
"#
    )
}

/// One source (`WRITE_KEY`) feeding one webhook destination `hook` at `sink_url`, plus `extra`.
pub fn webhook_config(sink_url: &str, retry: &str, extra: &str) -> String {
    let config = format!(r#"{{ url = "{sink_url}", secret = "{SECRET}" }}"#);
    let table = destination_table("hook", "webhook", &config, retry);
    source_config(&["hook"], &format!("{table}{extra}\n"))
}

/// A track event of `user` carrying its per-user sequence number.
pub fn track(user: &str, seq: i64) -> Value {
    json!({
        "type": "track",
        "userId": user,
        "event": "Order Completed",
        "messageId": format!("{user}-{seq}"),
        "properties": { "seq": seq, "pad": "x".repeat(200) },
        "timestamp": "2026-11-25T00:00:00Z",
    })
}

/// Events `from..to` of each of `users` users (`{prefix}user-<u>`, `seq` per user), round by
/// round: every user's event `from`, then every user's `from + 1`, and so on.
pub fn rounds(prefix: &str, users: usize, from: i64, to: i64) -> Vec<Value> {
    (from..to)
        .flat_map(|seq| (0..users).map(move |u| track(&format!("{prefix}user-{u}"), seq)))
        .collect()
}

/// `n` events spread round-robin over `users` users, each user's numbered from 0.
pub fn events(users: usize, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| track(&format!("user-{}", i % users), (i / users) as i64))
        .collect()
}

/// Installs Debian `packages` with apt-get (the tests install what they need rather than skip);
/// whether it worked.
pub fn apt_install(packages: &[&str]) -> bool {
    let apt = |args: &[&str]| {
        std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = [&["install", "-y", "--no-install-recommends"], packages].concat();
    // A fresh machine may have no package lists yet: update, then try again.
    apt(&install) || (apt(&["update"]) && apt(&install))
}

pub fn client() -> reqwest::Client {
    // reqwest is built without a bundled crypto provider (see runtime::host_api::http_client).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// POSTs a batch with Basic auth; returns status and JSON body.
pub async fn post_batch(sluice: &Sluice, events: &[Value]) -> (u16, Value) {
    post_batch_as(sluice, WRITE_KEY, events).await
}

/// [`post_batch`] with the source of `write_key`.
pub async fn post_batch_as(sluice: &Sluice, write_key: &str, events: &[Value]) -> (u16, Value) {
    let resp = client()
        .post(sluice.url("/v1/batch"))
        .basic_auth(write_key, Some(""))
        .json(&json!({ "batch": events, "sentAt": "2026-11-25T00:00:01Z" }))
        .send()
        .await
        .expect("post batch");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Sends `events` in batches of `size`, asserting each is accepted.
pub async fn post_all(sluice: &Sluice, events: &[Value], size: usize) {
    for chunk in events.chunks(size) {
        let (status, body) = post_batch(sluice, chunk).await;
        assert_eq!(status, 200, "batch rejected: {body}");
    }
}

pub async fn db(sluice: &Sluice) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&sluice.db_url)
        .await
        .expect("connect to the test database")
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Per user, the `seq` of each accepted delivery in arrival order.
pub fn accepted_by_user(received: &[Received]) -> BTreeMap<String, Vec<i64>> {
    let mut map: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in received.iter().filter(|r| (200..300).contains(&r.status)) {
        map.entry(r.user.clone()).or_default().push(r.seq);
    }
    map
}

/// Asserts every user got exactly `0..per_user` in order, each once.
pub fn assert_in_order_exactly_once(received: &[Received], users: usize, per_user: i64) {
    let by_user = accepted_by_user(received);
    assert_eq!(by_user.len(), users, "users seen: {:?}", by_user.keys());
    for (user, seqs) in &by_user {
        let want: Vec<i64> = (0..per_user).collect();
        assert_eq!(
            seqs, &want,
            "deliveries of {user} out of order or duplicated"
        );
    }
}

/// Waits until the store records every job of `destination` as delivered (lanes commit their
/// outcomes in batches, shortly after the receiver saw them).
pub async fn wait_all_delivered(pool: &PgPool, destination: &str, n: i64) {
    let what = format!("the store to record {n} deliveries");
    wait_until(Duration::from_secs(30), &what, || async {
        let states = states(pool, destination).await;
        (states.get("delivered") == Some(&n) && states.len() == 1).then_some(())
    })
    .await;
}

/// Asserts that no value of any column of any table in the test database contains one of
/// `needles` (each column read as text), naming the table and column that does.
pub async fn assert_not_stored(pool: &PgPool, needles: &[&str]) {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text FROM information_schema.columns c
         JOIN information_schema.tables t USING (table_schema, table_name)
         WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await
    .expect("list the columns");
    assert!(
        columns
            .iter()
            .any(|(t, c)| t == "job_state" && c == "error_text"),
        "the scan sees the job tables: {columns:?}"
    );
    let needles: Vec<String> = needles.iter().map(|n| n.to_string()).collect();
    for (table, column) in &columns {
        // Names from information_schema, quoted; the needles are bound (and matched with
        // strpos: LIKE would read the `%` and `_` in them as wildcards).
        let hit: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT \"{column}\"::text FROM \"{table}\"
             WHERE EXISTS (SELECT 1 FROM unnest($1::text[]) n WHERE strpos(\"{column}\"::text, n) > 0)
             LIMIT 1"
        )))
        .bind(&needles)
        .fetch_optional(pool)
        .await
        .unwrap_or_else(|e| panic!("scan {table}.{column}: {e}"));
        assert!(
            hit.is_none(),
            "a secret stored in {table}.{column}: {hit:?}"
        );
    }
}

/// Counts jobs by state for a destination.
pub async fn states(pool: &PgPool, destination: &str) -> BTreeMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>(
        "SELECT state::text, count(*) FROM job_overview WHERE destination_id = $1 GROUP BY state",
    )
    .bind(destination)
    .fetch_all(pool)
    .await
    .expect("count states")
    .into_iter()
    .collect()
}

/// The host's Prometheus page (`GET /metrics`).
pub async fn metrics_page(sluice: &Sluice) -> String {
    client()
        .get(sluice.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics page")
}

/// The sum of the samples of the metric `name` whose line contains `label`.
pub async fn metric_sum(sluice: &Sluice, name: &str, label: &str) -> f64 {
    metrics_page(sluice)
        .await
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
