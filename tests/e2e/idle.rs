//! What the host's background work costs in statements: none at all while idle (and the
//! counting that shows it is proven to see a busy host's statements), and under steady ingest
//! a maintenance pass per `MIN_PASS_GAP`, not one per commit.

use crate::delivery::FAST_RETRY;
use crate::harness::*;
use serde_json::Value;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_host_issues_no_statements() {
    let sink = Sink::ok(SECRET);
    // 20 destinations on one source; a short linger so that the lanes give their leases back
    // soon after running dry.
    let mut extra = String::new();
    let mut ids = vec!["\"hook\"".to_string()];
    for i in 0..19 {
        extra.push_str(&format!(
            "\n[[destination]]\nid = \"d{i}\"\nworkspace = \"acme\"\nplugin = \"webhook\"\nconfig = {{ url = \"{}\", secret = \"{SECRET}\" }}\n",
            sink.url
        ));
        ids.push(format!("\"d{i}\""));
    }
    let config = webhook_config(&sink.url, FAST_RETRY, &extra).replace(
        r#"destinations = ["hook"]"#,
        &format!("destinations = [{}]", ids.join(", ")),
    );
    let sluice = Sluice::start_with_server(
        &config,
        "lane_linger = \"200ms\"\nmaintenance_interval = \"300ms\"",
    );
    let idle = |l: &serde_json::Value| {
        l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("nothing to do anywhere"))
    };
    let idle_before = sluice.count_log(idle);
    post_all(&sluice, &events(5, 10), 10).await;
    wait_until(Duration::from_secs(60), "200 deliveries", || async {
        (sink.accepted().len() >= 200).then_some(())
    })
    .await;
    let pool = db(&sluice).await;
    wait_until(Duration::from_secs(30), "every lane released", || async {
        let held: i64 = sqlx::query_scalar("SELECT count(*) FROM lanes WHERE owner IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
        (held == 0).then_some(())
    })
    .await;

    // Maintenance has seen that there is nothing left to do (since the events came in).
    wait_until(
        Duration::from_secs(30),
        "maintenance to go idle",
        || async { (sluice.count_log(idle) > idle_before).then_some(()) },
    )
    .await;

    let log = sluice.postgres_log();
    let start = statement_log_on(&pool, &log).await;
    // A measurement window: what is observed is the absence of statements.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle_statements, end) = host_statements(&log, start);
    assert!(
        idle_statements.is_empty(),
        "statements while idle:\n{}",
        idle_statements.join("\n")
    );

    // Positive control: the same counting, over the same log, sees the host's statements as
    // soon as it has something to do (new events: ingest writes, the lanes read and commit).
    let busy: Vec<Value> = (0..10).map(|i| track("user-busy", i)).collect();
    post_all(&sluice, &busy, 10).await;
    wait_until(Duration::from_secs(60), "400 deliveries", || async {
        (sink.accepted().len() >= 400).then_some(())
    })
    .await;
    let (busy_statements, _) = host_statements(&log, end);
    assert!(
        busy_statements.len() >= 3,
        "the counting caught only {} statements of a busy host:\n{}",
        busy_statements.len(),
        busy_statements.join("\n")
    );
}

/// Ingest wakes maintenance at every commit. Commits one after the other (each request waits
/// for its own) cost a maintenance pass per 200 ms (`maintenance::MIN_PASS_GAP`), not one per
/// commit: each pass records a heartbeat (`UPDATE hosts`), counted here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_ingest_costs_a_maintenance_pass_per_gap_not_one_per_commit() {
    let sink = Sink::ok(SECRET);
    let sluice = Sluice::start_with_server(
        &webhook_config(&sink.url, FAST_RETRY, ""),
        "maintenance_interval = \"5s\"",
    );
    let pool = db(&sluice).await;
    let log = sluice.postgres_log();
    let start = statement_log_on(&pool, &log).await;
    let started = Instant::now();
    post_all(&sluice, &events(5, 60), 1).await;
    let elapsed = started.elapsed();
    let (statements, _) = host_statements(&log, start);
    let passes = statements
        .iter()
        .filter(|s| s.contains("UPDATE hosts SET seen_at"))
        .count();
    // One at the first commit, then one per 200 ms at most (and one more for the window's
    // edges).
    let most = (elapsed.as_millis() / 200) as usize + 2;
    assert!(
        passes >= 1,
        "no maintenance pass counted during ingest (the counting is broken)"
    );
    assert!(
        passes <= most,
        "{passes} maintenance passes for 60 commits in {elapsed:?}; expected at most {most}"
    );
}

/// Turns on PostgreSQL's statement log (with the client's application name in each line) and
/// returns the log's length once it is in effect: the statements after it are all logged.
async fn statement_log_on(pool: &sqlx::PgPool, log: &std::path::Path) -> usize {
    for sql in [
        "ALTER SYSTEM SET log_statement = 'all'",
        "ALTER SYSTEM SET log_line_prefix = '%m [%p] app=%a '",
        "SELECT pg_reload_conf()",
    ] {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
    // pg_reload_conf only signals the server: the window opens once a marker statement of
    // ours shows in the log, so the settings are in effect for everything after it.
    wait_until(
        Duration::from_secs(10),
        "statement logging to take effect",
        || async {
            sqlx::query("SELECT 'sluice-e2e statement window opens'")
                .execute(pool)
                .await
                .unwrap();
            let text = read_log(log);
            String::from_utf8_lossy(&text)
                .contains("sluice-e2e statement window opens")
                .then_some(text.len())
        },
    )
    .await
}

/// The PostgreSQL log; a log that is missing or unreadable fails the test (it would otherwise
/// read as a host that issued no statements).
fn read_log(log: &std::path::Path) -> Vec<u8> {
    std::fs::read(log)
        .unwrap_or_else(|e| panic!("cannot read the PostgreSQL log {}: {e}", log.display()))
}

/// The statements the host (application `sluice`) ran, as PostgreSQL logged them from byte
/// `from` of `log` on, and the log's length now (where the next window starts).
/// The catalog follower's periodic check, as PostgreSQL logs it.
const CATALOG_CHECK: &str = ": SELECT version FROM catalog_version";

fn host_statements(log: &std::path::Path, from: usize) -> (Vec<String>, usize) {
    let text = read_log(log);
    assert!(
        text.len() >= from,
        "the PostgreSQL log {} shrank during the test ({} < {from} bytes)",
        log.display(),
        text.len()
    );
    let window = String::from_utf8_lossy(&text[from..]);
    let ours = window
        .lines()
        .filter(|l| {
            l.contains("app=sluice ") && (l.contains("statement:") || l.contains("execute"))
        })
        // The one statement an idle host makes on purpose: the catalog follower's backstop
        // check, a single-row read every few seconds in case a NOTIFY was missed
        // (docs/catalog.md). Everything else counts.
        .filter(|l| !l.ends_with(CATALOG_CHECK))
        .map(str::to_string)
        .collect();
    (ours, text.len())
}
