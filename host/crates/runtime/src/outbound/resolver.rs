//! Name resolution under the network policy: the connector connects only to the addresses
//! this lets through.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use tower::Service;

use crate::net_policy::NetworkPolicy;

/// Resolves names with the system resolver and keeps only the addresses the policy permits; a
/// name with none left fails with [`AddressDenied`]. The connector connects to what this
/// returns, so the checked addresses are the ones used.
#[derive(Clone, Debug)]
pub struct PolicyResolver {
    inner: GaiResolver,
    policy: Arc<NetworkPolicy>,
}

impl PolicyResolver {
    pub fn new(inner: GaiResolver, policy: Arc<NetworkPolicy>) -> PolicyResolver {
        PolicyResolver { inner, policy }
    }
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
    use crate::net_policy::AddressDenied;

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
}
