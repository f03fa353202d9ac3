//! The host's outbound HTTP client, shared by every plugin: hyper with a keep-alive
//! connection pool, HTTP/1.1 and HTTP/2, TLS through rustls with the platform's roots.
//!
//! Kept deliberately thin (no redirects, no retries, no cookie or proxy layers): a plugin's
//! request goes out as it was written, once, to a host the allowlist has already checked.
//! Redirects in particular are never followed, so a response cannot lead a plugin elsewhere.
//!
//! One client per network policy (`net_policy`): a pooled connection is reused for any request
//! to the same origin without resolving again, so two destinations whose policies differ must
//! never share a pool.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::TokioExecutor;
use tower::Service;

use super::net_policy::{AddressDenied, NetworkPolicy};

/// Longest wait for a TCP (and TLS) connection to be set up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle pooled connections are closed after this.
const POOL_IDLE: Duration = Duration::from_secs(90);

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
#[derive(Clone, Debug)]
pub struct Outbound {
    client: Client<Connector, Full<Bytes>>,
    policy: Arc<NetworkPolicy>,
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
        let mut http = HttpConnector::new_with_resolver(PolicyResolver {
            inner: GaiResolver::new(),
            policy: policy.clone(),
        });
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(1024)
            .build(connector);
        Ok(Outbound { client, policy })
    }

    /// Sends one request and reads the response, at most `max_body` bytes of it, all within
    /// `timeout`.
    pub async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Response, OutboundError> {
        // IP literals skip the resolver (hyper connects to them directly): check them here.
        if let Some(host) = request.uri().host() {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(addr) = bare.parse::<IpAddr>() {
                self.policy
                    .check(addr)
                    .map_err(OutboundError::DeniedAddress)?;
            }
        }
        let exchange = async {
            let response = self.client.request(request).await.map_err(classify)?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        OutboundError::TooLarge(max_body)
                    } else {
                        OutboundError::Other(error_chain(&*e))
                    }
                })?
                .to_bytes();
            Ok(Response {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| OutboundError::Timeout(timeout))?
    }
}

fn classify(e: hyper_util::client::legacy::Error) -> OutboundError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(denied) = s.downcast_ref::<AddressDenied>() {
            return OutboundError::DeniedAddress(denied.clone());
        }
        source = s.source();
    }
    if e.is_connect() {
        OutboundError::Connect(error_chain(&e))
    } else {
        OutboundError::Other(error_chain(&e))
    }
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

/// Resolves names with the system resolver and keeps only the addresses the policy permits; a
/// name with none left fails with [`AddressDenied`]. The connector connects to what this
/// returns, so the checked addresses are the ones used.
#[derive(Clone, Debug)]
pub struct PolicyResolver {
    inner: GaiResolver,
    policy: Arc<NetworkPolicy>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        // RFC 6761: `localhost` and names under it are loopback, whatever a resolver says
        // (with a trailing dot, `localhost.` may otherwise go to DNS and come back as anything).
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        if host == "localhost" || host.ends_with(".localhost") {
            let loopback: Vec<SocketAddr> = vec![
                SocketAddr::from(([127, 0, 0, 1], 0)),
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)),
            ];
            return Box::pin(async move { permitted(&policy, loopback) });
        }
        let resolving = self.inner.call(name);
        Box::pin(async move { permitted(&policy, resolving.await?) })
    }
}

/// The addresses the policy permits; none left is an [`AddressDenied`] error.
fn permitted(
    policy: &NetworkPolicy,
    addrs: impl IntoIterator<Item = SocketAddr>,
) -> Result<std::vec::IntoIter<SocketAddr>, BoxError> {
    let mut first_refusal = None;
    let mut permitted = Vec::new();
    for addr in addrs {
        match policy.check(addr.ip()) {
            Ok(()) => permitted.push(addr),
            Err(denied) => {
                first_refusal.get_or_insert(denied);
            }
        }
    }
    match (permitted.is_empty(), first_refusal) {
        (true, Some(denied)) => Err(Box::new(denied) as BoxError),
        _ => Ok(permitted.into_iter()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(policy: NetworkPolicy) -> PolicyResolver {
        PolicyResolver {
            inner: GaiResolver::new(),
            policy: Arc::new(policy),
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_at_resolution() {
        let name: Name = "localhost".parse().expect("name");
        let err = resolver(NetworkPolicy::default())
            .call(name)
            .await
            .expect_err("localhost resolves to loopback only");
        let denied = err
            .downcast_ref::<AddressDenied>()
            .expect("an AddressDenied");
        assert!(denied.addr.is_loopback(), "{denied}");
    }

    #[tokio::test]
    async fn localhost_with_a_trailing_dot_or_as_a_parent_is_loopback() {
        for host in ["localhost.", "LOCALHOST", "api.localhost", "api.localhost."] {
            let name: Name = host.parse().expect("name");
            let err = resolver(NetworkPolicy::default())
                .call(name)
                .await
                .expect_err(host);
            assert!(
                err.downcast_ref::<AddressDenied>().is_some(),
                "{host}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn an_allowed_network_resolves_to_its_addresses() {
        let name: Name = "localhost".parse().expect("name");
        let policy = NetworkPolicy::new(vec![
            "127.0.0.0/8".parse().expect("cidr"),
            "::1/128".parse().expect("cidr"),
        ]);
        let addrs: Vec<SocketAddr> = resolver(policy)
            .call(name)
            .await
            .expect("allowed")
            .collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }

    #[tokio::test]
    async fn an_ip_literal_is_checked_before_connecting() {
        let outbound = Outbound::new(NetworkPolicy::default()).expect("client");
        let request = http::Request::post("http://127.0.0.1:9/")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let err = outbound
            .send(request, Duration::from_secs(5), 1024)
            .await
            .expect_err("refused");
        assert!(matches!(err, OutboundError::DeniedAddress(_)), "{err}");
    }
}
