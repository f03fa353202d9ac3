//! Keep-alive HTTP/1.1 connections to each origin, each driven by the task that sends on it.
//!
//! hyper's pooled client (`hyper_util`'s legacy `Client`) runs every connection in a task of
//! its own: a request is handed to that task and its response handed back, two wake-ups
//! between tasks, often between threads, per request. Against nginx on the 2-core bench
//! machine (2026-12-04, 16 requests in flight, ~1 KB bodies) that cost 19–21 µs of CPU per
//! request, against 10–12 µs for the same hyper code (`client::conn::http1`) with the
//! connection driven by the requesting task, and 5 µs for a bare loop of writes and reads.
//! So here a request takes a connection from its origin's idle list, polls it while its
//! exchange runs, and gives it back once the response has been read in full.
//!
//! An idle connection is polled by no one. What arrived while it sat (a server's close, most
//! often) is read when it is taken: a connection that ended, or that cannot take a request at
//! once, is dropped and the next one tried. A server may still close it in the moment between
//! that look and the request's first byte; hyper then hands the request back unsent
//! (`try_send_request`) and it goes out once more on a new connection, as hyper's pooled client
//! does. A request that was written is never sent twice here.
//!
//! Every connection speaks HTTP/1.1 (TLS offers only `http/1.1` by ALPN): webhooks are one
//! small request each, and HTTP/1.1 keep-alive is what receivers expect from webhook senders.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Mutex;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{OutboundError, Response, error_chain};

/// What a connection runs on: TCP, with TLS for `https`.
pub(super) type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// Idle connections are closed after this.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// How often a task of the client's looks over every origin's idle connections for ones past
/// [`POOL_IDLE`] (a checkout also skips its own origin's).
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// Most idle connections kept per origin.
const MAX_IDLE_PER_ORIGIN: usize = 1024;

/// Where a connection goes: scheme, host and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Origin {
    pub https: bool,
    pub authority: String,
}

impl Origin {
    pub fn of(uri: &http::Uri) -> Result<Origin, OutboundError> {
        let authority = uri
            .authority()
            .ok_or_else(|| OutboundError::Other(format!("no host in `{uri}`")))?;
        Ok(Origin {
            https: uri.scheme_str() == Some("https"),
            authority: host_and_port(authority).to_string(),
        })
    }

    /// The URI the connector connects to (and how logs name the origin).
    pub fn uri(&self) -> Result<http::Uri, OutboundError> {
        self.to_string()
            .parse()
            .map_err(|e: http::uri::InvalidUri| OutboundError::Other(e.to_string()))
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority)
    }
}

/// One HTTP/1.1 connection: where requests go in, and the state machine that must be polled
/// for them to go out and their responses to come back.
pub(super) struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: http1::Connection<Io, Full<Bytes>>,
}

impl Conn {
    /// Boxed: a connection is moved into and out of the idle lists, and its driver holds
    /// kilobytes of state inline.
    pub async fn handshake(io: Io) -> Result<Box<Conn>, OutboundError> {
        let (sender, driver) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| OutboundError::Connect(error_chain(&e)))?;
        Ok(Box::new(Conn { sender, driver }))
    }

    /// Reads what arrived while the connection sat idle and says whether it can take a
    /// request now. Never waits: a connection that is not ready at once is not worth a wait
    /// when a new one can be made.
    async fn ready_now(&mut self) -> bool {
        poll_fn(|cx| {
            if Pin::new(&mut self.driver).poll(cx).is_ready() {
                return Poll::Ready(false); // closed (or broken) while idle
            }
            Poll::Ready(matches!(self.sender.poll_ready(cx), Poll::Ready(Ok(()))))
        })
        .await
    }

    /// Sends `request` (origin-form URI, `Host` set) and reads its response, at most
    /// `max_body` bytes of body, driving the connection meanwhile. Also says whether the
    /// connection can be used again.
    pub async fn exchange(
        &mut self,
        request: http::Request<Full<Bytes>>,
        max_body: usize,
    ) -> (Result<Response, Failure>, bool) {
        let Conn { sender, driver } = self;
        let mut ended = false;
        let result = {
            let mut work = pin!(async {
                let response = sender.try_send_request(request).await.map_err(|mut e| {
                    match e.take_message() {
                        Some(request) => Failure::NotSent(Box::new(request)),
                        None => Failure::Failed(OutboundError::Other(error_chain(e.error()))),
                    }
                })?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, max_body)
                    .collect()
                    .await
                    .map_err(|e| {
                        Failure::Failed(if e.is::<http_body_util::LengthLimitError>() {
                            OutboundError::TooLarge(max_body)
                        } else {
                            OutboundError::Other(error_chain(&*e))
                        })
                    })?
                    .to_bytes();
                Ok(Response {
                    status: parts.status.as_u16(),
                    headers: parts.headers,
                    body,
                })
            });
            poll_fn(|cx| {
                // The driver writes the request and feeds the response; once it has ended
                // (the server closed, or the connection broke) the exchange ends with it.
                if !ended && Pin::new(&mut *driver).poll(cx).is_ready() {
                    ended = true;
                }
                work.as_mut().poll(cx)
            })
            .await
        };
        let reusable = result.is_ok() && !ended && !sender.is_closed();
        (result, reusable)
    }
}

