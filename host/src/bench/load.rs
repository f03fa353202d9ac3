//! Load: clients posting batches like an SDK does, and a receiver that measures how long an
//! event took from the client's send to its arrival.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;

/// The events of a load: `users` users, `pad` bytes of padding (≈ `pad + 150` bytes each).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub users: u64,
    pub pad: usize,
    pub batch: usize,
}

impl Shape {
    /// What most scenarios send: 10,000 users, ~1 KB events, batches of 100.
    pub const STANDARD: Shape = Shape {
        users: 10_000,
        pad: 900,
        batch: 100,
    };
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// The body of batch number `n` (its events numbered `n * batch ..`), stamped with the send time.
pub fn batch_body(shape: Shape, run: &str, n: u64, pad: &str) -> String {
    let mut body = String::with_capacity(shape.batch * (shape.pad + 200) + 64);
    body.push_str(r#"{"batch":["#);
    let t = unix_nanos();
    for i in 0..shape.batch as u64 {
        let seq = n * shape.batch as u64 + i;
        if i > 0 {
            body.push(',');
        }
        let _ = write!(
            body,
            r#"{{"type":"track","event":"Order Completed","userId":"user-{}","messageId":"{run}-{seq}","properties":{{"seq":{seq},"t":{t},"pad":"{pad}"}}}}"#,
            seq % shape.users
        );
    }
    body.push_str(r#"],"sentAt":"2026-11-27T00:00:00Z"}"#);
    body
}

/// What a load run did.
#[derive(Debug, Clone, Copy)]
pub struct LoadResult {
    pub events: u64,
    pub elapsed: Duration,
    pub failed_requests: u64,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn client() -> anyhow::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .context("building the load client")
}

/// Posts `total` events in batches over `concurrency` connections, as fast as they are
/// accepted.
pub async fn ingest(
    url: &str,
    write_key: &str,
    total: u64,
    shape: Shape,
    concurrency: usize,
    run: &str,
) -> anyhow::Result<LoadResult> {
    let client = client()?;
    let batches = total.div_ceil(shape.batch as u64);
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let pad: Arc<str> = "x".repeat(shape.pad).into();
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, next, failed, pad) =
            (client.clone(), next.clone(), failed.clone(), pad.clone());
        let (url, key, run) = (url.to_string(), write_key.to_string(), run.to_string());
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= batches {
                    return;
                }
                let body = batch_body(shape, &run, n, &pad);
                // A 503 (store busy or away) is retried, as SDKs do.
                for _ in 0..100 {
                    let sent = client
                        .post(&url)
                        .basic_auth(&key, Some(""))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => break,
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    Ok(LoadResult {
        events: batches * shape.batch as u64,
        elapsed: started.elapsed(),
        failed_requests: failed.load(Ordering::Relaxed),
    })
}

/// Posts a batch every `interval` for `duration` (a steady load well below capacity).
/// What a steady load sent.
pub struct Sent {
    /// Events acknowledged (2xx).
    pub events: u64,
    /// Each acknowledged request's time from send to answer (the answer comes after commit).
    pub acks: Vec<Duration>,
}

pub async fn steady(
    url: &str,
    write_key: &str,
    shape: Shape,
    interval: Duration,
    duration: Duration,
    run: &str,
) -> anyhow::Result<Sent> {
    let client = client()?;
    let pad = "x".repeat(shape.pad);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + duration;
    let mut n = 0;
    let mut sends = tokio::task::JoinSet::new();
    while Instant::now() < end {
        tick.tick().await;
        let body = batch_body(shape, run, n, &pad);
        let request = client
            .post(url)
            .basic_auth(write_key, Some(""))
            .header("content-type", "application/json")
            .body(body);
        sends.spawn(async move {
            let started = Instant::now();
            let ok = request.send().await.is_ok_and(|r| r.status().is_success());
            ok.then(|| started.elapsed())
        });
        n += 1;
    }
    let mut acks = Vec::new();
    while let Some(r) = sends.join_next().await {
        if let Ok(Some(took)) = r {
            acks.push(took);
        }
    }
    Ok(Sent {
        events: acks.len() as u64 * shape.batch as u64,
        acks,
    })
}

/// A webhook receiver that records, per event, the time since the client stamped it.
#[derive(Clone, Default)]
pub struct LatencyReceiver {
    latencies: Arc<Mutex<Vec<Duration>>>,
}

impl LatencyReceiver {
    /// Serves on an ephemeral port until the runtime ends; returns the URL.
    pub async fn start(&self) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .route("/{*path}", post(receive))
            .with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(format!("http://{addr}/hook"))
    }

    pub fn count(&self) -> usize {
        self.latencies.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// (p50, p99) of what arrived after the first `skip`.
    pub fn percentiles(&self, skip: usize) -> Option<(Duration, Duration)> {
        let mut l: Vec<Duration> = self
            .latencies
            .lock()
            .ok()?
            .iter()
            .skip(skip)
            .copied()
            .collect();
        if l.is_empty() {
            return None;
        }
        l.sort();
        let at = |q: f64| l[((l.len() - 1) as f64 * q).round() as usize];
        Some((at(0.5), at(0.99)))
    }
}

/// The one field of a delivered event the latency receiver reads: deserialized into this, the
/// rest of the body is skipped rather than built into a `Value` (the receiver shares the two
/// cores with the host it measures).
#[derive(serde::Deserialize)]
struct SentAt {
    properties: SentAtProperties,
}

#[derive(serde::Deserialize)]
struct SentAtProperties {
    t: u64,
}

async fn receive(State(r): State<LatencyReceiver>, body: Bytes) -> &'static str {
    let now = unix_nanos();
    let sent = serde_json::from_slice::<SentAt>(&body)
        .ok()
        .map(|s| s.properties.t);
    if let Some(t) = sent
        && let Ok(mut l) = r.latencies.lock()
    {
        l.push(Duration::from_nanos(now.saturating_sub(t as u128) as u64));
    }
    "ok"
}

/// `n` clients that open a connection and send a request head one byte a second, reconnecting
/// when the server closes on them, until `stop`.
pub fn slow_clients(addr: &str, n: usize, stop: tokio_util::sync::CancellationToken) {
    use tokio::io::AsyncWriteExt;
    for _ in 0..n {
        let (addr, stop) = (addr.to_string(), stop.clone());
        tokio::spawn(async move {
            let head = format!(
                "POST /v1/batch HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-Padding: {}\r\n",
                "x".repeat(4096)
            );
            while !stop.is_cancelled() {
                let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                for b in head.as_bytes() {
                    if stop.is_cancelled() || s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.cancelled() => break,
                    }
                }
            }
        });
    }
}

/// Standard base64 with padding: HTTP Basic credentials and RudderStack's `AnonymousId`
/// header (the binary has no base64 dependency of its own; the load only encodes short ids).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_latency_receiver_reads_the_send_time_past_other_fields() {
        let body = br#"{"type":"track","userId":"u","properties":{"seq":3,"pad":"xx","t":1733390000000000000,"more":{"a":[1,2]}},"context":{}}"#;
        let sent: super::SentAt = serde_json::from_slice(body).expect("a delivered event");
        assert_eq!(sent.properties.t, 1_733_390_000_000_000_000);
        assert!(serde_json::from_slice::<super::SentAt>(br#"{"properties":{}}"#).is_err());
    }

    #[test]
    fn base64_pads_like_the_standard() {
        assert_eq!(super::base64(b"wk_0:"), "d2tfMDo=");
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::base64(b"abc"), "YWJj");
        assert_eq!(super::base64(b""), "");
    }
}
