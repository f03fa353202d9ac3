//! `stalled-uploads`: the memory budget for request bodies, at the scale of the issue that
//! asked for it ("The memory budget holds in RSS, not only in its own count").
//!
//! A host with `ingest_memory = "256MiB"` is warmed up (one batch delivered to devnull) and its
//! resident memory read (the baseline). Then 200 connections with a valid key each declare a
//! 4,000,000-byte `POST /v1/batch`, send 3,999,000 bytes and stall; a second round does the
//! same with 400. The budget admits as many bodies as fit (buffers of the declared length,
//! counted before their first byte), refuses the rest with 503 at once, and the admitted ones
//! end with 408 once they have sent nothing for 10 s. The host's RSS is sampled every 100 ms.
//!
//! Reported per round: admitted vs refused; the peak RSS above the baseline against
//! `ingest_memory` plus the fixed overhead README documents (16 MiB); and the RSS two seconds
//! after the last answer against the baseline (large bodies live in maps of their own, which
//! go back to the OS when answered).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::env::{ConfigBuilder, Host, wait_drained};
use super::load::base64;
use super::{Bench, Row, thousands, tools};

const MIB: u64 = 1 << 20;
const INGEST_MEMORY: u64 = 256 * MIB;
/// README's `ingest_memory`: RSS stays within the budget plus this fixed overhead
/// (connections, hyper's read buffers, allocator slack).
const OVERHEAD: u64 = 16 * MIB;
const DECLARED: usize = 4_000_000;
const SENT: usize = 3_999_000;
/// Longer than any way a stalled body can end (10 s without a byte, 60 s in all).
const ANSWER_WAIT: Duration = Duration::from_secs(90);
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Memory freed by the allocator may take a moment to be returned: RSS is read this long
/// after the last answer (the target), and again at `SETTLE_LONG` (to see whether it goes on
/// falling).
const SETTLE: Duration = Duration::from_secs(2);
const SETTLE_LONG: Duration = Duration::from_secs(10);

/// How one stalled upload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Refused by the budget.
    Busy,
    /// Admitted, then timed out.
    TimedOut,
    Other(u16),
    /// Closed or reset without an answer.
    NoAnswer,
}

struct Round {
    connections: usize,
    endings: Vec<Ending>,
    start: u64,
    peak: u64,
    after: u64,
    after_long: u64,
    took: Duration,
}

impl Round {
    fn count(&self, f: impl Fn(Ending) -> bool) -> usize {
        self.endings.iter().filter(|e| f(**e)).count()
    }
}

impl Bench {
    pub(super) async fn stalled_uploads(&mut self) -> anyhow::Result<()> {
        let db = self.pg.fresh_db("stalled").await?;
        let mut config = ConfigBuilder::new(&self.plugins).destination("noop", "devnull", "{}");
        config.server_extra = format!("ingest_memory = \"{}MiB\"\n", INGEST_MEMORY / MIB);
        let host = Host::start(&self.host_dir("stalled"), &config.text(), &db)?;
        let pid = host.pid().context("the host has a pid")?;
        warm_up(&host, &db).await?;
        let baseline = tools::rss_bytes(pid);
        eprintln!(
            "bench: stalled-uploads: baseline RSS {} MiB ({})",
            baseline / MIB,
            memory_detail(pid)
        );
        let mut failed = Vec::new();
        for connections in [200, 400] {
            let round = round(&host, pid, connections).await?;
            let (peak_ok, back_ok) = self.push_round(&round, baseline);
            if !peak_ok || !back_ok {
                failed.push(connections);
            }
            // A well-behaved client is served again once the burst is over.
            good_batch(&host, &format!("after-{connections}")).await?;
        }
        drop(host);
        anyhow::ensure!(
            failed.is_empty(),
            "the budget did not hold in RSS with {failed:?} connections (figures above)"
        );
        Ok(())
    }

