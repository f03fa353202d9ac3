//! A Citus worker stopped mid-load, on a cluster of the test's own: ingest for the workspace
//! whose shards are on that worker answers 503 while it is down, the workspace on the other
//! worker goes on (ingest and delivery), and once the worker is back every acknowledged event
//! is delivered, in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::{config, worker_port_of};
use crate::harness::*;

const USERS: usize = 10;

/// What one workspace's client has seen.
#[derive(Default)]
struct Answers {
    /// Batches acknowledged (200): batch `k` carries every user's event `k`.
    acked: AtomicU64,
    /// 503 answers.
    unavailable: AtomicU64,
    /// Anything else (another status, or no answer), kept to explain a failure.
    other: std::sync::Mutex<Vec<String>>,
}

/// A client of `ws` as the SDKs behave: one batch at a time, each retried until it is
/// acknowledged, so that an acknowledged batch `k` means batches `0..=k` are stored.
async fn client_of(url: String, ws: String, answers: Arc<Answers>, stop: Arc<AtomicBool>) {
    let http = client();
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) {
        let batch: Vec<Value> = (0..USERS)
            .map(|u| track(&format!("{ws}-user-{u}"), seq))
            .collect();
        // Not given up when told to stop: a batch sent may be stored, so it is acknowledged
        // before the client stops (the worker is back by then).
        loop {
            let answer = http
                .post(&url)
                .basic_auth(format!("wk_{ws}"), Some(""))
                .timeout(Duration::from_secs(10))
                .json(&json!({ "batch": batch }))
                .send()
                .await;
            match answer.as_ref().map(|r| r.status().as_u16()) {
                Ok(200) => break,
                Ok(503) => answers.unavailable.fetch_add(1, Ordering::SeqCst),
                Ok(status) => {
                    let body = answer.expect("an answer").text().await.unwrap_or_default();
                    answers
                        .other
                        .lock()
                        .expect("answers")
                        .push(format!("{ws} batch {seq}: {status}: {body}"));
                    0
                }
                Err(e) => {
                    // Which workspace and when: a timeout here says whose request hung.
                    answers.other.lock().expect("answers").push(format!(
                        "{ws} batch {seq} at {:?}: {e}",
                        std::time::SystemTime::now()
                    ));
                    0
                }
            };
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seq += 1;
        answers.acked.store(seq as u64, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deliveries accepted by the sink for users of `ws`.
fn delivered(sink: &Sink, ws: &str) -> usize {
    let prefix = format!("{ws}-user-");
    sink.accepted()
        .iter()
        .filter(|r| r.user.starts_with(&prefix))
        .count()
}

/// The host's warnings and errors, the last of each message and error (maintenance repeats).
fn warnings(sluice: &Sluice) -> Vec<String> {
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for l in sluice.logs(|l| l["level"] == "ERROR" || l["level"] == "WARN") {
        let key = format!("{} {}", l["fields"]["message"], l["fields"]["error"]);
        last.insert(key, l.to_string());
    }
    last.into_values().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_down_mid_load_costs_only_its_workspaces_and_loses_nothing() {
    let (mut cluster, url) = citus::own_cluster().await;
    let pool = sqlx::PgPool::connect(&url).await.expect("the coordinator");
    let ports = cluster.worker_ports();
    // A workspace on each worker; the first worker is the one stopped.
    let mut on_worker: Vec<Option<String>> = vec![None; ports.len()];
    for i in 0..50 {
        let ws = format!("ws-{i}");
        let port = worker_port_of(&pool, &ws).await;
        let index = ports
            .iter()
            .position(|p| i32::from(*p) == port)
            .expect("a worker of this cluster");
        on_worker[index].get_or_insert(ws);
    }
    let [Some(down), Some(up)] = [on_worker[0].clone(), on_worker[1].clone()] else {
        panic!("no workspace on one of the workers: {on_worker:?}");
    };
    let sink = Sink::ok(SECRET);
    let retry = r#"{ min_backoff = "1s", max_backoff = "5s" }"#;
    let sluice = Sluice::start_on(&url, &config(&[down.clone(), up.clone()], &sink, retry), "");

    let stop = Arc::new(AtomicBool::new(false));
    let (down_answers, up_answers) = (Arc::new(Answers::default()), Arc::new(Answers::default()));
    let clients = [(&down, &down_answers), (&up, &up_answers)].map(|(ws, answers)| {
        tokio::spawn(client_of(
            sluice.url("/v1/batch"),
            ws.clone(),
            answers.clone(),
            stop.clone(),
        ))
    });
    wait_until(
        Duration::from_secs(60),
        "both workspaces under way",
        || async {
            let going = [&down_answers, &up_answers]
                .iter()
                .all(|a| a.acked.load(Ordering::SeqCst) >= 10);
            (going && delivered(&sink, &down) > 0 && delivered(&sink, &up) > 0).then_some(())
        },
    )
    .await;

    cluster.stop_worker(0).await.expect("stop the first worker");
    wait_until(
        Duration::from_secs(60),
        "503s for the stopped worker's workspace",
        || async { (down_answers.unavailable.load(Ordering::SeqCst) >= 3).then_some(()) },
    )
    .await;
    // While it is down: the other workspace's ingest and delivery go on, and nothing of the
    // stopped worker's workspace is acknowledged.
    let down_acked = down_answers.acked.load(Ordering::SeqCst);
    let (up_acked, up_delivered) = (
        up_answers.acked.load(Ordering::SeqCst),
        delivered(&sink, &up),
    );
    // Polled by hand rather than with `wait_until`, to say where it stood if it times out.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let acked = up_answers.acked.load(Ordering::SeqCst);
        let shipped = delivered(&sink, &up);
        if acked >= up_acked + 20 && shipped >= up_delivered + 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "while the worker is down, the other workspace acknowledged {} batches and \
             delivered {} events (want 20 and 200); logged: {:#?}",
            acked - up_acked,
            shipped - up_delivered,
            warnings(&sluice)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        down_answers.acked.load(Ordering::SeqCst),
        down_acked,
        "a batch of the stopped worker's workspace acknowledged"
    );

    cluster
        .start_worker(0)
        .await
        .expect("start the worker again");
    wait_until(
        Duration::from_secs(120),
        "ingest back for the workspace",
        || async { (down_answers.acked.load(Ordering::SeqCst) >= down_acked + 10).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("a client");
    }
    let other: Vec<String> = [&down_answers, &up_answers]
        .iter()
        .flat_map(|a| a.other.lock().expect("answers").clone())
        .collect();
    assert!(
        other.is_empty(),
        "answers other than 200 and 503: {other:?}; logged: {:#?}",
        warnings(&sluice)
    );

    // Everything acknowledged is delivered, in order per user. The up workspace's lanes
    // never saw the outage: each event exactly once. The down workspace's lanes may deliver
    // again what they had in flight when the worker stopped (the outcome could not be
    // recorded), then go on in order.
    let acked = [&down_answers, &up_answers].map(|a| a.acked.load(Ordering::SeqCst) as i64);
    wait_until(
        Duration::from_secs(180),
        "every acknowledged event delivered",
        || async {
            let by_user = accepted_by_user(&sink.received());
            let done = [(&down, acked[0]), (&up, acked[1])].iter().all(|(ws, n)| {
                (0..USERS).all(|u| {
                    by_user
                        .get(&format!("{ws}-user-{u}"))
                        .is_some_and(|seqs| seqs.iter().max() == Some(&(n - 1)))
                })
            });
            done.then_some(())
        },
    )
    .await;
    let by_user = accepted_by_user(&sink.received());
    assert_eq!(by_user.len(), 2 * USERS);
    let mut stepped_back: BTreeMap<&str, usize> = BTreeMap::new();
    for (user, seqs) in &by_user {
        let (ws, n) = if user.starts_with(&format!("{up}-")) {
            (&up, acked[1])
        } else {
            (&down, acked[0])
        };
        if ws == &up {
            assert_eq!(seqs, &(0..n).collect::<Vec<_>>(), "{user}");
            continue;
        }
        let mut next = 0;
        for &s in seqs {
            assert!(s <= next, "{user}: {s} came before {next}");
            if s == next {
                next += 1;
            } else {
                *stepped_back.entry(ws.as_str()).or_default() += 1;
            }
        }
        assert_eq!(next, n, "{user}: every acknowledged event");
    }
    eprintln!(
        "worker outage: acknowledged {acked:?} batches, {} 503s, redelivered {stepped_back:?}",
        down_answers.unavailable.load(Ordering::SeqCst)
    );
    drop(sluice);
    cluster.stop().await.expect("stop the cluster");
}
