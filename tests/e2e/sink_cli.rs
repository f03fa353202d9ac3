//! `sluice sink`, the demo's receiver: verifies Standard Webhooks deliveries with the code the
//! webhook plugin signs with, refuses replays, and takes its secret from a file or the
//! environment rather than the command line.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_sdk::webhooks::Secret;

use crate::harness::client;

const SECRET: &str = "whsec_c2luay1zZWNyZXQ="; // base64("sink-secret")

struct SinkProcess {
    child: Child,
    url: String,
    /// Kept open: the sink prints a line per delivery, and a closed pipe would fail it.
    _stdout: BufReader<ChildStdout>,
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `sluice sink --listen 127.0.0.1:0 ARGS` and reads where it listens.
fn start(args: &[&str], env: &[(&str, &str)]) -> SinkProcess {
    let mut cmd = Command::new(crate::harness::sluice_bin());
    cmd.args(["sink", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("SLUICE_SINK_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start sluice sink");
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    stdout.read_line(&mut line).expect("read the first line");
    let url = line
        .trim()
        .strip_prefix("sink listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    SinkProcess {
        child,
        url,
        _stdout: stdout,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// POSTs `body` signed with `secret` for `timestamp`; returns the status.
async fn post(url: &str, secret: &str, timestamp: u64, body: &str, sent_body: &str) -> u16 {
    let signature =
        Secret::parse(secret)
            .expect("valid secret")
            .sign("msg_1", timestamp, body.as_bytes());
    client()
        .post(format!("{url}/hook"))
        .header("webhook-id", "msg_1")
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(sent_body.to_string())
        .send()
        .await
        .expect("post to the sink")
        .status()
        .as_u16()
}

#[tokio::test]
async fn sink_verifies_with_a_secret_file_and_refuses_tampering_and_replays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secret");
    std::fs::write(&path, format!("{SECRET}\n")).expect("write the secret");
    let sink = start(&["--secret-file", path.to_str().expect("utf-8 path")], &[]);
    let body = r#"{"type":"track","userId":"u1"}"#;
    assert_eq!(post(&sink.url, SECRET, now(), body, body).await, 200);
    assert_eq!(
        post(&sink.url, SECRET, now(), body, "{}").await,
        401,
        "tampered body"
    );
    assert_eq!(
        post(&sink.url, "whsec_b3RoZXI=", now(), body, body).await,
        401,
        "other secret"
    );
    assert_eq!(
        post(&sink.url, SECRET, now() - 3600, body, body).await,
        401,
        "an hour-old replay"
    );
    assert_eq!(
        post(&sink.url, SECRET, 1, body, body).await,
        401,
        "timestamp 1"
    );
}

#[tokio::test]
async fn sink_reads_the_secret_from_the_environment() {
    let sink = start(&[], &[("SLUICE_SINK_SECRET", SECRET)]);
    assert_eq!(post(&sink.url, SECRET, now(), "{}", "{}").await, 200);
}

#[test]
fn sink_without_a_secret_says_how_to_give_one() {
    let out = Command::new(crate::harness::sluice_bin())
        .args(["sink", "--listen", "127.0.0.1:0"])
        .env_remove("SLUICE_SINK_SECRET")
        .output()
        .expect("run sluice sink");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--secret-file"), "{stderr}");

    let help = Command::new(crate::harness::sluice_bin())
        .args(["sink", "--help"])
        .output()
        .expect("run sluice sink --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for mention in ["--secret-file", "SLUICE_SINK_SECRET", "5 minutes"] {
        assert!(help.contains(mention), "--help lacks {mention}: {help}");
    }
}
