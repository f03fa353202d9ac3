//! The ingest listener: HTTP/1.1 and HTTP/2 connections that cannot be held hostage.
//!
//! - **Header timeout**: a connection that does not send a complete request head within
//!   `header_timeout` of starting to wait for one (a slowloris, or an idle keep-alive
//!   connection) is closed. hyper's own timeout covers a head that has begun; a connection
//!   that sends nothing at all is closed by [`idle_watchdog`] at the same deadline.
//! - **Connection limit**: at most `max_connections` are open, well below the process's file
//!   limit (the database, plugins and outbound requests need descriptors too). When a new
//!   connection arrives at the limit, the connection that has been idle (between requests)
//!   the longest is closed to make room, so a flood of idle connections cannot lock out
//!   clients that send requests; only when every connection is busy is the newcomer refused.
//! - Body timeouts and the memory budget for bodies in flight live in `body`.
//!
//! Shutdown stops accepting, lets requests under way finish (bounded), and closes the rest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long requests under way may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Limits of the listener.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// One open connection, as the accept loop sees it.
struct Conn {
    /// Serving a request right now.
    busy: AtomicBool,
    /// Milliseconds since `epoch` when it last finished a request (or was accepted).
    idle_since: AtomicU64,
    close: CancellationToken,
}

struct Registry {
    epoch: Instant,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn len(&self) -> usize {
        self.conns.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Closes the connection idle the longest; `false` if every connection is busy.
    fn evict_idlest(&self) -> bool {
        let Ok(conns) = self.conns.lock() else {
            return false;
        };
        let victim = conns
            .values()
            .filter(|c| !c.busy.load(Ordering::Relaxed) && !c.close.is_cancelled())
            .min_by_key(|c| c.idle_since.load(Ordering::Relaxed));
        match victim {
            Some(c) => {
                c.close.cancel();
                true
            }
            None => false,
        }
    }
}

/// A connection's read buffer at most (see `serve`).
const MAX_READ_BUFFER: usize = 64 * 1024;

/// Pending connections the kernel queues for `accept`: browser traffic opens many short
/// connections at once, and tokio's own default (128) made the kernel drop SYNs (the client
/// retries a second later). The kernel caps it at `net.core.somaxconn`.
pub const ACCEPT_BACKLOG: u32 = 1024;

/// Binds the ingest listener with [`ACCEPT_BACKLOG`].
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's and tokio's bind do: a restarted host rebinds at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Serves `app` on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // hyper grows a connection's read buffer up to ~400 KB while a body streams in fast;
        // with many uploads at once that was heap beyond `ingest_memory` (the RSS budget).
        // 64 KiB still holds any request head (and bodies stream through it).
        .max_buf_size(MAX_READ_BUFFER)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let registry = Arc::new(Registry {
        epoch: Instant::now(),
        conns: Mutex::new(HashMap::new()),
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut next_id: u64 = 0;
    let mut refused_last_logged: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        if registry.len() >= limits.max_connections && !registry.evict_idlest() {
            // Every connection is in the middle of a request: this one has to go.
            if refused_last_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(
                    max = limits.max_connections,
                    "connection limit reached with every connection busy; refusing new connections"
                );
                refused_last_logged = Some(Instant::now());
            }
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        let conn = Arc::new(Conn {
            busy: AtomicBool::new(false),
            idle_since: AtomicU64::new(registry.now_ms()),
            close: CancellationToken::new(),
        });
        if let Ok(mut conns) = registry.conns.lock() {
            conns.insert(id, conn.clone());
        }
        let app = app.clone();
        let tracked = conn.clone();
        let clock = registry.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            // The handlers' client address (per-client rate limits).
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            tracked.busy.store(true, Ordering::Relaxed);
            let (app, tracked, clock) = (app.clone(), tracked.clone(), clock.clone());
            async move {
                let response = app.oneshot(request).await;
                tracked.idle_since.store(clock.now_ms(), Ordering::Relaxed);
                tracked.busy.store(false, Ordering::Relaxed);
                response
            }
        });
        let builder = builder.clone();
        let registry = registry.clone();
        let watcher = graceful.watcher();
        let idle = idle_watchdog(conn.clone(), registry.clone(), limits.header_timeout);
        tokio::spawn(async move {
            let serving = watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
            tokio::select! {
                _ = serving => {}
                // Evicted (or the process is stopping and the grace period is over).
                _ = conn.close.cancelled() => {}
                _ = idle => {}
            }
            if let Ok(mut conns) = registry.conns.lock() {
                conns.remove(&id);
            }
        });
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still under way at shutdown; closing their connections");
        }
    }
    Ok(())
}

/// Resolves once `conn` has waited `timeout` for a request (since it was accepted, or since
/// its last answer) without one starting. A request in progress keeps it open however long it
/// takes (the body has its own timeouts).
async fn idle_watchdog(conn: Arc<Conn>, registry: Arc<Registry>, timeout: Duration) {
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    loop {
        let since = conn.idle_since.load(Ordering::Relaxed);
        let now = registry.now_ms();
        let deadline = since.saturating_add(timeout_ms);
        if now < deadline {
            tokio::time::sleep(Duration::from_millis(deadline - now)).await;
            continue;
        }
        if !conn.busy.load(Ordering::Relaxed) && conn.idle_since.load(Ordering::Relaxed) == since {
            return;
        }
        // Serving a request: it is not idle. Look again a full timeout later (its end moves
        // `idle_since`).
        tokio::time::sleep(timeout).await;
    }
}

/// A connection limit that leaves room under the process's file limit (raised to its hard
/// limit first): a quarter of the descriptors are kept for everything else.
pub fn default_max_connections() -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
    let mut limit = soft;
    if hard > soft && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        limit = hard;
    }
    let usable = limit.saturating_sub(256).saturating_mul(3) / 4;
    usable.clamp(64, 65_536) as usize
}
