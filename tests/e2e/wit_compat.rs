//! WIT evolution (wit/README.md): plugins built against any 0.1.x of the contract keep loading
//! and delivering on the 0.2 host, which links the frozen 0.1.1 world beside 0.2 and calls
//! their per-job `transform` where a 0.2 plugin gets `transform-batch`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_wit_0_1_0_still_loads_and_delivers() {
    let tmp = tempfile::tempdir().unwrap();
    let sluice = deliver_through_frozen(tmp.path(), "0.1.0", 4).await;
    // Its imports (`log@0.1.0`) resolved to the host's 0.1.1 interfaces.
    wait_for_log(&sluice, "wit-0.1.0: sending").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_wit_0_1_1_still_loads_and_delivers() {
    let tmp = tempfile::tempdir().unwrap();
    let sluice = deliver_through_frozen(tmp.path(), "0.1.1", 4).await;
    // `log.enabled`, 0.1.1's addition, answered (the line is logged only if it said yes).
    wait_for_log(&sluice, "wit-0.1.1: sending").await;
    // Its per-job `transform` ran once per event (the host does not batch a 0.1 plugin). The
    // log reaches us through a reader thread, so the last batch's lines may trail delivery:
    // wait for them, then require one line per job, no job transformed twice.
    let transformed = || {
        sluice.logs(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("wit-0.1.1: transform "))
        })
    };
    wait_until(
        Duration::from_secs(10),
        "a transform line per event",
        || async { (transformed().len() >= 4).then_some(()) },
    )
    .await;
    let lines = transformed();
    let jobs: BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    assert_eq!((lines.len(), jobs.len()), (4, 4), "{}", sluice.log_text());
}

/// Starts a host in `dir` whose destination `old` runs the plugin built against WIT `version`,
/// posts `n` events and waits until all are delivered, in the store and at the sink.
async fn deliver_through_frozen(dir: &Path, version: &str, n: usize) -> Sluice {
    let name = format!("wit-{}", version.replace('.', "-"));
    let sink = Sink::ok(SECRET);
    let plugins = plugins::own_plugins_dir(dir);
    let built = plugins::frozen_plugin_dir(version);
    for ext in ["wasm", "toml"] {
        let file = format!("{name}.{ext}");
        std::fs::copy(built.join(&file), plugins.join(&file)).unwrap();
    }
    let config = plugins::own_plugins(&process::config_text(&webhook_config(
        &sink.url,
        r#"{ min_backoff = "1s" }"#,
        &format!(
            "\n[[destination]]\nid = \"old\"\nworkspace = \"acme\"\nplugin = \"{name}\"\nconfig = {{ url = \"{}\" }}\n",
            sink.url
        ),
    )))
    .replace(r#"destinations = ["hook"]"#, r#"destinations = ["old"]"#);
    let sluice = Sluice::start_in(dir, &config, &[]);
    assert!(
        sluice
            .find_log(|l| l["fields"]["message"] == "plugin not loaded")
            .is_none(),
        "every plugin loaded:\n{}",
        sluice.log_text()
    );
    post_all(&sluice, &events(2, n), n).await;
    let pool = db(&sluice).await;
    wait_all_delivered(&pool, "old", n as i64).await;
    assert_eq!(sink.accepted().len(), n);
    sluice
}

async fn wait_for_log(sluice: &Sluice, message: &str) {
    wait_until(Duration::from_secs(10), message, || async {
        sluice
            .find_log(|l| l["fields"]["message"] == message)
            .map(|_| ())
    })
    .await;
}
