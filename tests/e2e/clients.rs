//! A real client SDK against the ingest API.

use std::process::Command;
use std::time::Duration;

use crate::harness::*;

/// rudder-sdk-python (from PyPI; `.ci/run` installs it): gzip + Basic auth to /v1/batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rudder_sdk_python_events_are_delivered() {
    let sink = Sink::ok(SECRET);
    let sluice = Sluice::start(&webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, ""));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/e2e/clients/rudder_python.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(WRITE_KEY)
        .arg(format!("http://{}", sluice.addr))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "rudder-sdk-python client failed (pip install rudder-sdk-python):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(30), "the SDK's 6 events", || async {
        (sink.accepted().len() >= 6).then_some(())
    })
    .await;
    let received = sink.accepted();
    let seqs: Vec<i64> = received
        .iter()
        .filter(|r| r.user == "py-user")
        .map(|r| r.seq)
        .collect();
    assert_eq!(
        seqs,
        vec![0, 1, 2, 3, 4, -1],
        "5 tracks in order, then the identify"
    );
    assert!(received.iter().all(|r| r.signature_ok));
}
