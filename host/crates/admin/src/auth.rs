//! Who may call the admin API: a bearer token from `[[admin.tokens]]`, compared in constant
//! time; read-only tokens may only GET. A request with an `Origin` header other than this
//! listener's own origin is refused first: the admin page sends its token in a header, never a
//! cookie, so a foreign page has no business here.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use sluice_config::{AdminConfig, TokenScope};

/// The caller, as the handlers see it (a request extension).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name: the actor in the audit log.
    pub name: String,
    pub scope: TokenScope,
}

struct Token {
    name: String,
    scope: TokenScope,
    /// SHA-256 of the secret: comparing digests keeps the secret's length out of the timing.
    digest: [u8; 32],
}

/// The configured tokens.
pub struct Tokens(Vec<Token>);

/// A token without a secret (a `token_file` that was never read).
#[derive(Debug, thiserror::Error)]
#[error("admin token `{0}` has no secret (its token_file was not read)")]
pub struct MissingSecret(String);

impl Tokens {
    pub fn new(config: &AdminConfig) -> Result<Tokens, MissingSecret> {
        config
            .tokens
            .iter()
            .map(|t| {
                let secret = t
                    .secret
                    .as_ref()
                    .ok_or_else(|| MissingSecret(t.name.clone()))?;
                Ok(Token {
                    name: t.name.clone(),
                    scope: t.scope,
                    digest: Sha256::digest(secret.as_bytes()).into(),
                })
            })
            .collect::<Result<_, _>>()
            .map(Tokens)
    }

    /// The token with this secret. Every token is compared, whatever matches.
    fn find(&self, presented: &str) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for t in &self.0 {
            if bool::from(t.digest.ct_eq(&digest)) {
                found = Some(Caller {
                    name: t.name.clone(),
                    scope: t.scope,
                });
            }
        }
        found
    }
}

/// Middleware: origin check, then token, then scope.
pub async fn authorize(
    State(tokens): State<Arc<Tokens>>,
    mut req: Request,
    next: Next,
) -> Response {
    match check(&tokens, req.method(), req.headers()) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

fn check(tokens: &Tokens, method: &Method, headers: &HeaderMap) -> Result<Caller, ApiError> {
    if let Some(origin) = headers.get(header::ORIGIN)
        && !same_origin(origin.to_str().unwrap_or(""), headers)
    {
        return Err(ApiError::Forbidden(
            "cross-site request refused (the Origin is not this admin listener)".into(),
        ));
    }
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(
            "missing token: send Authorization: Bearer <token>",
        ))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized(
            "malformed Authorization header: use Bearer <token>",
        ))?;
    let caller = tokens
        .find(token)
        .ok_or(ApiError::Unauthorized("invalid token"))?;
    let reads = matches!(*method, Method::GET | Method::HEAD);
    if !reads && caller.scope != TokenScope::Operator {
        return Err(ApiError::Forbidden(format!(
            "token `{}` is read-only; this needs an operator token",
            caller.name
        )));
    }
    Ok(caller)
}

/// The browser's origin must be the one this request was addressed to (its Host).
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::{AdminToken, TokenSource};

    fn tokens() -> Tokens {
        let t = |name: &str, scope, secret: &str| AdminToken {
            name: name.into(),
            scope,
            source: TokenSource::Inline,
            secret: Some(secret.into()),
            line: 1,
        };
        Tokens::new(&AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tokens: vec![
                t("viewer", TokenScope::Read, "read-secret-0123456789"),
                t("ops", TokenScope::Operator, "operator-secret-0123456789"),
            ],
            request_timeout: std::time::Duration::from_secs(1),
        })
        .unwrap()
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8081".parse().unwrap());
        for (k, v) in pairs {
            h.insert(k.clone(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn scopes_tokens_and_origins() {
        let t = tokens();
        let bearer = |s: &str| (header::AUTHORIZATION, format!("Bearer {s}"));
        let (k, v) = bearer("read-secret-0123456789");
        let read = headers(&[(k.clone(), &v)]);
        assert_eq!(check(&t, &Method::GET, &read).unwrap().name, "viewer");
        assert!(matches!(
            check(&t, &Method::POST, &read),
            Err(ApiError::Forbidden(_))
        ));
        let (k2, v2) = bearer("operator-secret-0123456789");
        let op = headers(&[(k2, &v2)]);
        assert_eq!(check(&t, &Method::POST, &op).unwrap().name, "ops");
        let (k3, v3) = bearer("operator-secret-012345678");
        assert!(matches!(
            check(&t, &Method::GET, &headers(&[(k3, &v3)])),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            check(&t, &Method::GET, &headers(&[])),
            Err(ApiError::Unauthorized(_))
        ));
        let same = headers(&[(k.clone(), &v), (header::ORIGIN, "http://127.0.0.1:8081")]);
        assert!(check(&t, &Method::GET, &same).is_ok());
        let foreign = headers(&[(k, &v), (header::ORIGIN, "http://evil.example")]);
        assert!(matches!(
            check(&t, &Method::GET, &foreign),
            Err(ApiError::Forbidden(_))
        ));
    }
}
