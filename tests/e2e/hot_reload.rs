//! Hot reload: plugins dropped into, replaced in and removed from the running host's plugins
//! directory, with nothing lost, repeated or reordered; bad files and bad configs rejected by
//! name while the old version keeps serving.

use std::path::Path;
use std::time::Duration;

use crate::harness::*;

/// Writes `bytes` to `path` the safe way (a rename), as an operator's deploy would.
fn put(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The same component with a custom section appended: another file (another sha256), the
/// same behaviour.
fn another_build(wasm: &[u8]) -> Vec<u8> {
    let name = b"sluice-test";
    let payload = b"v2";
    let mut out = wasm.to_vec();
    out.push(0); // custom section
    out.push((1 + name.len() + payload.len()) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(payload);
    out
}

async fn log_appears(sluice: &Sluice, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    wait_until(Duration::from_secs(20), what, || async {
        sluice.find_log(&pred).map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_replaced_rejected_removed_and_added_while_delivering() {
    // A slow, serial receiver (2 ms a request), so that the swap lands mid-delivery.
    let sink = Sink::with(SECRET, |_| {
        std::thread::sleep(Duration::from_millis(2));
        200
    });
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugins::own_plugins_dir(dir);
    let wasm = std::fs::read(plugins.join("webhook.wasm")).unwrap();
    let manifest = std::fs::read(plugins.join("webhook.toml")).unwrap();

    // A second destination whose config the plugin refuses: reported at start, by name.
    let body = format!(
        "{}\n[[destination]]\nid = \"misconfigured\"\nworkspace = \"acme\"\nplugin = \"webhook\"\nconfig = {{ url = \"{}\", secret = \"{SECRET}\", timeout_ms = \"soon\" }}\n",
        webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, ""),
        sink.url
    )
    .replace(
        "destinations = [\"hook\"]",
        "destinations = [\"hook\", \"misconfigured\"]",
    );
    let config = plugins::own_plugins(&process::config_text(&body));
    let sluice = Sluice::start_in(dir, &config, &[]);
    let pool = db(&sluice).await;

    let refused = sluice
        .find_log(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("plugin rejected for this destination"))
                && l["fields"]["destination"] == "misconfigured"
        })
        .unwrap_or_else(|| panic!("no configure error at start:\n{}", sluice.log_text()));
    let reason = refused["fields"]["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("timeout_ms"),
        "the field is named: {reason}"
    );
    let recorded: Option<String> = sqlx::query_scalar(
        "SELECT plugin_error FROM lane_status WHERE destination_id = 'misconfigured'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        recorded
            .as_deref()
            .is_some_and(|e| e.contains("timeout_ms")),
        "visible in lane_status: {recorded:?}"
    );

    // Replace the plugin mid-delivery.
    post_all(&sluice, &events(20, 2000), 100).await;
    wait_until(Duration::from_secs(30), "deliveries to start", || async {
        (sink.accepted().len() >= 100).then_some(())
    })
    .await;
    let v2 = another_build(&wasm);
    put(&plugins.join("webhook.wasm"), &v2);
    log_appears(&sluice, "the new version to load", |l| {
        l["fields"]["message"] == "plugin loaded" && l["fields"]["replaces"] != "-"
    })
    .await;
    let in_flight_at_swap = sink.accepted().len();
    assert!(
        in_flight_at_swap < 2000,
        "the swap landed mid-delivery ({in_flight_at_swap} delivered)"
    );
    wait_until(Duration::from_secs(60), "2000 deliveries", || async {
        (sink.accepted().len() >= 2000).then_some(())
    })
    .await;
    assert_in_order_exactly_once(&sink.received(), 20, 100);
    let sha: String =
        sqlx::query_scalar("SELECT sha256 FROM host_plugins WHERE plugin = 'webhook'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let lane_sha: Option<String> =
        sqlx::query_scalar("SELECT plugin_sha256 FROM lane_status WHERE destination_id = 'hook'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(lane_sha.as_deref(), Some(sha.as_str()));
    let v1_sha: String = sluice
        .find_log(|l| l["fields"]["message"] == "plugin loaded" && l["fields"]["replaces"] == "-")
        .and_then(|l| l["fields"]["sha256"].as_str().map(str::to_string))
        .unwrap();
    assert!(!sha.starts_with(&v1_sha), "the host runs the new version");

    // A broken file is rejected; the version serving keeps serving.
    put(
        &plugins.join("webhook.wasm"),
        b"\0asm this is not a component",
    );
    log_appears(&sluice, "the broken file to be rejected", |l| {
        l["fields"]["message"] == "new plugin file rejected; the previous version keeps serving"
    })
    .await;
    let more: Vec<_> = (0..20).map(|u| track(&format!("user-{u}"), 100)).collect();
    post_all(&sluice, &more, 20).await;
    wait_until(
        Duration::from_secs(30),
        "deliveries after the bad file",
        || async { (sink.accepted().len() >= 2020).then_some(()) },
    )
    .await;

    // Removed: the destination pauses, its jobs stay pending.
    std::fs::remove_file(plugins.join("webhook.wasm")).unwrap();
    std::fs::remove_file(plugins.join("webhook.toml")).unwrap();
    log_appears(&sluice, "the plugin to be removed", |l| {
        l["fields"]["message"]
            == "plugin removed; its destinations pause and their jobs stay pending"
    })
    .await;
    let later: Vec<_> = (0..20).map(|u| track(&format!("user-{u}"), 101)).collect();
    post_all(&sluice, &later, 20).await;
    let waiting: i64 = wait_until(Duration::from_secs(20), "the jobs to be stored", || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pending_jobs WHERE destination_id = 'hook'")
                .fetch_one(&pool)
                .await
                .unwrap();
        (n == 20).then_some(n)
    })
    .await;
    assert_eq!(waiting, 20);
    assert_eq!(
        sink.accepted().len(),
        2020,
        "nothing is sent without a plugin"
    );

    // Added back: the waiting jobs go, in order.
    put(&plugins.join("webhook.toml"), &manifest);
    put(&plugins.join("webhook.wasm"), &wasm);
    wait_until(
        Duration::from_secs(30),
        "deliveries after the plugin came back",
        || async { (sink.accepted().len() >= 2040).then_some(()) },
    )
    .await;
    assert_in_order_exactly_once(&sink.received(), 20, 102);
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pending_jobs WHERE destination_id = 'misconfigured'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        pending, 2040,
        "the misconfigured destination delivered nothing"
    );
}
