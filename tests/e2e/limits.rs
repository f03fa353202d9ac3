//! The manifest's sandbox limits, each observed from outside: at a receiver, in the store, in
//! the host's log. (Memory and deadline: `sandbox.rs`.)

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::harness::*;

/// Sources and destinations: one source feeding every `(id, plugin, config)`.
fn body(dests: &[(&str, &str, Value)]) -> String {
    let mut text = String::new();
    for (id, plugin, config) in dests {
        // TOML inline tables read JSON objects of strings and numbers as they are.
        let config = config.to_string().replace("\":", "\" =");
        text.push_str(&format!(
            "\n[[destination]]\nid = \"{id}\"\nworkspace = \"acme\"\nplugin = \"{plugin}\"\nconfig = {config}\nretry = {{ min_backoff = \"1h\", max_backoff = \"2h\" }}\n"
        ));
    }
    let ids: Vec<String> = dests.iter().map(|(id, _, _)| format!("\"{id}\"")).collect();
    text.push_str(&format!(
        "\n[[source]]\nid = \"web\"\nworkspace = \"acme\"\nwrite_key = \"{WRITE_KEY}\"\ndestinations = [{}]\n",
        ids.join(", ")
    ));
    text
}

/// Starts sluice in `dir` (whose `plugins/` the test filled) with `dests`.
fn start(dir: &std::path::Path, dests: &[(&str, &str, Value)]) -> Sluice {
    let config = plugins::own_plugins(&process::config_text(&body(dests)));
    Sluice::start_in(dir, &config, &[])
}

