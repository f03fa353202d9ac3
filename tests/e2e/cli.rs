//! The command line around the server: config errors, missing Postgres, an external database,
//! and `sluice plugin call`.

use std::process::Command;
use std::time::Duration;

use crate::harness::*;

fn sluice_cmd() -> Command {
    let mut cmd = Command::new(crate::harness::sluice_bin());
    cmd.env_remove("DATABASE_URL");
    cmd
}

#[test]
fn a_wrong_config_fails_at_start_naming_file_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sluice.toml");
    std::fs::write(
        &path,
        "[[source]]\nid = \"web\"\nworkspace = \"acme\"\nwrite_key = \"k\"\ndestinations = [\"nope\"]\n",
    )
    .unwrap();
    let out = sluice_cmd()
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:5: source[0].destinations: unknown destination `nope`",
            path.display()
        )),
        "{stderr}"
    );
}

#[test]
fn missing_postgres_binaries_are_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sluice.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let out = sluice_cmd()
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .env("SLUICE_PG_BIN", tmp.path().join("no-such-dir"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no PostgreSQL server binaries found"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_url_uses_that_server() {
    // A first sluice provides a Postgres; a second one is pointed at another database in it.
    let sink = Sink::ok(SECRET);
    let host = Sluice::start(&webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, ""));
    let pool = db(&host).await;
    sqlx::query("CREATE DATABASE other")
        .execute(&pool)
        .await
        .unwrap();
    let other_url = host.db_url.replace("/postgres?", "/other?");

    let tmp = tempfile::tempdir().unwrap();
    let config = process::config_text(&webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, ""));
    let second = Sluice::start_in(tmp.path(), &config, &[("DATABASE_URL", &other_url)]);
    assert_eq!(second.db_url, other_url);
    assert!(
        !tmp.path().join("data/postgres").exists(),
        "no embedded cluster was created"
    );

    post_all(&second, &events(3, 9), 9).await;
    wait_until(Duration::from_secs(30), "9 deliveries", || async {
        (sink.accepted().len() >= 9).then_some(())
    })
    .await;
    let other = sqlx::PgPool::connect(&other_url).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&other)
        .await
        .unwrap();
    assert_eq!(n, 9);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "the first sluice's database is untouched");
}

