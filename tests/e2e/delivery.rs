//! Delivery order and retries through the webhook plugin.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

pub(crate) const FAST_RETRY: &str =
    r#"{ min_backoff = "1s", max_backoff = "5s", max_attempts = 3, window = "1h" }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_events_from_fifty_users_arrive_in_order_and_signed() {
    let sink = Sink::ok(SECRET);
    let sluice = Sluice::start(&webhook_config(&sink.url, FAST_RETRY, ""));
    post_all(&sluice, &events(50, 1000), 100).await;

    wait_until(Duration::from_secs(120), "1000 deliveries", || async {
        (sink.accepted().len() >= 1000).then_some(())
    })
    .await;
    let received = sink.received();
    assert_in_order_exactly_once(&received, 50, 20);
    assert!(
        received.iter().all(|r| r.signature_ok),
        "every webhook is signed with the secret"
    );
    assert!(
        received
            .iter()
            .all(|r| r.webhook_id == format!("{}:hook", r.message_id))
    );

    // The store records the outcomes shortly after the sink saw them (lanes commit in batches).
    let pool = db(&sluice).await;
    wait_all_delivered(&pool, "hook", 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_user_waits_while_other_users_are_delivered() {
    // user-7's first event fails three times with 500, then succeeds.
    let sink = Sink::with(SECRET, |r| {
        if r.message_id == "user-7-0" && r.nth <= 3 {
            500
        } else {
            200
        }
    });
    let sluice = Sluice::start(&webhook_config(&sink.url, FAST_RETRY, ""));
    let pool = db(&sluice).await;
    post_all(&sluice, &events(10, 100), 100).await;

    // While user-7's head job is failing, the store shows it and what it blocks.
    let (attempt, code): (i32, String) =
        wait_until(Duration::from_secs(30), "user-7-0 to fail", || async {
            sqlx::query_as(
                "SELECT attempt, error_code FROM failed_jobs WHERE message_id = 'user-7-0'",
            )
            .fetch_optional(&pool)
            .await
            .unwrap()
        })
        .await;
    assert!(attempt >= 1);
    assert_eq!(code, "http_500");
    let blocked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM blocked_jobs b
         WHERE b.order_key = 'user-7'
           AND b.blocked_by = (SELECT id FROM events WHERE message_id = 'user-7-0')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        blocked, 9,
        "user-7's other nine jobs wait behind its failed head"
    );

    wait_until(Duration::from_secs(60), "all 100 deliveries", || async {
        (sink.accepted().len() >= 100).then_some(())
    })
    .await;
    let received = sink.received();
    assert_in_order_exactly_once(&received, 10, 10);

    // Everyone else was delivered before user-7's head finally went through.
    let head_ok = received
        .iter()
        .find(|r| r.message_id == "user-7-0" && r.status == 200)
        .unwrap()
        .at;
    let others_last = received
        .iter()
        .filter(|r| r.user != "user-7")
        .map(|r| r.at)
        .max()
        .unwrap();
    assert!(
        others_last < head_ok,
        "other users were not held up by user-7"
    );
    let attempts_of_head = received
        .iter()
        .filter(|r| r.message_id == "user-7-0")
        .count();
    assert_eq!(attempts_of_head, 4);

    let (state, attempt, code): (String, i32, Option<String>) = sqlx::query_as(
        "SELECT state::text, attempt, error_code FROM job_overview WHERE message_id = 'user-7-0'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (state.as_str(), attempt, code.as_deref()),
        ("delivered", 4, Some("http_500"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_aborts_the_job_at_once_and_the_user_goes_on() {
    let sink = Sink::with(
        SECRET,
        |r| if r.message_id == "user-3-2" { 400 } else { 200 },
    );
    let sluice = Sluice::start(&webhook_config(&sink.url, FAST_RETRY, ""));
    post_all(&sluice, &events(5, 50), 50).await;

    wait_until(Duration::from_secs(60), "49 deliveries", || async {
        (sink.accepted().len() >= 49).then_some(())
    })
    .await;
    let received = sink.received();
    assert_eq!(
        received
            .iter()
            .filter(|r| r.message_id == "user-3-2")
            .count(),
        1,
        "never retried"
    );
    let by_user = accepted_by_user(&received);
    assert_eq!(by_user["user-3"], vec![0, 1, 3, 4, 5, 6, 7, 8, 9]);

    let pool = db(&sluice).await;
    let (attempt, code, text): (i32, String, String) = sqlx::query_as(
        "SELECT attempt, error_code, error_text FROM aborted_jobs WHERE message_id = 'user-3-2'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((attempt, code.as_str()), (1, "http_400"));
    assert_eq!(text, "HTTP 400 (empty body)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_aborted_after_max_attempts_and_window() {
    let sink = Sink::with(SECRET, |r| if r.user == "user-0" { 503 } else { 200 });
    let retry =
        r#"{ min_backoff = "200ms", max_backoff = "400ms", max_attempts = 3, window = "0s" }"#;
    let sluice = Sluice::start(&webhook_config(&sink.url, retry, ""));
    post_all(&sluice, &events(2, 4), 4).await;
    let pool = db(&sluice).await;
    wait_until(
        Duration::from_secs(30),
        "user-0's jobs to be aborted",
        || async {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM aborted_jobs WHERE user_key = 'user-0'")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            (n == 2).then_some(())
        },
    )
    .await;
    let attempts: Vec<i32> =
        sqlx::query_scalar("SELECT attempt FROM aborted_jobs ORDER BY event_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(attempts, vec![3, 3], "each aborted after max_attempts");
    assert_eq!(accepted_by_user(&sink.received())["user-1"], vec![0, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_throttles_without_spending_an_attempt() {
    let sink = Sink::with(SECRET, |r| {
        if r.message_id == "user-1-0" && r.nth == 1 {
            429
        } else {
            200
        }
    });
    let sluice = Sluice::start(&webhook_config(&sink.url, FAST_RETRY, ""));
    let pool = db(&sluice).await;
    post_all(&sluice, &events(2, 6), 6).await;

    let (state, attempt): (String, i32) = wait_until(Duration::from_secs(30), "the throttled job", || async {
        sqlx::query_as("SELECT state::text, attempt FROM job_overview WHERE message_id = 'user-1-0' AND error_code = 'throttled'")
            .fetch_optional(&pool)
            .await
            .unwrap()
    })
    .await;
    match state.as_str() {
        "failed" | "executing" => assert_eq!(attempt, 0, "a throttle is not an attempt"),
        "delivered" => assert_eq!(attempt, 1, "only the delivery counts"),
        other => panic!("{other}"),
    }

    wait_until(Duration::from_secs(30), "6 deliveries", || async {
        (sink.accepted().len() >= 6).then_some(())
    })
    .await;
    assert_in_order_exactly_once(&sink.received(), 2, 3);
    wait_all_delivered(&pool, "hook", 6).await;
    let attempt: i32 =
        sqlx::query_scalar("SELECT attempt FROM job_overview WHERE message_id = 'user-1-0'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        attempt, 1,
        "the throttle was not an attempt; the delivery was"
    );
    let retried_at = sink
        .received()
        .iter()
        .filter(|r| r.message_id == "user-1-0")
        .map(|r| r.at)
        .collect::<Vec<_>>();
    assert_eq!(retried_at.len(), 2);
    assert!(
        retried_at[1] - retried_at[0] >= Duration::from_millis(900),
        "waited for Retry-After"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_destination_retries_its_own_jobs_and_delays_no_other() {
    let sink = Sink::ok(SECRET);
    // Nothing listens on port 1: every request to `down` is refused.
    let extra = format!(
        "\n[[destination]]\nid = \"down\"\nworkspace = \"acme\"\nplugin = \"webhook\"\nconfig = {{ url = \"http://127.0.0.1:1/hook\", secret = \"{SECRET}\" }}\nretry = {FAST_RETRY}\n"
    );
    let config = webhook_config(&sink.url, FAST_RETRY, &extra).replace(
        r#"destinations = ["hook"]"#,
        r#"destinations = ["hook", "down"]"#,
    );
    let sluice = Sluice::start(&config);
    post_all(&sluice, &events(5, 50), 50).await;

    wait_until(
        Duration::from_secs(30),
        "50 deliveries to the live destination",
        || async { (sink.accepted().len() >= 50).then_some(()) },
    )
    .await;
    assert_in_order_exactly_once(&sink.received(), 5, 10);
    let pool = db(&sluice).await;
    let failed: Vec<(String, i32)> = wait_until(
        Duration::from_secs(30),
        "failed heads of `down`",
        || async {
            let rows: Vec<(String, i32)> = sqlx::query_as(
                "SELECT error_code, attempt FROM failed_jobs WHERE destination_id = 'down'",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            (rows.len() == 5).then_some(rows)
        },
    )
    .await;
    assert!(
        failed
            .iter()
            .all(|(code, attempt)| code == "http_connect" && *attempt >= 1),
        "{failed:?}"
    );
    let depth: i64 = sqlx::query_scalar(
        "SELECT pending + executing + failed FROM destination_depth WHERE destination_id = 'down'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(depth, 50, "nothing of the dead destination is lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_down_for_every_key_is_paused_and_probed_then_drained_in_order() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let down = Arc::new(AtomicBool::new(true));
    let flag = down.clone();
    let sink = Sink::with(SECRET, move |_| {
        if flag.load(Ordering::SeqCst) {
            503
        } else {
            200
        }
    });
    let sluice = Sluice::start(&webhook_config(&sink.url, FAST_RETRY, ""));
    let pool = db(&sluice).await;
    post_all(&sluice, &events(20, 40), 40).await;

    // Every key's head fails once, then the breaker opens instead of retrying each key.
    let mut sluice = sluice;
    sluice.wait_for_log(Duration::from_secs(30), |l| {
        l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("destination failing for every key"))
    });
    let attempts = || async {
        sqlx::query_scalar::<_, i64>("SELECT coalesce(sum(attempt), 0)::bigint FROM job_state")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    // The outcomes are recorded right after the breaker decision is logged.
    let at_open = wait_until(
        Duration::from_secs(10),
        "the failed heads to be recorded",
        || async {
            let n = attempts().await;
            (n >= 20).then_some(n)
        },
    )
    .await;
    assert_eq!(
        at_open, 20,
        "one failed attempt per key before the breaker opened"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = attempts().await;
    // Per-key retries (1 s, then 2 s backoff) would have spent ~40 more by now; probes spend one
    // at a time (after 1 s, then 2 s more).
    assert!(
        later - at_open <= 3,
        "only probes spend attempts while open: {later} vs {at_open}"
    );

    down.store(false, Ordering::SeqCst);
    wait_until(
        Duration::from_secs(30),
        "all 40 delivered after recovery",
        || async { (sink.accepted().len() >= 40).then_some(()) },
    )
    .await;
    assert_in_order_exactly_once(&sink.received(), 20, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_caps_events_per_second() {
    // 40 events/s with a burst of one second's worth: 120 events take at least 2 s.
    let sink = Sink::ok(SECRET);
    let sluice = Sluice::start(&webhook_config(&sink.url, FAST_RETRY, "rate_limit = 40"));
    post_all(&sluice, &events(20, 120), 120).await;
    wait_until(Duration::from_secs(60), "120 deliveries", || async {
        (sink.accepted().len() >= 120).then_some(())
    })
    .await;
    let received = sink.received();
    assert_in_order_exactly_once(&received, 20, 6);
    let mut at: Vec<_> = received.iter().map(|r| r.at).collect();
    at.sort();
    // Within any span of t seconds, at most 40 + 40·t events (a little slack for the sink's
    // clock, which stamps on arrival, not on send).
    for (i, start) in at.iter().enumerate() {
        for (j, end) in at.iter().enumerate().skip(i) {
            let t = end.duration_since(*start).as_secs_f64() + 0.05;
            let n = (j - i + 1) as f64;
            assert!(n <= 40.0 + 40.0 * t + 1.0, "{n} events within {t:.3}s");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_halves_the_calls_until_the_job_is_alone_then_aborts_it() {
    // user-3's first event is always too large; everything else is fine.
    let sink = Sink::with(
        SECRET,
        |r| if r.message_id == "user-3-0" { 413 } else { 200 },
    );
    let sluice = Sluice::start(&webhook_config(&sink.url, FAST_RETRY, ""));
    let pool = db(&sluice).await;
    post_all(&sluice, &events(20, 100), 100).await;

    let (code, attempt): (Option<String>, i32) = wait_until(
        Duration::from_secs(60),
        "user-3-0 to be aborted",
        || async {
            sqlx::query_as(
                "SELECT error_code, attempt FROM aborted_jobs WHERE message_id = 'user-3-0'",
            )
            .fetch_optional(&pool)
            .await
            .unwrap()
        },
    )
    .await;
    assert_eq!(code.as_deref(), Some("http_413"));
    assert_eq!(attempt, 1, "the smaller calls before it spent no attempt");
    assert!(
        sluice.count_log(
            |l| l["fields"]["message"] == "destination answered too large; halving the calls"
        ) >= 1,
        "the calls were halved first"
    );
    wait_until(Duration::from_secs(60), "99 deliveries", || async {
        (sink.accepted().len() >= 99).then_some(())
    })
    .await;
    // Everyone else in order, user-3 without its first event.
    let by_user = accepted_by_user(&sink.received());
    for (user, seqs) in &by_user {
        let want: Vec<i64> = if user == "user-3" {
            (1..5).collect()
        } else {
            (0..5).collect()
        };
        assert_eq!(seqs, &want, "{user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_failing_jobs_logs_a_few_lines_and_a_count_of_the_rest() {
    // Every event refused for good: 600 jobs aborted, one per user.
    let sink = Sink::with(SECRET, |_| 400);
    let sluice = Sluice::start(&webhook_config(&sink.url, FAST_RETRY, ""));
    let pool = db(&sluice).await;
    post_all(&sluice, &events(600, 600), 100).await;
    wait_until(Duration::from_secs(60), "600 aborted jobs", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM aborted_jobs")
            .fetch_one(&pool)
            .await
            .ok()?;
        (n == 600).then_some(())
    })
    .await;

    // The lines held back are counted in one line per window, reported when the window
    // ends or the lane goes idle, even though no job fails after the flood. The lane gives
    // its lease back once it has run dry, reporting what its last window held back first.
    const HELD_BACK: &str =
        "per-job log lines held back in the last window (see failed_jobs and aborted_jobs)";
    let is = |l: &Value, message: &str| l["fields"]["message"] == message;
    let accounted = || {
        let logged = sluice.count_log(|l| is(l, "job aborted")) as u64;
        let counts: Vec<u64> = sluice
            .logs(|l| is(l, HELD_BACK))
            .iter()
            .map(|l| l["fields"]["lines"].as_u64().expect("a count of lines"))
            .collect();
        (logged, counts)
    };
    wait_until(
        Duration::from_secs(60),
        "the lane to run dry, give its lease back and report every abort",
        || async {
            let owner: Option<uuid::Uuid> =
                sqlx::query_scalar("SELECT owner FROM lanes WHERE destination_id = 'hook'")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
            let (logged, counts) = accounted();
            (owner.is_none() && logged + counts.iter().sum::<u64>() >= 600).then_some(())
        },
    )
    .await;
    let (logged, counts) = accounted();
    let held_back: u64 = counts.iter().sum();
    // Every abort is either a line or counted, exactly once: none lost, none counted twice.
    assert_eq!(
        logged + held_back,
        600,
        "{logged} lines and {counts:?} held back for 600 aborted jobs"
    );
    // A few lines (20 per window)...
    assert!(
        (20..=100).contains(&logged),
        "{logged} lines for 600 aborted jobs"
    );
    // ...and the rest as a count, in one line per window (a window that holds lines back has
    // logged its 20 first), not a line per job.
    assert!(
        !counts.is_empty() && counts.len() as u64 * 20 <= logged && counts.iter().all(|n| *n > 0),
        "held back {counts:?} with {logged} lines logged"
    );
    // A line about a job names the job, its key, the lane and the plugin.
    let line = sluice
        .find_log(|l| is(l, "job aborted"))
        .expect("a job aborted line");
    let fields = &line["fields"];
    assert!(fields["job"].is_u64(), "{line}");
    assert!(
        fields["key"]
            .as_str()
            .is_some_and(|k| k.starts_with("user-")),
        "{line}"
    );
    assert_eq!(fields["plugin"], "webhook", "{line}");
    assert!(
        fields["lane"].as_str().is_some_and(|l| l.contains("hook")),
        "{line}"
    );
}

/// Five destinations of one source: each gets every event, in order, exactly once, while their
/// lanes share their reads of the log (`store::read_cache`); one of them fails a user's first
/// event once, so its lane parks and retries that user's events while the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_destinations_of_one_source_share_their_reads_and_each_gets_every_event_in_order() {
    let sinks: Vec<Sink> = (0..5)
        .map(|i| {
            if i == 4 {
                Sink::with(SECRET, |r| {
                    if r.user == "user-1" && r.seq == 0 && r.nth == 1 {
                        503
                    } else {
                        200
                    }
                })
            } else {
                Sink::ok(SECRET)
            }
        })
        .collect();
    let ids: Vec<String> = (0..5).map(|i| format!("d{i}")).collect();
    let tables: String = sinks
        .iter()
        .zip(&ids)
        .map(|(sink, id)| {
            let config = format!(r#"{{ url = "{}", secret = "{SECRET}" }}"#, sink.url);
            destination_table(id, "webhook", &config, FAST_RETRY)
        })
        .collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let sluice = Sluice::start(&source_config(&id_refs, &tables));
    for round in 0..4 {
        post_all(&sluice, &rounds("", 5, round * 10, round * 10 + 10), 25).await;
    }
    for (sink, id) in sinks.iter().zip(&ids) {
        let what = format!("200 deliveries to {id}");
        wait_until(Duration::from_secs(60), &what, || async {
            (sink.accepted().len() >= 200).then_some(())
        })
        .await;
        assert_in_order_exactly_once(&sink.received(), 5, 40);
    }
    assert!(
        sinks[4].received().iter().any(|r| r.status == 503),
        "the flaky destination failed once"
    );
    // Served from memory: what another lane of the source read, or what ingest handed over
    // at its commit (one copy for every lane at the head).
    let shared = metric_sum(&sluice, "sluice_log_reads_total{", r#"from="shared""#).await;
    let handed = metric_sum(&sluice, "sluice_log_reads_total{", r#"from="ingest""#).await;
    assert!(
        shared + handed > 0.0,
        "some reads were served from memory: {}",
        metrics_page(&sluice).await
    );
}