    /// The round's two rows; whether the peak and the memory given back met their targets.
    fn push_round(&mut self, r: &Round, baseline: u64) -> (bool, bool) {
        let mib = |b: u64| b as f64 / MIB as f64;
        let busy = r.count(|e| e == Ending::Busy);
        let timed_out = r.count(|e| e == Ending::TimedOut);
        let other = r.connections - busy - timed_out;
        let grew = r.peak.saturating_sub(baseline);
        let peak_ok = grew <= INGEST_MEMORY + OVERHEAD;
        let kept = r.after.saturating_sub(baseline);
        let back_ok = kept < OVERHEAD;
        let mut outcome =
            format!("{timed_out} admitted (408 after the stall), {busy} refused (503)");
        if other > 0 {
            outcome.push_str(&format!(
                ", {other} otherwise: {:?}",
                r.endings
                    .iter()
                    .filter(|e| !matches!(e, Ending::Busy | Ending::TimedOut))
                    .collect::<Vec<_>>()
            ));
        }
        self.rows.push(Row {
            scenario: format!(
                "stalled uploads: {} connections each sent {} of {} bytes (ingest_memory {} MiB): peak RSS over baseline",
                r.connections,
                thousands(SENT as f64),
                thousands(DECLARED as f64),
                INGEST_MEMORY / MIB
            ),
            sluice: format!(
                "+{:.0} MiB ({:.0} → {:.0} MiB; {:.0} MiB at the round's start)",
                mib(grew),
                mib(baseline),
                mib(r.peak),
                mib(r.start)
            ),
            peer: format!("{outcome}; {:.1} s", r.took.as_secs_f64()),
            ratio: None,
            target: format!(
                "≤ {} + {} MiB",
                INGEST_MEMORY / MIB,
                OVERHEAD / MIB
            ),
            met: Some(peak_ok && other == 0),
        });
        self.rows.push(Row {
            scenario: format!(
                "stalled uploads, {} connections: RSS {} s after the last answer",
                r.connections,
                SETTLE.as_secs()
            ),
            sluice: format!("+{:.0} MiB ({:.0} MiB)", mib(kept), mib(r.after)),
            peer: format!(
                "{} s after: +{:.0} MiB ({:.0} MiB)",
                SETTLE_LONG.as_secs(),
                mib(r.after_long.saturating_sub(baseline)),
                mib(r.after_long)
            ),
            ratio: None,
            target: format!("< baseline + {} MiB (given back)", OVERHEAD / MIB),
            met: Some(back_ok),
        });
        (peak_ok && other == 0, back_ok)
    }
}

/// One good batch, delivered: plugin instances, pools and buffers exist before the baseline.
async fn warm_up(host: &Host, db: &str) -> anyhow::Result<()> {
    good_batch(host, "warm-up").await?;
    wait_drained(db, Duration::from_secs(60)).await?;
    Ok(())
}

/// A batch of one event, retried on 503 as SDKs do; fails unless it is accepted.
async fn good_batch(host: &Host, user: &str) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let body = serde_json::json!({
        "batch": [{"type": "track", "event": "Warm", "userId": user, "properties": {}}]
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = http
            .post(host.url("/v1/batch"))
            .basic_auth("wk_0", Some(""))
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status == 200 {
            return Ok(());
        }
        anyhow::ensure!(
            (status == 503 || status == 0) && Instant::now() < deadline,
            "a good batch ({user}) was answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `connections` stalled uploads at once, the host's RSS sampled until every one has ended.
async fn round(host: &Host, pid: u32, connections: usize) -> anyhow::Result<Round> {
    let start = tools::rss_bytes(pid);
    let stop = CancellationToken::new();
    let sampler = tokio::spawn(sample_rss(pid, stop.clone()));
    let head: Arc<[u8]> = upload_head(&host.addr).into_bytes().into();
    let body: Arc<[u8]> = vec![b' '; SENT].into();
    let started = Instant::now();
    let mut uploads = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (addr, head, body) = (host.addr.clone(), head.clone(), body.clone());
        uploads.spawn(async move { stalled_upload(&addr, &head, &body).await });
    }
    let mut endings = Vec::with_capacity(connections);
    while let Some(ending) = uploads.join_next().await {
        endings.push(ending.context("an upload task panicked")??);
    }
    let took = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    stop.cancel();
    let (peak, at_peak) = sampler.await.context("the RSS sampler panicked")?;
    let after = tools::rss_bytes(pid);
    let after_detail = memory_detail(pid);
    tokio::time::sleep(SETTLE_LONG - SETTLE).await;
    let after_long = tools::rss_bytes(pid);
    eprintln!(
        "bench: stalled-uploads {connections}: RSS at start {} MiB; peak {} MiB ({at_peak}); after {} MiB ({after_detail}); {} s after {} MiB ({})",
        start / MIB,
        peak / MIB,
        after / MIB,
        SETTLE_LONG.as_secs(),
        after_long / MIB,
        memory_detail(pid)
    );
    let round = Round {
        connections,
        endings,
        start,
        peak: peak.max(start),
        after,
        after_long,
        took,
    };
    Ok(round)
}

/// Samples the host's RSS until `stop`; the highest, and where the memory was then.
async fn sample_rss(pid: u32, stop: CancellationToken) -> (u64, String) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    let (mut peak, mut detail) = (0, String::new());
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let rss = tools::rss_bytes(pid);
                if rss > peak {
                    peak = rss;
                    detail = memory_detail(pid);
                }
            }
            _ = stop.cancelled() => return (peak, detail),
        }
    }
}

