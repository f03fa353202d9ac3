//! Several hosts on one PostgreSQL, hosts dying and restarting, and PostgreSQL itself going
//! away: nothing acknowledged is lost, no user's events are reordered, and the only
//! duplicates are jobs that were in flight on a host that died.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

/// Short leases and frequent maintenance, so that takeovers happen within seconds.
const HOSTS: &str = "lease_ttl = \"3s\"\nmaintenance_interval = \"300ms\"";
const RETRY: &str =
    r#"{ min_backoff = "1s", max_backoff = "2s", max_attempts = 3, window = "1h" }"#;

/// One source feeding three webhook destinations (`hook`, `hook2`, `hook3`) on one sink.
fn three_destinations(sink: &Sink) -> String {
    let extra: String = ["hook2", "hook3"]
        .iter()
        .map(|d| {
            format!(
                "\n[[destination]]\nid = \"{d}\"\nworkspace = \"acme\"\nplugin = \"webhook\"\nconfig = {{ url = \"{}\", secret = \"{SECRET}\" }}\nretry = {RETRY}\n",
                sink.url
            )
        })
        .collect();
    webhook_config(&sink.url, RETRY, &extra).replace(
        r#"destinations = ["hook"]"#,
        r#"destinations = ["hook", "hook2", "hook3"]"#,
    )
}

/// Per (destination, user), the `seq` of every accepted delivery in arrival order.
fn by_lane_and_user(received: &[Received]) -> BTreeMap<(String, String), Vec<i64>> {
    let mut map: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for r in received.iter().filter(|r| (200..300).contains(&r.status)) {
        let dest = r
            .webhook_id
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string();
        map.entry((dest, r.user.clone())).or_default().push(r.seq);
    }
    map
}

/// First deliveries of each (destination, user) come in order; returns how many times a
/// sequence stepped back (a re-delivery of in-flight jobs) per (destination, user).
fn assert_first_deliveries_in_order(
    received: &[Received],
    expected: &HashMap<String, Vec<i64>>,
) -> BTreeMap<(String, String), usize> {
    let mut step_backs = BTreeMap::new();
    for ((dest, user), seqs) in by_lane_and_user(received) {
        let mut first = Vec::new();
        let mut backs = 0;
        for (i, s) in seqs.iter().enumerate() {
            if !first.contains(s) {
                first.push(*s);
            }
            if i > 0 && *s < seqs[i - 1] {
                backs += 1;
            }
        }
        let want = &expected[&user];
        assert_eq!(&first, want, "first deliveries of {user} to {dest}");
        step_backs.insert((dest, user), backs);
    }
    step_backs
}

/// The sink's accepted deliveries as (messageId, destination) pairs.
fn delivered_jobs(sink: &Sink) -> HashSet<(String, String)> {
    sink.accepted()
        .into_iter()
        .map(|r| {
            let dest = r
                .webhook_id
                .rsplit(':')
                .next()
                .unwrap_or_default()
                .to_string();
            (r.message_id, dest)
        })
        .collect()
}