/// Why an exchange produced no response.
pub(super) enum Failure {
    /// The connection closed before the request's first byte was written: it may go again.
    NotSent(Box<http::Request<Full<Bytes>>>),
    Failed(OutboundError),
}

/// Idle connections by origin, each with the moment it was given back.
type Idle = HashMap<Origin, Vec<(Box<Conn>, Instant)>>;

#[derive(Default)]
pub(super) struct Connections {
    idle: Mutex<Idle>,
}

impl Connections {
    /// An idle connection to `origin` that can take a request now, if there is one.
    pub async fn take(&self, origin: &Origin) -> Option<Box<Conn>> {
        loop {
            let mut conn = self.pop(origin)?;
            if conn.ready_now().await {
                return Some(conn);
            }
        }
    }

    /// Gives a connection whose last exchange went through back to `origin`'s idle list.
    pub fn give_back(&self, origin: Origin, conn: Box<Conn>) {
        let mut idle = self.lock();
        let kept = idle.entry(origin).or_default();
        if kept.len() < MAX_IDLE_PER_ORIGIN {
            kept.push((conn, Instant::now()));
        }
    }

    /// Closes the idle connections that have been idle for [`POOL_IDLE`] at `now`.
    pub fn close_expired(&self, now: Instant) {
        let mut idle = self.lock();
        for kept in idle.values_mut() {
            kept.retain(|(_, since)| now.duration_since(*since) < POOL_IDLE);
        }
        idle.retain(|_, kept| !kept.is_empty());
    }

    /// How many idle connections are kept, over every origin.
    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// The most recently used idle connection (its peer is the least likely to have closed
    /// it), skipping any idle for longer than [`POOL_IDLE`].
    fn pop(&self, origin: &Origin) -> Option<Box<Conn>> {
        let now = Instant::now();
        let mut idle = self.lock();
        let kept = idle.get_mut(origin)?;
        while let Some((conn, since)) = kept.pop() {
            if now.duration_since(since) < POOL_IDLE {
                return Some(conn);
            }
        }
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        // A panic while holding the lock leaves only a list of connections behind: still
        // usable, so poisoning is ignored.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `request` as a connection to `origin` sends it: the origin-form URI (path and query) and
/// a `Host` header of the origin's host and port unless the plugin set one, as hyper's pooled
/// client did.
pub(super) fn origin_form(
    mut request: http::Request<Full<Bytes>>,
    origin: &Origin,
) -> Result<http::Request<Full<Bytes>>, OutboundError> {
    if !request.headers().contains_key(HOST) {
        let host = HeaderValue::from_str(&origin.authority)
            .map_err(|e| OutboundError::Other(e.to_string()))?;
        request.headers_mut().insert(HOST, host);
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|e: http::uri::InvalidUri| OutboundError::Other(e.to_string()))?;
    *request.uri_mut() = path;
    Ok(request)
}

/// An authority without its user info, which is never sent (the host strips it from plugins'
/// URLs before they get here; this keeps it out of the `Host` header and the connection key
/// whoever calls).
fn host_and_port(authority: &http::uri::Authority) -> &str {
    let text = authority.as_str();
    text.rsplit_once('@').map_or(text, |(_, host)| host)
}