/// The head of a `POST /v1/batch` with a valid key, announcing `DECLARED` bytes.
fn upload_head(addr: &str) -> String {
    format!(
        "POST /v1/batch HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {}\r\nContent-Type: application/json\r\nContent-Length: {DECLARED}\r\n\r\n",
        base64(b"wk_0:")
    )
}

/// Sends the head and `body` (one short of what the head declares), then neither sends nor
/// closes: the connection stays open until the host answers and closes it.
async fn stalled_upload(addr: &str, head: &[u8], body: &[u8]) -> anyhow::Result<Ending> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (mut read, mut write) = stream.into_split();
    let send = async {
        // A refused upload is answered and closed while it is still sending: the write then
        // fails, which is expected.
        if write.write_all(head).await.is_ok() {
            let _ = write.write_all(body).await;
        }
    };
    // Read while sending: the answer to a refused upload comes before its body is read.
    let answer = async {
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(ANSWER_WAIT, read.read_to_end(&mut buf)).await;
        buf
    };
    let ((), answer) = tokio::join!(send, answer);
    // Only now may the writing half go (dropping it sends FIN, which would end the body).
    drop(write);
    Ok(ending(&answer))
}

fn ending(answer: &[u8]) -> Ending {
    let status = std::str::from_utf8(answer.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(503) => Ending::Busy,
        Some(408) => Ending::TimedOut,
        Some(s) => Ending::Other(s),
        None => Ending::NoAnswer,
    }
}

/// The host's memory in more detail, from `/proc/PID/smaps`: resident memory in the maps that
/// hold bodies (anonymous maps whose size is a multiple of a body's map: neighbours merge), in
/// the rest of anonymous memory (the heap: mimalloc's arena, hyper's buffers, ...), and in
/// files (the binary, compiled plugins).
fn memory_detail(pid: u32) -> String {
    let body_map = DECLARED.next_multiple_of(page_size()) as u64;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut bodies, mut body_bytes, mut heap, mut files, mut maps) = (0u64, 0u64, 0u64, 0u64, 0);
    let mut current: Option<(u64, bool)> = None;
    for line in smaps.lines() {
        if let Some(rss) = line.strip_prefix("Rss:") {
            let kib: u64 = rss
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            match current {
                Some((size, true)) if size.is_multiple_of(body_map) => {
                    bodies += size / body_map;
                    body_bytes += kib << 10;
                }
                Some((_, true)) => heap += kib << 10,
                Some((_, false)) => files += kib << 10,
                None => {}
            }
        } else if let Some(map) = mapping(line) {
            maps += 1;
            current = Some(map);
        }
    }
    format!(
        "bodies' maps {} MiB ({bodies} bodies), other anonymous {} MiB, file-backed {} MiB, {maps} mappings",
        body_bytes / MIB,
        heap / MIB,
        files / MIB
    )
}

/// A mapping's header line in `smaps`: its size, and whether it is anonymous (no file; the
/// `[heap]` and `[stack]` pseudo-files count as anonymous).
fn mapping(line: &str) -> Option<(u64, bool)> {
    let mut fields = line.split_whitespace();
    let (from, to) = fields.next()?.split_once('-')?;
    let size = u64::from_str_radix(to, 16).ok()? - u64::from_str_radix(from, 16).ok()?;
    // Permissions, offset, device, inode, then the path if any.
    let path = fields.nth(4);
    Some((size, path.is_none_or(|p| p.starts_with('['))))
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |n| n as usize)
}
