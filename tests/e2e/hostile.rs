//! Ingest under hostile load: stalled uploads (with and without a valid key), slowloris, and
//! tens of thousands of idle connections. Well-behaved clients keep getting answers and the
//! host's memory stays within its budget.

use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

fn basic(key: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
}

/// The head of a POST /v1/batch announcing a 4 MB body.
fn upload_head(sluice: &Sluice, key: &str) -> String {
    format!(
        "POST /v1/batch HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {}\r\nContent-Type: application/json\r\nContent-Length: 4000000\r\n\r\n",
        sluice.addr,
        basic(key)
    )
}

/// Reads until the connection closes or `deadline`; returns what came back.
async fn response(stream: &mut TcpStream, deadline: Duration) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(deadline, stream.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// A well-behaved batch: retried on 503 as SDKs do; returns the final status.
async fn good_batch(sluice: &Sluice, user: &str, deadline: Duration) -> u16 {
    let until = Instant::now() + deadline;
    loop {
        let status = client()
            .post(sluice.url("/v1/batch"))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&serde_json::json!({ "batch": [track(user, 0)] }))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status != 503 && status != 0 || Instant::now() > until {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_are_refused_or_timed_out_and_memory_stays_in_budget() {
    let sink = Sink::ok(SECRET);
    let sluice = Sluice::start_with_server(
        &webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, ""),
        "ingest_memory = \"32MiB\"",
    );
    let pid = sluice.pid();
    // Warm up (plugin instances, pools) before taking the baseline.
    assert_eq!(
        good_batch(&sluice, "warm-up", Duration::from_secs(30)).await,
        200
    );
    wait_until(Duration::from_secs(30), "the warm-up delivery", || async {
        (!sink.accepted().is_empty()).then_some(())
    })
    .await;
    let base = rss_bytes(pid);

    // 100 uploads with an unknown key: refused from the header, before the body is read.
    let started = Instant::now();
    let mut unknown = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(&sluice.addr).await.unwrap();
        s.write_all(upload_head(&sluice, "wk_nobody").as_bytes())
            .await
            .unwrap();
        s.write_all(&vec![b' '; 64 * 1024]).await.unwrap();
        unknown.push(s);
    }
    for s in &mut unknown {
        let r = response(s, Duration::from_secs(5)).await;
        assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused without waiting for the bodies"
    );

    // 100 uploads with a valid key that send 1 MB and stall: the budget (32 MiB) holds some,
    // the rest are refused with 503 at once; memory stays near the budget.
    let mut stalled = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(&sluice.addr).await.unwrap();
        s.write_all(upload_head(&sluice, WRITE_KEY).as_bytes())
            .await
            .unwrap();
        let _ = s.write_all(&vec![b' '; 1 << 20]).await;
        stalled.push(s);
    }
    // Unbounded, 100 uploads of 4 MB would hold 400 MB; the budget is 32 MiB.
    // Bodies are held in buffers of their declared length, counted before they are
    // allocated: RSS stays within the budget plus a fixed overhead (connections, hyper's
    // read buffers, allocator slack) of 16 MiB.
    let peak = rss_bytes(pid);
    eprintln!(
        "RSS {} MiB before, {} MiB with the uploads stalled",
        base >> 20,
        peak >> 20
    );
    assert!(
        peak < base + (32 << 20) + (16 << 20),
        "memory grew from {} MB to {} MB",
        base >> 20,
        peak >> 20
    );
    // A well-behaved client gets an answer at all times, and is accepted once the stalled
    // uploads have timed out (10 s without a byte).
    assert_eq!(
        good_batch(&sluice, "good-1", Duration::from_secs(40)).await,
        200
    );
    let mut refused = 0;
    let mut timed_out = 0;
    for s in &mut stalled {
        let r = response(s, Duration::from_secs(20)).await;
        if r.starts_with("HTTP/1.1 503") {
            refused += 1;
        } else if r.starts_with("HTTP/1.1 408") {
            timed_out += 1;
        }
    }
    assert!(
        refused > 0 && timed_out > 0,
        "{refused} refused, {timed_out} timed out"
    );
    assert_eq!(refused + timed_out, 100);
    // Large bodies live in maps of their own: their memory goes back when they are answered.
    let after = rss_bytes(pid);
    eprintln!("RSS {} MiB after the uploads ended", after >> 20);
    assert!(
        after < base + (16 << 20),
        "memory not given back: {} MB before, {} MB after",
        base >> 20,
        after >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_and_health_keeps_answering() {
    let sink = Sink::ok(SECRET);
    let sluice = Sluice::start_with_server(
        &webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, ""),
        "header_timeout = \"2s\"",
    );
    let head = upload_head(&sluice, WRITE_KEY).into_bytes();
    let mut slow = Vec::new();
    for _ in 0..50 {
        slow.push(TcpStream::connect(&sluice.addr).await.unwrap());
    }
    // A byte every 300 ms: a head that would take minutes.
    let started = Instant::now();
    let mut closed = vec![false; slow.len()];
    for i in 0..20 {
        for (s, c) in slow.iter_mut().zip(closed.iter_mut()) {
            if !*c && s.write_all(&head[i..i + 1]).await.is_err() {
                *c = true;
            }
        }
        let health = client().get(sluice.url("/health")).send().await.unwrap();
        assert_eq!(health.status().as_u16(), 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (s, c) in slow.iter_mut().zip(closed.iter_mut()) {
        if !*c {
            let r = response(s, Duration::from_secs(1)).await;
            // Closed by the server (possibly with a 408 first).
            *c = r.is_empty() || r.starts_with("HTTP/1.1 408");
        }
    }
    assert!(closed.iter().all(|c| *c), "every slow head was cut off");
    assert!(started.elapsed() < Duration::from_secs(15));
}

/// Reads until the server closes `stream`; returns when, or `None` if it stays open `limit`.
async fn closed_after(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_nothing_or_stay_idle_are_closed_at_header_timeout() {
    let sink = Sink::ok(SECRET);
    let sluice = Sluice::start_with_server(
        &webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, ""),
        "header_timeout = \"2s\"",
    );
    // Never a byte.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(&sluice.addr).await.unwrap());
    }
    // One request, then nothing more on the kept-alive connection.
    let mut kept = TcpStream::connect(&sluice.addr).await.unwrap();
    let get = format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", sluice.addr);
    kept.write_all(get.as_bytes()).await.unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    for s in silent.iter_mut().chain(std::iter::once(&mut kept)) {
        let after = closed_after(s, Duration::from_secs(8)).await;
        assert!(
            after.is_some(),
            "a connection was still open 8 s after a 2 s header timeout"
        );
    }
    // The listener still serves.
    let health = client().get(sluice.url("/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_do_not_lock_out_a_good_client() {
    let sink = Sink::ok(SECRET);
    let sluice = Sluice::start_with_server(
        &webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, ""),
        "max_connections = 2000",
    );
    // Raise this process's own file limit: it opens the idle connections.
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    // Four times the host's limit (a debug-built test client opens about 1,000 a second).
    let want = (hard.max(soft) as usize).saturating_sub(1000).min(8_000);
    let opening = Instant::now();
    let mut openers = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let addr = sluice.addr.clone();
        openers.spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..want / 50 {
                match TcpStream::connect(&addr).await {
                    Ok(s) => mine.push(s),
                    Err(_) => break,
                }
            }
            mine
        });
    }
    let mut idle = Vec::with_capacity(want);
    while let Some(Ok(mine)) = openers.join_next().await {
        idle.extend(mine);
    }
    assert!(idle.len() >= 5000, "opened only {} connections", idle.len());
    eprintln!(
        "opened {} idle connections in {:?}",
        idle.len(),
        opening.elapsed()
    );
    // The host keeps at most 2,000 of them, closing the idlest to make room, so a client
    // with a request gets in and is answered.
    for i in 0..5 {
        let asked = Instant::now();
        let status = good_batch(&sluice, &format!("good-{i}"), Duration::from_secs(10)).await;
        assert_eq!(status, 200);
        eprintln!("good batch answered in {:?}", asked.elapsed());
    }
    let health = client().get(sluice.url("/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let open = std::fs::read_dir(format!("/proc/{}/fd", sluice.pid()))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(open < 2500, "the host holds {open} descriptors");
}