/// The error code and text of `destination`'s first job once it has one.
async fn first_error(pool: &PgPool, destination: &str) -> (String, String) {
    wait_until(
        Duration::from_secs(60),
        &format!("an error for {destination}"),
        || async {
            sqlx::query_as::<_, (String, String)>(
                "SELECT error_code, error_text FROM job_overview
                 WHERE destination_id = $1 AND error_code IS NOT NULL LIMIT 1",
            )
            .bind(destination)
            .fetch_optional(pool)
            .await
            .unwrap()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_carry_at_most_batch_size_jobs_and_at_most_max_in_flight_run_at_once() {
    let probe = Probe::start(ProbeOptions::default());
    let tmp = tempfile::tempdir().unwrap();
    let plugins = plugins::own_plugins_dir(tmp.path());
    plugins::variant(&plugins, "misbehave", "batched", |m| {
        m.insert("batch_size".into(), 3.into());
        m.insert("max_in_flight".into(), 2.into());
    });
    let sluice = start(
        tmp.path(),
        &[(
            "batched",
            "batched",
            json!({"mode": "ok", "url": probe.url("slow")}),
        )],
    );
    // 30 users: plenty of keys ready at once, so calls fill up and run side by side.
    post_all(&sluice, &events(30, 60), 60).await;
    let pool = db(&sluice).await;
    wait_all_delivered(&pool, "batched", 60).await;
    assert_eq!(
        probe.max_batch(),
        3,
        "calls are filled up to batch_size, never beyond"
    );
    assert_eq!(
        probe.max_in_flight(),
        2,
        "max_in_flight calls run at once, never more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_hosts_patterns_admit_exactly_what_they_name() {
    let probe = Probe::start(ProbeOptions::default());
    let port = probe.port;
    let tmp = tempfile::tempdir().unwrap();
    let plugins = plugins::own_plugins_dir(tmp.path());
    plugins::variant(&plugins, "misbehave", "misbehave", |_| {});
    let hosts = |list: Vec<String>| {
        move |m: &mut toml::Table| {
            let list = list.into_iter().map(toml::Value::from).collect();
            m.insert("allowed_hosts".into(), toml::Value::Array(list));
        }
    };
    // `*.localhost` names resolve to loopback (RFC 6761), which this test's policy allows.
    plugins::variant(
        &plugins,
        "misbehave",
        "exact",
        hosts(vec!["localhost".into()]),
    );
    plugins::variant(
        &plugins,
        "misbehave",
        "wild",
        hosts(vec!["*.localhost".into()]),
    );
    plugins::variant(
        &plugins,
        "misbehave",
        "port",
        hosts(vec![format!("localhost:{port}")]),
    );
    let ok = |url: String| json!({"mode": "ok", "url": url});
    let allowed = [
        (
            "exact-ok",
            "exact",
            ok(format!("http://localhost:{port}/ok")),
        ),
        (
            "wild-ok",
            "wild",
            ok(format!("http://api.localhost:{port}/ok")),
        ),
        ("port-ok", "port", ok(format!("http://localhost:{port}/ok"))),
        // The shipped manifest's `{{ config.url }}`: the configured origin.
        ("template-ok", "misbehave", ok(probe.url("ok"))),
    ];
    let refused = [
        ("exact-other", "exact", ok(probe.url("ok")), "127.0.0.1"),
        (
            "wild-bare",
            "wild",
            ok(format!("http://localhost:{port}/ok")),
            "localhost",
        ),
        (
            "port-other",
            "port",
            ok(format!("http://localhost:{}/ok", port.wrapping_add(1))),
            "localhost",
        ),
    ];
    let mut dests: Vec<(&str, &str, Value)> = allowed
        .iter()
        .map(|(id, p, c)| (*id, *p, c.clone()))
        .collect();
    dests.extend(refused.iter().map(|(id, p, c, _)| (*id, *p, c.clone())));
    let sluice = start(tmp.path(), &dests);
    post_all(&sluice, &events(1, 1), 1).await;
    let pool = db(&sluice).await;
    for (id, _, _) in &allowed {
        wait_all_delivered(&pool, id, 1).await;
    }
    for (id, _, _, host) in &refused {
        let (code, text) = first_error(&pool, id).await;
        assert_eq!(code, "host_denied", "{id}: {text}");
        assert!(
            text.contains(&format!("host `{host}`")),
            "{id}: the refusal names the host: {text}"
        );
    }
    assert_eq!(
        probe.requests(),
        allowed.len(),
        "refused requests never left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_size_http_timeout_and_the_log_budget_hold_per_call() {
    let probe = Probe::start(ProbeOptions {
        big_body: 1 << 20,
        ..ProbeOptions::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let plugins = plugins::own_plugins_dir(tmp.path());
    plugins::variant(&plugins, "misbehave", "misbehave", |_| {});
    plugins::variant(&plugins, "misbehave", "tight", |m| {
        let limits = m
            .entry("limits")
            .or_insert_with(|| toml::Table::new().into());
        let limits = limits.as_table_mut().expect("[limits] table");
        limits.insert("response_size".into(), "64KiB".into());
        limits.insert("http_timeout".into(), "1s".into());
    });
    let sluice = start(
        tmp.path(),
        &[
            (
                "big",
                "tight",
                json!({"mode": "ok", "url": probe.url("big")}),
            ),
            // The request asks for an hour; the manifest's http_timeout clamps it to 1 s.
            (
                "hang",
                "tight",
                json!({"mode": "ok", "url": probe.url("hang"), "timeout_ms": 3_600_000}),
            ),
            (
                "chatty",
                "misbehave",
                json!({"mode": "chatty", "url": probe.url("ok")}),
            ),
        ],
    );
    post_all(&sluice, &events(1, 2), 2).await;
    let pool = db(&sluice).await;

    let (code, text) = first_error(&pool, "big").await;
    assert_eq!(code, "http_response_too_large", "{text}");
    assert!(
        text.contains("limits.response_size of 65536 bytes"),
        "{text}"
    );
    let (code, text) = first_error(&pool, "hang").await;
    assert_eq!(code, "http_timeout", "{text}");

    // Each transform logs 150 lines: 100 are kept, then one line counts the rest.
    wait_all_delivered(&pool, "chatty", 2).await;
    let is = |l: &Value, text: &str| {
        l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(text))
            && l["fields"]["destination"] == "chatty"
    };
    let kept = sluice.count_log(|l| is(l, "misbehave: chatter"));
    let dropped = sluice.count_log(|l| is(l, "50 log lines dropped"));
    assert_eq!((kept, dropped), (200, 2), "two transforms, each capped");
}
