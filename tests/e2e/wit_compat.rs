//! WIT evolution (wit/README.md): a plugin built against an older 0.1.x of the contract keeps
//! loading and delivering on the current host.

use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_wit_0_1_0_still_loads_and_delivers() {
    let sink = Sink::ok(SECRET);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugins::own_plugins_dir(dir);
    let built = plugins::wit_0_1_0_dir();
    for file in ["wit-0-1-0.wasm", "wit-0-1-0.toml"] {
        std::fs::copy(built.join(file), plugins.join(file)).unwrap();
    }
    let config = plugins::own_plugins(&process::config_text(&webhook_config(
        &sink.url,
        r#"{ min_backoff = "1s" }"#,
        &format!(
            "\n[[destination]]\nid = \"old\"\nworkspace = \"acme\"\nplugin = \"wit-0-1-0\"\nconfig = {{ url = \"{}\" }}\n",
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
    post_all(&sluice, &events(2, 4), 4).await;
    let pool = db(&sluice).await;
    wait_all_delivered(&pool, "old", 4).await;
    assert_eq!(sink.accepted().len(), 4);
    // Its imports (`log@0.1.0`) resolved to the host's 0.1.1 interfaces.
    wait_until(Duration::from_secs(10), "its log line", || async {
        sluice
            .find_log(|l| l["fields"]["message"] == "wit-0.1.0: sending")
            .map(|_| ())
    })
    .await;
}
