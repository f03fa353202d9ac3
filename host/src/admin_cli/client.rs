//! The admin API over HTTP, for the CLI: bearer token, JSON in and out, and errors sorted by
//! what the exit code should say.

use reqwest::StatusCode;
use serde_json::Value;

/// Why a command failed, by exit code (see `EXIT_CODES`).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The request was wrong (a 400 from the server, or bad arguments): exit 2.
    #[error("{0}")]
    Usage(String),
    /// No token, a wrong token, or a read-only token on a change (401, 403): exit 77.
    #[error("{0}")]
    Auth(String),
    /// Anything else (unreachable, not found, server error): exit 1.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Auth(_) => 77,
            CliError::Failed(_) => 1,
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Result<Client, CliError> {
        // reqwest is built without a bundled crypto provider (see runtime::host_api).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| CliError::Failed(format!("cannot make an HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        let mut url = url::Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| CliError::Usage(format!("bad --url {}: {e}", self.base)))?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let req = self.http.get(url);
        self.send(req).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        let req = self.http.post(format!("{}{path}", self.base)).json(body);
        self.send(req).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        let req = self.http.put(format!("{}{path}", self.base)).json(body);
        self.send(req).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        let req = self.http.delete(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, CliError> {
        let Some(token) = &self.token else {
            return Err(CliError::Auth(
                "no admin token: pass --token or set SLUICE_ADMIN_TOKEN".into(),
            ));
        };
        let resp = req
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| CliError::Failed(format!("cannot reach {}: {e}", self.base)))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| CliError::Failed(format!("reading the answer: {e}")))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(body);
        }
        let message = body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        // A refused catalog item names its field; the message starts with it already.
        let message = format!("{status}: {message}");
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CliError::Auth(message),
            StatusCode::BAD_REQUEST | StatusCode::CONFLICT => CliError::Usage(message),
            _ => CliError::Failed(message),
        })
    }
}
