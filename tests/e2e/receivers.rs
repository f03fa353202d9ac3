//! Destinations as they are in the wild: a small, slow receiver that accepts connections
//! slowly (a default accept backlog of 5, a connection per request).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::*;

/// Python's ThreadingHTTPServer, recording what it accepted in a file.
struct SmallReceiver {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallReceiver {
    fn start() -> SmallReceiver {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("received.txt");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/e2e/receivers/small_receiver.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the Python receiver");
        let mut port = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut port)
            .expect("read the port");
        SmallReceiver {
            child,
            url: format!("http://127.0.0.1:{}/hook", port.trim()),
            log,
            _dir: dir,
        }
    }

    /// Per user, the sequence numbers received, in arrival order.
    fn received(&self) -> BTreeMap<String, Vec<i64>> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut by_user: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for line in text.lines() {
            if let Some((user, seq)) = line.split_once(' ')
                && let Ok(seq) = seq.parse()
            {
                by_user.entry(user.to_string()).or_default().push(seq);
            }
        }
        by_user
    }
}

impl Drop for SmallReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_slow_receiver_gets_everything_in_order_without_a_storm_of_retries() {
    let receiver = SmallReceiver::start();
    let retry = r#"{ min_backoff = "1s", max_backoff = "5s", max_attempts = 3, window = "1h" }"#;
    let sluice = Sluice::start(&webhook_config(&receiver.url, retry, ""));
    // 2,000 events of 100 users at once: each wave of a call has 100 requests to send.
    post_all(&sluice, &events(100, 2000), 500).await;
    let pool = db(&sluice).await;
    let delivered = wait_until(Duration::from_secs(240), "2,000 deliveries", || async {
        let d = states(&pool, "hook").await;
        (d.get("delivered") == Some(&2000)).then_some(d)
    })
    .await;
    assert_eq!(
        delivered.len(),
        1,
        "nothing pending, failed or aborted: {delivered:?}"
    );

    let by_user = receiver.received();
    assert_eq!(by_user.len(), 100);
    for (user, seqs) in &by_user {
        let mut first = Vec::new();
        for s in seqs {
            if !first.contains(s) {
                first.push(*s);
            }
        }
        assert_eq!(first, (0..20).collect::<Vec<i64>>(), "order of {user}");
    }
    // The host found the receiver's pace instead of flooding its accept queue: (almost) no
    // request had to be retried.
    let retried: i64 = sqlx::query_scalar("SELECT count(*) FROM job_state WHERE attempt > 0")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(retried <= 20, "{retried} of 2,000 jobs needed a retry");
}
