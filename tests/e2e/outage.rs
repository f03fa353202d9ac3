//! PostgreSQL going away while a lane is mid-delivery: the host waits for the store quietly
//! (no busy loop re-arming deadlines that passed) and delivers the rest by itself once the
//! store is back.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::harness::*;

const RETRY: &str =
    r#"{ min_backoff = "1s", max_backoff = "2s", max_attempts = 3, window = "1h" }"#;
/// A short lease, so that the lane stops its calls (its lease may have run out) within
/// seconds of the outage: what is measured is the host waiting, not the tail of its calls.
const SERVER: &str = "lease_ttl = \"3s\"";
const USERS: usize = 50;
const EVENTS: usize = 5000;
/// Left to the calls in flight when the store goes away (they finish or are cancelled once the
/// lease may have run out, after two thirds of `lease_ttl`).
const SETTLE: Duration = Duration::from_secs(5);
/// How long the idle host is measured (the issue's figure).
const MEASURE: Duration = Duration::from_secs(60);
/// At most this share of one core while the store is down.
const MAX_CPU: f64 = 0.02;

/// CPU ticks (user + system) of a process or thread, from its `stat` file; with the name.
fn ticks(stat_path: &str) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The name is in parentheses and may hold spaces; the fields after it are plain.
    let (head, tail) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    let fields: Vec<&str> = tail.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime); `tail` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// Ticks per thread of `pid`, by thread id.
fn thread_ticks(pid: u32) -> BTreeMap<String, (String, u64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return BTreeMap::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let tid = e.file_name().to_string_lossy().to_string();
            ticks(&format!("/proc/{pid}/task/{tid}/stat")).map(|t| (tid, t))
        })
        .collect()
}

/// The threads that used the most CPU between two samples, for the failure message.
fn busiest(
    before: &BTreeMap<String, (String, u64)>,
    after: &BTreeMap<String, (String, u64)>,
) -> String {
    let mut used: Vec<(u64, String)> = after
        .iter()
        .map(|(tid, (name, t))| {
            let was = before.get(tid).map_or(0, |(_, b)| *b);
            (t - was, format!("{name} ({tid})"))
        })
        .filter(|(d, _)| *d > 0)
        .collect();
    used.sort_by_key(|u| std::cmp::Reverse(u.0));
    used.truncate(5);
    format!("{used:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_mid_delivery_leaves_the_host_idle_and_delivery_resumes() {
    let mut pg = SharedPg::start().await;
    let sink = Sink::with(SECRET, |_| {
        std::thread::sleep(Duration::from_millis(5));
        200
    });
    let host = Sluice::start_on(&pg.url, &webhook_config(&sink.url, RETRY, ""), SERVER);
    let pid = host.pid();
    post_all(&host, &events(USERS, EVENTS), 500).await;
    wait_until(Duration::from_secs(60), "some deliveries", || async {
        (sink.accepted().len() >= 500).then_some(())
    })
    .await;

    pg.stop().await;
    let at_stop: HashSet<String> = sink.accepted().into_iter().map(|r| r.message_id).collect();
    assert!(
        at_stop.len() < EVENTS,
        "the outage must land mid-delivery ({} delivered)",
        at_stop.len()
    );
    tokio::time::sleep(SETTLE).await;

    let stat = format!("/proc/{pid}/stat");
    let threads_before = thread_ticks(pid);
    let (_, before) = ticks(&stat).expect("read the host's CPU time");
    let started = std::time::Instant::now();
    tokio::time::sleep(MEASURE).await;
    let (_, after) = ticks(&stat).expect("read the host's CPU time");
    let wall = started.elapsed().as_secs_f64();
    let threads_after = thread_ticks(pid);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let cpu = (after - before) as f64 / hz / wall;
    eprintln!(
        "outage: host used {:.2}% of a core over {wall:.0} s ({} ticks at {hz} Hz)",
        cpu * 100.0,
        after - before
    );
    assert!(
        cpu < MAX_CPU,
        "the host used {:.1}% of a core while the store was down; busiest threads: {}",
        cpu * 100.0,
        busiest(&threads_before, &threads_after)
    );

    // No restart of sluice: it carries on by itself.
    pg.start_again().await;
    wait_until(Duration::from_secs(180), "all events delivered", || async {
        let unique: HashSet<String> = sink.accepted().into_iter().map(|r| r.message_id).collect();
        (unique.len() >= EVENTS).then_some(())
    })
    .await;
    assert_eq!(host.pid(), pid, "the same process");

    // Each user's first deliveries come in order (calls cut off by the outage may be sent
    // again, which steps a user back to a job it already had).
    let mut first: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in sink.accepted() {
        let seqs = first.entry(r.user).or_default();
        if !seqs.contains(&r.seq) {
            seqs.push(r.seq);
        }
    }
    assert_eq!(first.len(), USERS, "users seen");
    let want: Vec<i64> = (0..(EVENTS / USERS) as i64).collect();
    for (user, seqs) in first {
        assert_eq!(seqs, want, "first deliveries of {user}");
    }
}
