//! The site of the browser SDK tests: serves `tests/browser/page.html` and the two SDKs from
//! their npm packages on `http://localhost:<port>` (an origin, and a site, other than Sluice's
//! `http://127.0.0.1:<port>`), and collects what the page reports (`POST /report`).
//!
//! The packages are installed by `npm ci` from `tests/browser/package-lock.json` into
//! `target/e2e/npm`, once per test run, so `cargo test` needs no setup step and the source tree
//! stays clean.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

use crate::harness::server::{Served, serve};
use crate::harness::wait_until;

/// The SDK files a plain page loads with `<script src>` (docs/sources.md), by the path the
/// page asks for.
const SDK_FILES: [(&str, &str); 2] = [
    (
        "@rudderstack/analytics-js",
        "dist/npm/modern/bundled/umd/index.js",
    ),
    ("@segment/analytics-next", "dist/umd/index.js"),
];

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser")
}

/// Installs the pinned packages once per test run (and again whenever the lock file changed).
fn npm_modules() -> PathBuf {
    static INSTALLED: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = installed.as_ref() {
        return dir.clone();
    }
    let prefix = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e/npm");
    std::fs::create_dir_all(&prefix).expect("create target/e2e/npm");
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(browser_dir().join(file), prefix.join(file))
            .unwrap_or_else(|e| panic!("copy tests/browser/{file}: {e}"));
    }
    ensure_npm();
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&prefix)
        .output()
        .expect("run npm ci");
    assert!(
        out.status.success(),
        "npm ci in {} failed: {}",
        prefix.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let modules = prefix.join("node_modules");
    *installed = Some(modules.clone());
    modules
}

/// Debian's nodejs and npm when npm is missing, like the browser itself (harness::browser).
fn ensure_npm() {
    let has_npm = || Command::new("npm").arg("--version").output().is_ok();
    if has_npm() {
        return;
    }
    let ok = crate::harness::apt_install(&["nodejs", "npm"]);
    assert!(
        ok && has_npm(),
        "the browser SDK tests need npm, and `apt-get install -y nodejs npm` failed"
    );
}

struct Site {
    modules: PathBuf,
    reports: Mutex<Vec<Value>>,
}

/// The running site and what its pages reported.
pub struct Page {
    /// `http://localhost:<port>`
    pub origin: String,
    site: Arc<Site>,
    _server: Served,
}

impl Page {
    pub fn start() -> Page {
        let site = Arc::new(Site {
            modules: npm_modules(),
            reports: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/page.html", get(page))
            .route("/node_modules/{*file}", get(sdk_file))
            .route("/report", post(report))
            .with_state(site.clone());
        let server = serve(app, "the SDK test page");
        Page {
            origin: format!("http://localhost:{}", server.addr.port()),
            site,
            _server: server,
        }
    }

    /// The page's URL with these query parameters (see page.html).
    pub fn url(&self, params: &[(&str, &str)]) -> String {
        let mut url = reqwest::Url::parse(&format!("{}/page.html", self.origin)).expect("a URL");
        url.query_pairs_mut().extend_pairs(params);
        url.into()
    }

    pub fn reports(&self) -> Vec<Value> {
        self.site
            .reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The first report that `pred` accepts, once there is one.
    pub async fn wait_report(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(Duration::from_secs(60), what, || async {
            self.reports().into_iter().find(&pred)
        })
        .await
    }

    /// What the SDKs logged as errors (and what the page itself caught).
    pub fn console_errors(&self, sdk: &str) -> Vec<Value> {
        const ERRORS: [&str; 4] = ["error", "uncaught", "unhandledrejection", "page-error"];
        self.reports()
            .into_iter()
            .filter(|r| r["sdk"] == sdk && r["kind"] == "console")
            .filter(|r| ERRORS.contains(&r["level"].as_str().unwrap_or_default()))
            .collect()
    }
}

async fn page() -> Response {
    match tokio::fs::read(browser_dir().join("page.html")).await {
        Ok(html) => ([(header::CONTENT_TYPE, "text/html")], html).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Only the two SDK files are served: a page that needs anything else from the packages (or
/// the network) fails visibly.
async fn sdk_file(State(site): State<Arc<Site>>, UrlPath(file): UrlPath<String>) -> Response {
    let known = SDK_FILES
        .iter()
        .any(|(package, path)| file == format!("{package}/{path}"));
    if !known {
        return StatusCode::NOT_FOUND.into_response();
    }
    match tokio::fs::read(site.modules.join(&file)).await {
        Ok(js) => ([(header::CONTENT_TYPE, "text/javascript")], js).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn report(State(site): State<Arc<Site>>, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    site.reports
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(value);
    StatusCode::NO_CONTENT
}