#[test]
fn plugin_call_runs_transform_under_the_sandbox() {
    let wasm = plugins::plugins_dir().join("webhook.wasm");
    let out = sluice_cmd()
        .args(["plugin", "call"])
        .arg(&wasm)
        .args([
            "--config",
            r#"{"url":"http://127.0.0.1:9/hook","secret":"s"}"#,
        ])
        .args(["--event", r#"{"type":"track","userId":"u","event":"E"}"#])
        .args(["--repeat", "100"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let payload = stdout
        .lines()
        .find_map(|l| l.strip_prefix("payload[0]: "))
        .expect(&stdout);
    let payload: serde_json::Value = serde_json::from_str(payload).unwrap();
    assert_eq!(
        (payload["type"].as_str(), payload["event"].as_str()),
        (Some("track"), Some("E"))
    );
    assert_eq!(
        payload["messageId"].as_str().map(str::len),
        Some(36),
        "normalised like ingest"
    );
    assert!(stdout.contains("transform: 100 call(s), mean"), "{stdout}");
    let peak_kib: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("peak memory: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect(&stdout);
    assert!(
        (64..=64 * 1024).contains(&peak_kib),
        "a plausible linear memory (at least one 64 KiB page, under the 64 MiB cap): {peak_kib} KiB"
    );

    let misbehave = plugins::plugins_dir().join("misbehave.wasm");
    let out = sluice_cmd()
        .args(["plugin", "call"])
        .arg(&misbehave)
        .args([
            "--config",
            r#"{"mode":"loop"}"#,
            "--event",
            r#"{"type":"track","userId":"u","event":"E"}"#,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("plugin_timeout"), "{stderr}");
}

#[test]
fn plugin_build_refuses_a_component_of_another_world() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = sluice_cmd()
        .args(["plugin", "build"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/plugins/wrong-world"
        ))
        .arg("--out")
        .arg(out_dir.path())
        .arg("--target-dir")
        .arg(plugins::guests_target_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not have export `send`"), "{stderr}");
    let published: Vec<_> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert!(
        published.is_empty(),
        "nothing is published, no staging left: {published:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_survives_its_log_output_closing() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let sink = Sink::ok(SECRET);
    let tmp = tempfile::Builder::new()
        .prefix("sluice-e2e-")
        .tempdir()
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let config = tmp.path().join("sluice.toml");
    std::fs::write(
        &config,
        crate::harness::process::config_text(&webhook_config(
            &sink.url,
            r#"{ min_backoff = "1s" }"#,
            "",
        )),
    )
    .unwrap();
    // As in `sluice serve 2>&1 | head`: the reader of the log goes away while the server runs.
    let mut child = sluice_cmd()
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info,sluice=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut addr = None;
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap_or_default();
        if let Some(a) = v["fields"]["addr"].as_str() {
            addr = Some(a.to_string());
            break;
        }
    }
    drop(lines);
    let addr = addr.expect("the server said where it listens");

    // Plenty more to log now, into a closed pipe.
    let resp = client()
        .post(format!("http://{addr}/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&serde_json::json!({ "batch": events(5, 50) }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    wait_until(Duration::from_secs(30), "50 deliveries", || async {
        (sink.accepted().len() >= 50).then_some(())
    })
    .await;
    assert!(child.try_wait().unwrap().is_none(), "still running");
    let health = client()
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);

    // And it still shuts down cleanly, embedded PostgreSQL included.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let child = std::sync::Mutex::new(child);
    let status = wait_until(Duration::from_secs(60), "sluice to exit", || async {
        child.lock().unwrap().try_wait().unwrap()
    })
    .await;
    assert!(status.success(), "exit status {status}");
    assert!(
        !tmp.path()
            .join("data/postgres/data/postmaster.pid")
            .exists(),
        "the embedded PostgreSQL was stopped"
    );
}

#[test]
fn text_logs_into_a_pipe_have_no_colour() {
    // `plugin call` logs the plugin's load at info level; stderr is a pipe here.
    let wasm = plugins::plugins_dir().join("webhook.wasm");
    let out = sluice_cmd()
        .args(["--log-format", "text", "plugin", "call"])
        .arg(&wasm)
        .args([
            "--config",
            r#"{"url":"http://127.0.0.1:9/hook","secret":"s"}"#,
        ])
        .args(["--event", r#"{"type":"track","userId":"u","event":"E"}"#])
        .env("RUST_LOG", "debug")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.trim().is_empty(), "something was logged");
    assert!(!stderr.contains('\u{1b}'), "no ANSI escapes: {stderr}");
}

/// A receiver that answers every request with 401 and echoes the request back in the body
/// (as some APIs do), so that whatever the plugin sent is in its failure message.
fn echoing_receiver() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let body = format!("denied: {}", String::from_utf8_lossy(&request));
            let _ = write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn plugin_call_masks_the_manifests_secrets_in_what_it_prints() {
    let addr = echoing_receiver();
    let wasm = plugins::plugins_dir().join("webhook.wasm");
    // The webhook plugin declares `secret` and `headers.Authorization`; the URL's password
    // and query values are masked wherever they are printed, even in the echoed request line.
    let config = serde_json::json!({
        "url": format!("http://user:pw-secret-123@{addr}/hook?token=qs-secret-456"),
        "secret": "whsec_c3VwZXJzZWNyZXQ=",
        "headers": { "Authorization": "Bearer tok-secret-789" },
    });
    let out = sluice_cmd()
        .args(["plugin", "call"])
        .arg(&wasm)
        .args(["--config", &config.to_string()])
        .args(["--event", r#"{"type":"track","userId":"u","event":"E"}"#])
        .arg("--send")
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    // The receiver echoed the request: the failure is there, with the header masked.
    assert!(printed.contains("http_401"), "{printed}");
    assert!(printed.contains("authorization: ***"), "{printed}");
    for secret in [
        "tok-secret-789",
        "whsec_c3VwZXJzZWNyZXQ=",
        "pw-secret-123",
        "qs-secret-456",
    ] {
        assert!(!printed.contains(secret), "`{secret}` printed:\n{printed}");
    }
}
