//! The admin HTTP API and CLI against a real host (`[admin]` listener, bearer tokens): the
//! operator workflow, the CLI, and the security properties (tokens, scopes, origin, secrets,
//! parameterised filters, write keys).

mod cli;
mod security;
mod workflow;

use serde_json::Value;

use crate::harness::*;

pub const READ_TOKEN: &str = "read-token-0123456789abcdef";
pub const OPS_TOKEN: &str = "ops-token-0123456789abcdef";

/// `[admin]` with a read token `viewer` and an operator token `ops`, on any free port.
pub fn admin_section() -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[admin.tokens]]
name = "viewer"
scope = "read"
token = "{READ_TOKEN}"

[[admin.tokens]]
name = "ops"
scope = "operator"
token = "{OPS_TOKEN}"
"#
    )
}

/// The admin API's base URL, from the host's log.
pub fn admin_url(sluice: &Sluice) -> String {
    let line = sluice
        .find_log(|l| l["fields"]["admin_addr"].is_string())
        .expect("the admin API logs its address");
    format!(
        "http://{}",
        line["fields"]["admin_addr"].as_str().unwrap_or_default()
    )
}

/// A client of one host's admin API with one token.
pub struct Api {
    pub base: String,
    pub token: Option<String>,
}

impl Api {
    pub fn new(sluice: &Sluice, token: Option<&str>) -> Api {
        Api {
            base: admin_url(sluice),
            token: token.map(str::to_string),
        }
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn get_q(&self, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let mut url = url::Url::parse(&format!("{}{path}", self.base)).expect("a URL");
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let req = client().get(url);
        send(self.auth(req)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_q(path, &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let req = client().post(format!("{}{path}", self.base)).json(body);
        send(self.auth(req)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let req = client().put(format!("{}{path}", self.base)).json(body);
        send(self.auth(req)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let req = client().delete(format!("{}{path}", self.base));
        send(self.auth(req)).await
    }

    /// GET that must succeed.
    pub async fn ok(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let (status, body) = self.get_q(path, query).await;
        assert_eq!(status, 200, "GET {path} {query:?}: {body}");
        body
    }

    /// POST that must succeed; returns `jobs` of the answer (or 0).
    pub async fn act(&self, path: &str, body: Value) -> i64 {
        let (status, answer) = self.post(path, &body).await;
        assert_eq!(status, 200, "POST {path} {body}: {answer}");
        answer["jobs"].as_i64().unwrap_or(0)
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("admin API reachable");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The jobs of a list answer.
pub fn jobs(v: &Value) -> Vec<Value> {
    v["jobs"].as_array().cloned().unwrap_or_default()
}
