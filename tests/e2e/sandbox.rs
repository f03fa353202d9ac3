//! The sandbox: misbehaving plugins cost their own jobs a retry, never the host or other
//! destinations.

use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_allocating_panicking_and_denied_plugins_are_stopped_with_their_codes() {
    let sink = Sink::ok(SECRET);
    let slow_retry = r#"{ min_backoff = "1h", max_backoff = "2h" }"#;
    let mut extra = String::new();
    for mode in ["loop", "alloc", "panic", "denied"] {
        extra.push_str(&format!(
            "\n[[destination]]\nid = \"{mode}\"\nworkspace = \"acme\"\nplugin = \"misbehave\"\nconfig = {{ mode = \"{mode}\", url = \"{}\" }}\nretry = {slow_retry}\n",
            sink.url
        ));
    }
    let config = webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, &extra).replace(
        r#"destinations = ["hook"]"#,
        r#"destinations = ["hook", "loop", "alloc", "panic", "denied"]"#,
    );
    let sluice = Sluice::start(&config);
    post_all(&sluice, &events(4, 40), 40).await;

    // The healthy destination delivers everything, in order, despite its misbehaving neighbours.
    wait_until(Duration::from_secs(60), "40 webhook deliveries", || async {
        (sink.accepted().len() >= 40).then_some(())
    })
    .await;
    assert_in_order_exactly_once(&sink.received(), 4, 10);

    let pool = db(&sluice).await;
    for (dest, code, text) in [
        ("loop", "plugin_timeout", "deadline"),
        ("alloc", "plugin_memory", "memory limit"),
        ("panic", "plugin_trap", "deliberate panic"),
        ("denied", "host_denied", "forbidden.example.invalid"),
    ] {
        let rows: Vec<(String, String, i32)> =
            wait_until(Duration::from_secs(60), code, || async {
                let rows: Vec<(String, String, i32)> = sqlx::query_as(
                "SELECT error_code, error_text, attempt FROM failed_jobs WHERE destination_id = $1",
            )
            .bind(dest)
            .fetch_all(&pool)
            .await
            .unwrap();
                // One failed head per user; the rest of each user's jobs wait behind it.
                (rows.len() == 4).then_some(rows)
            })
            .await;
        for (got_code, got_text, attempt) in rows {
            assert_eq!(got_code, code, "{dest}: {got_text}");
            assert!(
                got_text.contains(text),
                "{dest}: `{got_text}` should mention `{text}`"
            );
            assert_eq!(attempt, 1);
        }
    }
    let health = client().get(sluice.url("/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200, "the host is still serving");
}

/// `transform-batch` carries a call's jobs into the guest at once; a trap there must still cost
/// only the job that caused it (the host transforms the call's jobs one by one after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_a_batched_transform_costs_only_the_job_that_caused_it() {
    let sink = Sink::ok(SECRET);
    let extra = format!(
        "\n[[destination]]\nid = \"picky\"\nworkspace = \"acme\"\nplugin = \"misbehave\"\nconfig = {{ mode = \"panic\", only_event = \"Boom\", url = \"{}\" }}\nretry = {{ min_backoff = \"1h\", max_backoff = \"2h\" }}\n",
        sink.url
    );
    let config = webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, &extra)
        .replace(r#"destinations = ["hook"]"#, r#"destinations = ["picky"]"#);
    let sluice = Sluice::start(&config);
    // Eight users' first events in one request: one claim, one call of eight jobs.
    let mut batch = events(8, 8);
    batch[3]["event"] = "Boom".into();
    post_all(&sluice, &batch, 8).await;

    let pool = db(&sluice).await;
    let failed: Vec<(String, String, i32)> =
        wait_until(Duration::from_secs(30), "the one failed job", || async {
            let states = states(&pool, "picky").await;
            if states.get("delivered") != Some(&7) {
                return None;
            }
            let rows: Vec<(String, String, i32)> = sqlx::query_as(
                "SELECT message_id, error_code, attempt FROM failed_jobs WHERE destination_id = 'picky'",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            (!rows.is_empty()).then_some(rows)
        })
        .await;
    assert_eq!(
        failed,
        vec![("user-3-0".to_string(), "plugin_trap".to_string(), 1)],
        "only the Boom event's job failed, once"
    );
    assert!(
        sluice
            .find_log(|l| l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("transform-batch failed")))
            .is_some(),
        "the jobs shared a call whose batch trapped:\n{}",
        sluice.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_plugin_file_is_rejected_by_name_and_the_rest_keep_serving() {
    let sink = Sink::ok(SECRET);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugins::own_plugins_dir(dir);
    let shipped = plugins::plugins_dir();
    std::fs::write(plugins.join("broken.wasm"), b"\0asm garbage").unwrap();
    std::fs::write(plugins.join("broken.toml"), "name = \"broken\"\n").unwrap();
    std::fs::copy(
        shipped.join("webhook.wasm"),
        plugins.join("nomanifest.wasm"),
    )
    .unwrap();
    std::fs::copy(
        plugins::wrong_world_wasm(),
        plugins.join("wrong-world.wasm"),
    )
    .unwrap();
    std::fs::write(plugins.join("wrong-world.toml"), "name = \"wrong-world\"\n").unwrap();

    let config = plugins::own_plugins(&process::config_text(&webhook_config(
        &sink.url,
        r#"{ min_backoff = "1s" }"#,
        "",
    )));
    let sluice = Sluice::start_in(dir, &config, &[]);
    let errors: Vec<String> = ["broken.wasm", "nomanifest.wasm", "wrong-world.wasm"]
        .iter()
        .map(|f| {
            sluice
                .find_log(|l| l["fields"]["message"] == "plugin not loaded" && l["fields"]["error"].as_str().is_some_and(|e| e.contains(f)))
                .unwrap_or_else(|| panic!("no load error for {f}:\n{}", sluice.log_text()))["fields"]["error"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        errors[0].contains("not a valid WebAssembly component"),
        "{}",
        errors[0]
    );
    assert!(errors[1].contains("manifest"), "{}", errors[1]);
    assert!(
        errors[2].contains("does not match the `sluice:destination/destination@0.1.1` world")
            && errors[2].contains("does not have export `send`"),
        "the WIT mismatch is named: {}",
        errors[2]
    );

    post_all(&sluice, &events(2, 4), 4).await;
    wait_until(
        Duration::from_secs(30),
        "deliveries through the good plugin",
        || async { (sink.accepted().len() >= 4).then_some(()) },
    )
    .await;
}
