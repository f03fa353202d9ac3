//! The host's outbound HTTP client, shared by every plugin: hyper with a keep-alive
//! connection pool, HTTP/1.1 and HTTP/2, TLS through rustls with the platform's roots.
//!
//! Kept deliberately thin (no redirects, no retries, no cookie or proxy layers): a plugin's
//! request goes out as it was written, once, to a host the allowlist has already checked.
//! Redirects in particular are never followed, so a response cannot lead a plugin elsewhere.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Longest wait for a TCP (and TLS) connection to be set up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle pooled connections are closed after this.
const POOL_IDLE: Duration = Duration::from_secs(90);

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Why a request produced no response.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Connect(String),
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
}

impl Outbound {
    pub fn new() -> anyhow::Result<Outbound> {
        use anyhow::Context;
        // rustls is built without a bundled crypto provider; install ring's once per process
        // (a second install is a no-op error we can ignore).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = <rustls::ClientConfig as rustls_platform_verifier::ConfigVerifierExt>::with_platform_verifier()
            .context("loading the platform's TLS roots")?;
        let mut http = HttpConnector::new();
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
        Ok(Outbound { client })
    }

    /// Sends one request and reads the response, at most `max_body` bytes of it, all within
    /// `timeout`.
    pub async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Response, OutboundError> {
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
