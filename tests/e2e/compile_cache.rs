//! The compile cache: a host's second start loads its plugins from wasmtime's cache in
//! `server.plugin_cache_dir` instead of compiling them again.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// How many `plugin compiled` log lines for `plugin` say it was compiled, and how many that
/// it came from the cache (once there is one).
fn compiled(sluice: &mut Sluice, plugin: &str) -> (usize, usize) {
    let is =
        |l: &Value| l["fields"]["message"] == "plugin compiled" && l["fields"]["plugin"] == plugin;
    sluice.wait_for_log(Duration::from_secs(60), is);
    let count = |cached: bool| {
        sluice.count_log(|l| is(l) && l["fields"]["from_cache"].as_bool() == Some(cached))
    };
    (count(false), count(true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_loads_the_plugin_from_the_compile_cache() {
    let sink = Sink::ok(SECRET);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    plugins::own_plugins_dir(dir);
    let cache = dir.join("compile-cache");
    let config = plugins::own_plugins(&process::config_text(&webhook_config(
        &sink.url,
        r#"{ min_backoff = "1s" }"#,
        "",
    )))
    .replace(
        &format!(
            "plugin_cache_dir = \"{}\"",
            plugins::plugin_cache_dir().display()
        ),
        &format!("plugin_cache_dir = \"{}\"", cache.display()),
    );
    assert!(config.contains("compile-cache"), "{config}");

    let mut sluice = Sluice::start_in(dir, &config, &[]);
    assert_eq!(
        compiled(&mut sluice, "webhook"),
        (1, 0),
        "an empty cache: compiled"
    );
    assert!(
        !walk(&cache).is_empty(),
        "the cache holds the compiled plugin"
    );

    sluice.stop();
    sluice.restart();
    assert_eq!(
        compiled(&mut sluice, "webhook"),
        (0, 1),
        "the second start found it in the cache"
    );
    post_all(&sluice, &events(1, 2), 2).await;
    let pool = db(&sluice).await;
    wait_all_delivered(&pool, "hook", 2).await;
}

/// Every file below `dir`, sorted.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}
