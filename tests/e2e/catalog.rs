//! The catalog in the store (docs/catalog.md): changes made through one host's admin API reach
//! every host within a second, with no restart; nothing is lost or reordered while they do;
//! hosts started with different files never undo each other; refused configs change nothing;
//! `sluice apply` plans and is idempotent; write keys rotate, and disabled or deleted sources
//! get 401 on every host.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::admin::{Api, OPS_TOKEN, READ_TOKEN, admin_section};
use crate::harness::*;

mod keys;
mod rules;

/// Short leases and frequent maintenance, so that lanes move between hosts quickly.
const HOSTS: &str = "lease_ttl = \"3s\"\nmaintenance_interval = \"300ms\"";
const RETRY: &str =
    r#"{ min_backoff = "200ms", max_backoff = "1s", max_attempts = 50, window = "1h" }"#;

/// The webhook destination `hook` at `sink`, fed by source `web`, with the admin API.
fn hook_config(sink: &Sink) -> String {
    format!(
        "{}{}",
        webhook_config(&sink.url, RETRY, ""),
        admin_section()
    )
}

fn log_time(line: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(line["timestamp"].as_str().unwrap_or_default(), &Rfc3339)
        .expect("log lines carry an RFC 3339 timestamp")
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

/// When `host` took catalog `version` (its "catalog changed" line).
fn took_version(host: &mut Sluice, version: i64) -> OffsetDateTime {
    let line = host.wait_for_log(Duration::from_secs(10), |l| {
        message(l) == "catalog changed" && l["fields"]["version"].as_i64() == Some(version)
    });
    log_time(&line)
}

/// When `host` logged `what` for `destination`.
fn logged(host: &mut Sluice, what: &str, destination: &str) -> OffsetDateTime {
    let line = host.wait_for_log(Duration::from_secs(10), |l| {
        message(l) == what && l["fields"]["destination"].as_str() == Some(destination)
    });
    log_time(&line)
}

fn ms(d: time::Duration) -> f64 {
    d.as_seconds_f64() * 1000.0
}

/// Per user, the `(seq, phase)` of every event ingest accepted.
type Sent = Arc<std::sync::Mutex<BTreeMap<String, Vec<(i64, i64)>>>>;

/// Posts batches of `users` users' track events to the hosts in turn until `stop`; every
/// event carries `seq` (per user, from 0) and is recorded in `sent` with the value `phase`
/// had when it was posted.
fn load(
    hosts: Vec<String>,
    users: usize,
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicI64>,
    sent: Sent,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = client();
        let mut seq = 0i64;
        let mut turn = 0usize;
        while !stop.load(Ordering::SeqCst) {
            let p = phase.load(Ordering::SeqCst);
            let batch: Vec<Value> = (0..users)
                .map(|u| {
                    let mut e = track(&format!("user-{u}"), seq);
                    e["properties"]["phase"] = json!(p);
                    e
                })
                .collect();
            let url = format!("{}/v1/batch", hosts[turn % hosts.len()]);
            let resp = http
                .post(&url)
                .basic_auth(WRITE_KEY, Some(""))
                .json(&json!({ "batch": batch }))
                .send()
                .await
                .expect("ingest reachable");
            assert_eq!(resp.status().as_u16(), 200, "ingest accepted the batch");
            {
                let mut sent = sent.lock().expect("not poisoned");
                for u in 0..users {
                    sent.entry(format!("user-{u}")).or_default().push((seq, p));
                }
            }
            seq += 1;
            turn += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// Per user, the first deliveries of `sinks` together, in arrival order per sink.
fn first_deliveries_of(sinks: &[&Sink]) -> BTreeMap<String, Vec<i64>> {
    let mut all: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for sink in sinks {
        for (user, seqs) in first_deliveries(sink) {
            let list = all.entry(user).or_default();
            for s in seqs {
                if !list.contains(&s) {
                    list.push(s);
                }
            }
        }
    }
    all
}

/// The `seq`s of `sent` per user whose phase is in `phases`.
fn sent_in(sent: &Sent, phases: std::ops::RangeInclusive<i64>) -> BTreeMap<String, Vec<i64>> {
    sent.lock()
        .expect("not poisoned")
        .iter()
        .map(|(user, seqs)| {
            let picked = seqs
                .iter()
                .filter(|(_, p)| phases.contains(p))
                .map(|(s, _)| *s)
                .collect();
            (user.clone(), picked)
        })
        .collect()
}

/// Per user, the first-delivery order of `seq`s a sink accepted.
fn first_deliveries(sink: &Sink) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in sink.accepted() {
        let seqs = out.entry(r.user.clone()).or_default();
        if !seqs.contains(&r.seq) {
            seqs.push(r.seq);
        }
    }
    out
}

fn assert_increasing(what: &str, per_user: &BTreeMap<String, Vec<i64>>) {
    for (user, seqs) in per_user {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{what}: {user}'s events out of order: {seqs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_follow_create_update_and_delete_within_a_second_under_load() {
    let pg = SharedPg::start().await;
    let (base, first, second) = (Sink::ok(SECRET), Sink::ok(SECRET), Sink::ok(SECRET));
    let config = format!(
        "{}{}",
        webhook_config(&base.url, RETRY, ""),
        admin_section()
    );
    let mut hosts = [
        Sluice::start_on(&pg.url, &config, HOSTS),
        Sluice::start_on(&pg.url, &config, HOSTS),
    ];
    let api = Api::new(&hosts[0], Some(OPS_TOKEN));
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicI64::new(0));
    let sent: Sent = Default::default();
    let sending = load(
        hosts.iter().map(|h| h.url("")).collect(),
        5,
        stop.clone(),
        phase.clone(),
        sent.clone(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Create: linked to `web` from now on.
    let hook_config = |url: &str| json!({ "url": url, "secret": SECRET });
    let (status, created) = api
        .post(
            "/api/v1/catalog/destinations",
            &json!({
                "id": "live", "workspace": "acme", "plugin": "webhook",
                "config": hook_config(&first.url), "retry": {"min_backoff": "200ms",
                "max_backoff": "1s", "max_attempts": 50, "window": "1h"},
                "sources": ["web"],
            }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["destination"]["config"]["secret"], "***",
        "secrets never come back"
    );
    let v_create = created["version"].as_i64().expect("a version");
    phase.store(1, Ordering::SeqCst);
    let committed = logged(&mut hosts[0], "destination created", "live");
    let mut create_ms = Vec::new();
    for h in hosts.iter_mut() {
        let took = took_version(h, v_create);
        let running = logged(h, "destination configured", "live");
        create_ms.push((ms(took - committed), ms(running - committed)));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Update: the next calls go to the second sink.
    let (status, updated) = api
        .put(
            "/api/v1/catalog/destinations/acme/live",
            &json!({
                "plugin": "webhook", "config": hook_config(&second.url),
                "retry": {"min_backoff": "200ms", "max_backoff": "1s", "max_attempts": 50,
                          "window": "1h"},
            }),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    let v_update = updated["version"].as_i64().expect("a version");
    phase.store(2, Ordering::SeqCst);
    let committed = logged(&mut hosts[0], "destination updated", "live");
    let mut update_ms = Vec::new();
    for h in hosts.iter_mut() {
        update_ms.push(ms(took_version(h, v_update) - committed));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    phase.store(3, Ordering::SeqCst);

    // `live` gets, across its two configs, every event accepted while it was linked (phases 1
    // and 2; a few of phase 0 may follow the link's start too), each user's in order: a
    // change loses, duplicates out of order, or reorders nothing.
    let wanted = sent_in(&sent, 1..=2);
    let lost = || {
        let got = first_deliveries_of(&[&first, &second]);
        wanted
            .iter()
            .flat_map(|(u, seqs)| {
                let got = got.get(u).cloned().unwrap_or_default();
                seqs.iter()
                    .filter(move |s| !got.contains(s))
                    .map(move |s| (u.clone(), *s))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lost().is_empty() {
        assert!(Instant::now() < deadline, "live lost events: {:?}", lost());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live = first_deliveries_of(&[&first, &second]);
    assert_increasing("live across its update", &live);

    // Delete: its lane stops on both hosts; `hook` goes on.
    let (status, deleted) = api.delete("/api/v1/catalog/destinations/acme/live").await;
    assert_eq!(status, 200, "{deleted}");
    let v_delete = deleted["version"].as_i64().expect("a version");
    let committed = logged(&mut hosts[0], "destination deleted", "live");
    let mut delete_ms = Vec::new();
    for h in hosts.iter_mut() {
        delete_ms.push(ms(
            logged(h, "destination deleted; its lane stops", "live") - committed
        ));
        took_version(h, v_delete);
    }
    let after_delete = first.accepted().len() + second.accepted().len();
    phase.store(4, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    sending.await.expect("the load ran");
    let sent = sent.lock().expect("not poisoned").clone();
    eprintln!(
        "propagation (ms, catalog read / destination running per host): create {create_ms:?}, \
         update {update_ms:?}, delete {delete_ms:?}"
    );
    for (what, times) in [
        ("create", create_ms.iter().map(|t| t.1).collect::<Vec<_>>()),
        ("update", update_ms.clone()),
        ("delete", delete_ms.clone()),
    ] {
        assert!(
            times.iter().all(|t| *t < 1000.0),
            "{what} reached every host within 1 s: {times:?}"
        );
    }

    // `hook` got every event, in order, throughout.
    let total: usize = sent.values().map(Vec::len).sum();
    wait_until(Duration::from_secs(60), "hook got every event", || async {
        let got: usize = first_deliveries(&base).values().map(Vec::len).sum();
        (got >= total).then_some(())
    })
    .await;
    let hook = first_deliveries(&base);
    assert_increasing("hook", &hook);
    for (user, seqs) in &sent {
        let all: Vec<i64> = seqs.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            &hook[user], &all,
            "hook got all of {user}'s events in order"
        );
    }
    let phase_of = |r: &Received| {
        sent.get(&r.user)
            .and_then(|seqs| seqs.iter().find(|(s, _)| *s == r.seq))
            .map_or(-1, |(_, p)| *p)
    };
    // After the update the first sink gets nothing new for long.
    let late_first = first.accepted().iter().filter(|r| phase_of(r) >= 2).count();
    assert!(
        late_first <= 50,
        "calls in flight finish on the old config, then no more: {late_first}"
    );
    assert!(
        second.accepted().iter().any(|r| phase_of(r) == 2),
        "the new config took the events after the update"
    );
    assert!(
        first.accepted().iter().all(|r| phase_of(r) != 4)
            && second.accepted().iter().all(|r| phase_of(r) != 4),
        "nothing accepted after the delete reached the deleted destination"
    );
    let later = first.accepted().len() + second.accepted().len();
    assert!(
        later - after_delete <= 50,
        "a deleted destination gets no more events ({} after the delete)",
        later - after_delete
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_started_with_different_files_never_undo_each_other() {
    let pg = SharedPg::start().await;
    let sink = Sink::ok(SECRET);
    let old = format!(
        "{}{}",
        webhook_config(&sink.url, RETRY, ""),
        admin_section()
    );
    let extra = destination_table(
        "newer",
        "webhook",
        &format!(r#"{{ url = "{}", secret = "{SECRET}" }}"#, sink.url),
        RETRY,
    );
    let newer = format!(
        "{}{}",
        webhook_config(&sink.url, RETRY, &extra).replace(
            r#"destinations = ["hook"]"#,
            r#"destinations = ["hook", "newer"]"#
        ),
        admin_section()
    );
    // The first host seeds the workspace from its (older) file.
    let mut a = Sluice::start_on(&pg.url, &old, HOSTS);
    let api = Api::new(&a, Some(OPS_TOKEN));
    // An operator adds a destination through the API.
    let (status, body) = api
        .post(
            "/api/v1/catalog/destinations",
            &json!({"id": "added", "workspace": "acme", "plugin": "webhook",
                    "config": {"url": sink.url, "secret": SECRET}, "sources": ["web"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // A host with the newer file starts: the store is the truth, its tables are not used.
    let mut b = Sluice::start_on(&pg.url, &newer, HOSTS);
    b.wait_for_log(Duration::from_secs(10), |l| {
        message(l).starts_with("the store's catalog holds these workspaces")
    });
    // And the first host restarts with its old file: nothing is retired or reverted.
    a.stop();
    a.restart();
    a.wait_for_log(Duration::from_secs(30), |l| {
        message(l).starts_with("the store's catalog holds these workspaces")
    });
    let pool = db(&a).await;
    let lanes: Vec<(String, bool)> = sqlx::query_as(
        "SELECT destination_id, retired_at IS NOT NULL FROM lanes ORDER BY destination_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(lanes, vec![("added".into(), false), ("hook".into(), false)]);
    let catalog = Api::new(&b, Some(READ_TOKEN))
        .ok("/api/v1/catalog", &[])
        .await;
    let ids: Vec<&str> = catalog["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["added", "hook"]);
    // Both destinations deliver from both hosts.
    post_all(&b, &events(3, 10), 10).await;
    post_all(&a, &events(3, 10), 10).await;
    // 10 distinct messages (posted twice: deduplicated), to each of the two destinations.
    wait_until(
        Duration::from_secs(30),
        "both destinations delivered",
        || async { (sink.accepted().len() >= 20).then_some(()) },
    )
    .await;
}
