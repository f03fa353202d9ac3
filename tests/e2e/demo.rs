//! `sluice demo`, the README's one command: it builds the webhook plugin, starts PostgreSQL,
//! its sink and the host, delivers a signed event where it can be seen, and serves the
//! operator page with the token it prints.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::*;

/// A port free right now on loopback (the demo takes fixed addresses).
fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_delivers_a_signed_event_and_serves_the_operator_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // The embedded server runs as `postgres` when we are root: it must reach the folder.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    let (listen, sink, admin) = (free_addr(), free_addr(), free_addr());
    let mut child = Command::new(crate::harness::sluice_bin())
        .args(["demo", "--dir"])
        .arg(dir.path().join("demo"))
        .args(["--listen", &listen.to_string()])
        .args(["--sink", &sink.to_string()])
        .args(["--admin", &admin.to_string()])
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sluice demo");
    let out = Arc::new(Mutex::new(Vec::<String>::new()));
    let lines = out.clone();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    let printed = || out.lock().unwrap().join("\n");

    // The banner names the token; the host is up once ingest answers.
    let token = wait_until(Duration::from_secs(900), "the demo's banner", || async {
        let text = printed();
        let line = text.lines().find(|l| l.contains("operator page:"))?;
        let token = line
            .split("(token: ")
            .nth(1)?
            .trim_end_matches(')')
            .to_string();
        Some(token)
    })
    .await;
    let event = serde_json::json!({ "batch": [
        { "type": "track", "userId": "u1", "event": "Signed Up" }
    ]});
    wait_until(Duration::from_secs(120), "the event accepted", || async {
        let resp = client()
            .post(format!("http://{listen}/v1/batch"))
            .basic_auth("wk_demo", Some(""))
            .json(&event)
            .send()
            .await
            .ok()?;
        resp.status().is_success().then_some(())
    })
    .await;
    wait_until(Duration::from_secs(60), "the sink's line", || async {
        printed()
            .lines()
            .any(|l| l.contains("event=Signed Up") && l.contains("signature=valid"))
            .then_some(())
    })
    .await;

    // The operator page and the API behind it, with the printed token.
    let page = client()
        .get(format!("http://{admin}/"))
        .send()
        .await
        .expect("the page");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));
    let me: serde_json::Value = client()
        .get(format!("http://{admin}/api/v1/whoami"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("whoami")
        .json()
        .await
        .expect("JSON");
    assert_eq!(me["scope"], "operator", "{me}");

    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "the demo stops cleanly on SIGTERM: {status}\n{}",
        printed()
    );
}
