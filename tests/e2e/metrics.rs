//! Prometheus `/metrics`: counters, histograms and lane gauges from a real delivery run.

use std::time::Duration;

use crate::harness::*;

/// The value of the first sample of `name` whose labels include every one of `labels`.
fn sample(page: &str, name: &str, labels: &[&str]) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_ingest_and_delivery_and_show_lane_state() {
    // Everything is accepted except the user `stuck`, whose events then wait.
    let sink = Sink::with(SECRET, |r| if r.user == "stuck" { 503 } else { 200 });
    let sluice = Sluice::start(&webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, ""));
    let pool = db(&sluice).await;
    post_all(&sluice, &events(10, 100), 50).await;
    wait_until(Duration::from_secs(30), "100 deliveries", || async {
        (sink.accepted().len() >= 100).then_some(())
    })
    .await;
    wait_all_delivered(&pool, "hook", 100).await;

    let page = metrics_page(&sluice).await;
    let hook = r#"destination="hook""#;
    assert_eq!(
        sample(&page, "sluice_events_ingested_total", &[r#"source="web""#]),
        Some(100.0),
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            "sluice_jobs_total",
            &[hook, r#"outcome="delivered""#]
        ),
        Some(100.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, "sluice_http_request_seconds_count", &[hook]),
        Some(100.0),
        "one request per event: {page}"
    );
    assert!(sample(&page, "sluice_plugin_call_seconds_count", &[hook]).is_some_and(|n| n >= 1.0));
    assert_eq!(
        sample(&page, "sluice_lane_ids_behind", &[hook]),
        Some(0.0),
        "{page}"
    );
    assert_eq!(sample(&page, "sluice_lane_paused", &[hook]), Some(0.0));
    assert_eq!(sample(&page, "sluice_lane_depth", &[hook]), Some(0.0));
    assert_eq!(
        sample(&page, "sluice_lane_oldest_age_seconds", &[hook]),
        Some(0.0)
    );
    assert!(sample(&page, "sluice_concurrency_limit", &[hook]).is_some_and(|n| n >= 1.0));
    assert!(sample(&page, "sluice_db_connections", &[r#"pool="store""#]).is_some());
    // The 100 events' dedup keys are in memory (256 MiB by default: 4,194,304 keys).
    assert_eq!(sample(&page, "sluice_dedup_memory_keys", &[]), Some(100.0));
    assert_eq!(
        sample(&page, "sluice_dedup_memory_max_keys", &[]),
        Some(4_194_304.0)
    );
    assert!(page.contains("# HELP sluice_jobs_total"), "described");

    // A user whose first event keeps failing: it and the event parked behind it are the
    // lane's depth, and the lane's age is theirs.
    post_all(&sluice, &[track("stuck", 0), track("stuck", 1)], 2).await;
    let page = wait_until(
        Duration::from_secs(30),
        "a failed job in /metrics",
        || async {
            let page = client()
                .get(sluice.url("/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (sample(&page, "sluice_lane_failed_jobs", &[hook]) == Some(1.0)
                && sample(&page, "sluice_lane_depth", &[hook]) == Some(2.0))
            .then_some(page)
        },
    )
    .await;
    assert!(
        sample(&page, "sluice_lane_oldest_age_seconds", &[hook]).is_some_and(|age| age > 0.0),
        "{page}"
    );
    // The lane sat at the head when those two were committed: it took them from what ingest
    // handed over, not from the store.
    assert!(
        sample(&page, "sluice_log_reads_total", &[hook, r#"from="ingest""#])
            .is_some_and(|n| n >= 1.0),
        "{page}"
    );
}

/// Every metric the sample Grafana dashboard (`docs/grafana-dashboard.json`) queries is one the
/// host exports, so the dashboard cannot drift from the code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_queries_only_exported_metrics() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana-dashboard.json");
    let text = std::fs::read_to_string(path).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let mut names = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("sluice_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                // Histograms are queried through their series.
                let base = name
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_count")
                    .trim_end_matches("_sum");
                names.insert(base.to_string());
            }
        }
    }
    assert!(names.len() >= 8, "{names:?}");

    // Everything is accepted except the user `stuck`, whose events then wait.
    let sink = Sink::with(SECRET, |r| if r.user == "stuck" { 503 } else { 200 });
    let sluice = Sluice::start(&webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, ""));
    let pool = db(&sluice).await;
    post_all(&sluice, &events(2, 4), 4).await;
    wait_all_delivered(&pool, "hook", 4).await;
    let page = metrics_page(&sluice).await;
    for name in &names {
        assert!(
            page.contains(&format!("# TYPE {name} ")),
            "the dashboard queries {name}, which the host does not export:\n{page}"
        );
    }
}
