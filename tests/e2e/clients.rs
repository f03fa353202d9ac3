//! A real client SDK against the ingest API.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::harness::*;

/// A Python with rudder-sdk-python: the system's if it has the SDK, else a virtualenv under
/// `target/e2e/venv` that this test creates once (so `cargo test` needs no setup step).
fn python_with_sdk() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let has_sdk = |python: &PathBuf| {
                Command::new(python)
                    .args(["-c", "import rudderstack.analytics"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            let system = PathBuf::from("python3");
            if has_sdk(&system) {
                return system;
            }
            let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/e2e/venv");
            let python = venv.join("bin/python3");
            if !has_sdk(&python) {
                let made = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv)
                    .status()
                    .expect("run python3 -m venv");
                assert!(
                    made.success(),
                    "creating a virtualenv at {}",
                    venv.display()
                );
                let installed = Command::new(&python)
                    .args(["-m", "pip", "install", "--quiet", "rudder-sdk-python"])
                    .status()
                    .expect("run pip");
                assert!(installed.success(), "pip install rudder-sdk-python failed");
            }
            python
        })
        .clone()
}

/// rudder-sdk-python (from PyPI): gzip + Basic auth to /v1/batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rudder_sdk_python_events_are_delivered() {
    let sink = Sink::ok(SECRET);
    let sluice = Sluice::start(&webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, ""));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/e2e/clients/rudder_python.py"
    );
    let out = Command::new(python_with_sdk())
        .arg(script)
        .arg(WRITE_KEY)
        .arg(format!("http://{}", sluice.addr))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "rudder-sdk-python client failed:\n{}\n{}",
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