fn expected(users: usize, per_user: i64) -> HashMap<String, Vec<i64>> {
    (0..users)
        .map(|u| (format!("user-{u}"), (0..per_user).collect()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_one_killed_mid_delivery_lose_nothing_and_keep_order() {
    let pg = SharedPg::start().await;
    let sink = Sink::with(SECRET, |_| {
        std::thread::sleep(Duration::from_micros(300));
        200
    });
    let config = three_destinations(&sink);
    let mut hosts: Vec<Sluice> = (0..3)
        .map(|_| Sluice::start_on(&pg.url, &config, HOSTS))
        .collect();
    post_all(&hosts[0], &events(60, 3000), 500).await;
    wait_until(Duration::from_secs(120), "some deliveries", || async {
        (sink.accepted().len() >= 2000).then_some(())
    })
    .await;

    // Kill the host that owns `hook` (maybe every lane).
    let pool = db(&hosts[0]).await;
    let owner_pid: i32 = sqlx::query_scalar(
        "SELECT h.pid FROM lanes l JOIN hosts h ON h.incarnation = l.owner
         WHERE l.destination_id = 'hook'",
    )
    .fetch_one(&pool)
    .await
    .expect("`hook` has an owner");
    let victim = hosts
        .iter()
        .position(|h| h.pid() as i32 == owner_pid)
        .expect("the owner is one of our hosts");
    hosts[victim].kill9();
    let at_kill = delivered_jobs(&sink).len();
    assert!(
        at_kill < 9000,
        "the kill must land mid-delivery ({at_kill} delivered)"
    );
    // What the store says the dead host had in flight.
    let in_flight: HashSet<(String, String)> = sqlx::query_as(
        "SELECT o.message_id, o.destination_id FROM job_overview o
         JOIN lanes l ON l.destination_id = o.destination_id
         JOIN hosts h ON h.incarnation = l.owner
         WHERE o.state = 'executing' AND h.pid = $1",
    )
    .bind(owner_pid)
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    eprintln!(
        "killed host {victim} with {} jobs in flight",
        in_flight.len()
    );
    let survivor = &hosts[(victim + 1) % 3];
    // The survivors take the dead host's lanes once its lease runs out, and finish.
    let all = wait_until(
        Duration::from_secs(180),
        "all 9,000 jobs delivered",
        || async {
            let jobs = delivered_jobs(&sink);
            (jobs.len() >= 9000).then_some(jobs)
        },
    )
    .await;
    assert_eq!(all.len(), 9000);
    assert!(
        survivor
            .find_log(|l| l["fields"]["message"] == "lane acquired")
            .is_some()
            || hosts[(victim + 2) % 3]
                .find_log(|l| l["fields"]["message"] == "lane acquired")
                .is_some()
    );

    let received = sink.accepted();
    assert_first_deliveries_in_order(&received, &expected(60, 50));
    let mut count: HashMap<(String, String), usize> = HashMap::new();
    for r in &received {
        let dest = r
            .webhook_id
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string();
        *count.entry((r.message_id.clone(), dest)).or_default() += 1;
    }
    let duplicated: HashSet<(String, String)> = count
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(
        duplicated.is_subset(&in_flight),
        "duplicated but not in flight on the dead host: {:?}",
        duplicated
            .difference(&in_flight)
            .take(10)
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_nothing_and_interleaves_nobody() {
    let pg = SharedPg::start().await;
    rolling_restart_under_load(&pg.url).await;
}

/// Three hosts on `database_url` under load, each restarted in turn (SIGTERM, kill -9,
/// SIGTERM): every acknowledged event is delivered, each user's first deliveries in order
/// (also run on Citus, `citus.rs`).
pub(crate) async fn rolling_restart_under_load(database_url: &str) {
    let sink = Sink::with(SECRET, |_| {
        std::thread::sleep(Duration::from_micros(200));
        200
    });
    let config = three_destinations(&sink);
    let mut hosts: Vec<Sluice> = (0..3)
        .map(|_| Sluice::start_on(database_url, &config, HOSTS))
        .collect();
    let addrs: Arc<Mutex<Vec<Option<String>>>> = Arc::new(Mutex::new(
        hosts.iter().map(|h| Some(h.addr.clone())).collect(),
    ));
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = tokio_util::sync::CancellationToken::new();

    // Load: 40 users, a batch every 20 ms to whichever host is up, retried until acknowledged.
    let load = {
        let (addrs, acked, stop) = (addrs.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let client = client();
            let mut seq = 0i64;
            let mut n = 0usize;
            while !stop.is_cancelled() {
                let batch: Vec<_> = (0..40).map(|u| track(&format!("user-{u}"), seq)).collect();
                loop {
                    let target = {
                        let a = addrs.lock().unwrap();
                        let up: Vec<String> = a.iter().flatten().cloned().collect();
                        up.get(n % up.len().max(1)).cloned()
                    };
                    n += 1;
                    let Some(addr) = target else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let sent = client
                        .post(format!("http://{addr}/v1/batch"))
                        .basic_auth(WRITE_KEY, Some(""))
                        .json(&json!({ "batch": batch }))
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    if matches!(&sent, Ok(r) if r.status().is_success()) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                acked
                    .lock()
                    .unwrap()
                    .extend((0..40).map(|u| (format!("user-{u}"), seq)));
                seq += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seq
        })
    };

    // Restart every host in turn: SIGTERM, kill -9, SIGTERM.
    for (i, hard) in [(0, false), (1, true), (2, false)] {
        tokio::time::sleep(Duration::from_secs(3)).await;
        addrs.lock().unwrap()[i] = None;
        if hard {
            hosts[i].kill9();
        } else {
            hosts[i].stop();
        }
        hosts[i].restart();
        addrs.lock().unwrap()[i] = Some(hosts[i].addr.clone());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let batches = load.await.unwrap();
    assert!(batches > 50, "load kept going: {batches} batches");

    let want: usize = acked.lock().unwrap().len() * 3;
    wait_until(
        Duration::from_secs(180),
        "every acknowledged event delivered",
        || async { (delivered_jobs(&sink).len() >= want).then_some(()) },
    )
    .await;
    let step_backs = assert_first_deliveries_in_order(&sink.accepted(), &expected(40, batches));
    // Each of the three restarts may step a user back once, to its jobs in flight.
    for (lane_user, backs) in step_backs {
        assert!(backs <= 3, "{lane_user:?} stepped back {backs} times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_and_then_down_for_three_minutes_loses_nothing() {
    let mut pg = SharedPg::start().await;
    let sink = Sink::with(SECRET, |_| {
        std::thread::sleep(Duration::from_millis(2));
        200
    });
    let host = Sluice::start_on(&pg.url, &webhook_config(&sink.url, RETRY, ""), HOSTS);
    let pid = host.pid();
    post_all(&host, &events(20, 2000), 200).await;
    wait_until(Duration::from_secs(60), "some deliveries", || async {
        (sink.accepted().len() >= 300).then_some(())
    })
    .await;

    // A quick restart in the middle of delivery.
    pg.stop().await;
    pg.start_again().await;
    wait_until(Duration::from_secs(60), "delivery going again", || async {
        (sink.accepted().len() >= 800).then_some(())
    })
    .await;

    // Down for three minutes with deliveries in flight.
    pg.stop().await;
    let (status, _) = post_batch(&host, &[track("user-late", 0)]).await;
    assert_eq!(status, 503, "ingest answers 503 while the store is away");
    let health = client().get(host.url("/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 503);
    tokio::time::sleep(Duration::from_secs(180)).await;
    pg.start_again().await;

    // No restart of sluice: it carries on by itself.
    wait_until(Duration::from_secs(120), "all 2,000 delivered", || async {
        let unique: HashSet<String> = sink.accepted().into_iter().map(|r| r.message_id).collect();
        (unique.len() >= 2000).then_some(())
    })
    .await;
    assert_eq!(host.pid(), pid, "the same process");
    let (status, _) = post_batch(&host, &[track("user-late", 0)]).await;
    assert_eq!(status, 200, "ingest is back");
    assert_first_deliveries_in_order(&sink.accepted(), &{
        let mut e = expected(20, 100);
        e.insert("user-late".into(), vec![0]);
        e
    });
}
