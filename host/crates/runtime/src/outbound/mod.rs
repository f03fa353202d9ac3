//! The host's outbound HTTP client, shared by every plugin: HTTP/1.1 with keep-alive
//! connections kept per origin (`connections`), TLS through rustls with the platform's roots.
//!
//! Kept deliberately thin (no redirects, no retries, no cookie or proxy layers): a plugin's
//! request goes out as it was written, once, to a host the allowlist has already checked.
//! Redirects in particular are never followed, so a response cannot lead a plugin elsewhere.
//!
//! One client per network policy (`net_policy`): a kept connection is reused for any request
//! to the same origin without resolving again, so two destinations whose policies differ must
//! never share one.

mod connections;
mod resolver;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::GaiResolver;
use tower::ServiceExt;

use super::net_policy::{AddressDenied, NetworkPolicy};
use connections::{Conn, Connections, Failure, Origin};
pub use resolver::PolicyResolver;

/// Longest wait for a TCP (and TLS) connection to be set up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Connector = hyper_rustls::HttpsConnector<HttpConnector<PolicyResolver>>;

/// Why a request produced no response.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Connect(String),
    /// The destination's address is one plugins may not reach (see `net_policy`).
    #[error("{0}")]
    DeniedAddress(AddressDenied),
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Other(String),
}

/// A response, body read in full.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// The shared client; cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    connector: Connector,
    connections: Arc<Connections>,
    policy: Arc<NetworkPolicy>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Outbound {
    pub fn new(policy: NetworkPolicy) -> anyhow::Result<Outbound> {
        let policy = Arc::new(policy);
        use anyhow::Context;
        // rustls is built without a bundled crypto provider; install ring's once per process
        // (a second install is a no-op error we can ignore).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = <rustls::ClientConfig as rustls_platform_verifier::ConfigVerifierExt>::with_platform_verifier()
            .context("loading the platform's TLS roots")?;
        let mut http = HttpConnector::new_with_resolver(PolicyResolver::new(
            GaiResolver::new(),
            policy.clone(),
        ));
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        // HTTP/1.1 only (the ALPN offer says so): see `connections`.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let connections = Arc::new(Connections::default());
        close_idle_connections(&connections)?;
        Ok(Outbound {
            connector,
            connections,
            policy,
        })
    }

    /// Sends one request and reads the response, at most `max_body` bytes of it, all within
    /// `timeout`.
    pub async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Response, OutboundError> {
        // IP literals skip the resolver (the connector connects to them directly): check them
        // here.
        if let Some(host) = request.uri().host() {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(addr) = bare.parse::<IpAddr>() {
                self.policy
                    .check(addr)
                    .map_err(OutboundError::DeniedAddress)?;
            }
        }
        let origin = Origin::of(request.uri())?;
        let request = connections::origin_form(request, &origin)?;
        // Boxed: the exchange's state runs to kilobytes (hyper's futures), and an unboxed
        // future is moved whole each time a caller moves its own (into a stream, a task).
        let exchange = Box::pin(self.exchange(origin, request, max_body));
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| OutboundError::Timeout(timeout))?
    }

    /// The exchange on a kept connection, or a new one. A request that a kept connection
    /// handed back unsent (it closed in the meantime) goes once more, on a new connection.
    async fn exchange(
        &self,
        origin: Origin,
        request: http::Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Response, OutboundError> {
        let (mut conn, kept) = match self.connections.take(&origin).await {
            Some(conn) => (conn, true),
            None => (self.connect(&origin).await?, false),
        };
        let (result, reusable) = match conn.exchange(request, max_body).await {
            (Err(Failure::NotSent(request)), _) if kept => {
                conn = self.connect(&origin).await?;
                conn.exchange(*request, max_body).await
            }
            done => done,
        };
        if reusable {
            self.connections.give_back(origin, conn);
        }
        result.map_err(|failure| match failure {
            Failure::NotSent(_) => {
                OutboundError::Other("the connection closed before the request was sent".into())
            }
            Failure::Failed(e) => e,
        })
    }

    async fn connect(&self, origin: &Origin) -> Result<Box<Conn>, OutboundError> {
        tracing::debug!(%origin, "opening a connection");
        let io = self
            .connector
            .clone()
            .oneshot(origin.uri()?)
            .await
            .map_err(|e| classify_connect(&*e))?;
        Conn::handshake(io).await
    }
}

/// Closes connections left idle too long even when no request comes to look at them (a
/// destination removed, a quiet night), until the client is dropped.
fn close_idle_connections(connections: &Arc<Connections>) -> anyhow::Result<()> {
    use anyhow::Context;
    let runtime = tokio::runtime::Handle::try_current()
        .context("the outbound HTTP client is made inside the tokio runtime")?;
    let connections = Arc::downgrade(connections);
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(connections::PRUNE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(connections) = connections.upgrade() else {
                return;
            };
            connections.close_expired(std::time::Instant::now());
        }
    });
    Ok(())
}

/// A connect error: refused by the network policy (the resolver's [`AddressDenied`], anywhere
/// in the chain), or anything else that kept the connection from being made.
fn classify_connect(e: &(dyn std::error::Error + 'static)) -> OutboundError {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(denied) = s.downcast_ref::<AddressDenied>() {
            return OutboundError::DeniedAddress(denied.clone());
        }
        source = s.source();
    }
    OutboundError::Connect(error_chain(e))
}

/// hyper's top-level messages are vague ("client error (Connect)"); the causes say what
/// happened.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests;
