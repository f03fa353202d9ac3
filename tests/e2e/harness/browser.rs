//! Headless Chromium for the browser tests (the operator page, the browser SDKs), driven over
//! WebDriver (`fantoccini` + Debian's `chromedriver`). Chromium is installed with apt when
//! missing: the tests must run in CI, not skip. Waits poll with deadlines; nothing sleeps for a
//! fixed time.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::harness::wait_until;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long one element may take to appear or change (the page polls every 3 s).
pub const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// Without the background-networking flags Chromium keeps calling Google, which this network
/// refuses, and stalls; a fresh profile keeps runs independent.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
];

/// Installs Debian's chromium and chromium-driver once per test run if either is missing.
fn ensure_installed() {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return;
    }
    let ok = super::apt_install(&["chromium", "chromium-driver"]);
    assert!(
        ok && Path::new(CHROMEDRIVER).exists(),
        "the browser tests need Debian's chromium and chromium-driver, and `apt-get install -y \
         chromium chromium-driver` failed (it must run as root with apt reachable)"
    );
}

/// A chromedriver process and one Chromium session.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
        ensure_installed();
        // A process group of its own: a test that fails kills chromedriver and the Chromium it
        // started together (killed alone, chromedriver would leave Chromium running).
        let mut driver = Command::new(CHROMEDRIVER)
            .process_group(0)
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let port = driver_port(&mut driver);
        let profile = tempfile::tempdir().expect("a profile dir");
        let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps = json!({
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            // confirm() dialogs stay open until the test answers them.
            "unhandledPromptBehavior": "ignore",
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session through chromedriver");
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// The first element matching `css`, once there is one.
    pub async fn find(&self, css: &str) -> Element {
        let what = format!("an element `{css}`");
        wait_until(WAIT, &what, || async {
            self.client.find(Locator::Css(css)).await.ok()
        })
        .await
    }

    /// Clicks `css`, finding it again if a live refresh replaced it between find and click.
    pub async fn click(&self, css: &str) {
        let what = format!("to click `{css}`");
        wait_until(WAIT, &what, || async {
            let e = self.client.find(Locator::Css(css)).await.ok()?;
            if !e.is_enabled().await.ok()? {
                return None;
            }
            e.click().await.ok()
        })
        .await
    }

    /// The text of `css` once `pred` holds for it.
    pub async fn text_when(&self, css: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = e.text().await
            {
                if pred(&text) {
                    return text;
                }
                last = Some(text);
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for {what} in `{css}`; last seen: {last:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The value of attribute `name` of `css`, once `pred` holds for it.
    pub async fn attr_when(&self, css: &str, name: &str, pred: impl Fn(&str) -> bool) -> String {
        let what = format!("`{css}` [{name}] to match");
        wait_until(WAIT, &what, || async {
            let e = self.client.find(Locator::Css(css)).await.ok()?;
            let v = e.attr(name).await.ok()??;
            pred(&v).then_some(v)
        })
        .await
    }

    /// Types `text` into `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.expect("clear the input");
        e.send_keys(text).await.expect("type into the input");
    }

    /// Clicks `css` once it is enabled and accepts the `confirm()` it opens; returns the
    /// question. (Not `click`: with a dialog open, a retried click would only fail again.)
    pub async fn click_and_confirm(&self, css: &str) -> String {
        let what = format!("`{css}` to be enabled");
        let button = wait_until(WAIT, &what, || async {
            let e = self.client.find(Locator::Css(css)).await.ok()?;
            e.is_enabled().await.ok()?.then_some(e)
        })
        .await;
        // The click may report the dialog it opened as an error; the dialog is what counts.
        let _ = button.click().await;
        self.accept_confirm().await
    }

    /// Accepts the open `confirm()` dialog, returning its question.
    async fn accept_confirm(&self) -> String {
        wait_until(WAIT, "a confirm dialog", || async {
            let question = self.client.get_alert_text().await.ok()?;
            self.client.accept_alert().await.ok()?;
            Some(question)
        })
        .await
    }

    /// Runs a script in the page and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .expect("run a script in the page")
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test never reaches close(): do not leave chromedriver or Chromium running.
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// chromedriver with `--port=0` picks a free port and names it once it listens ("ChromeDriver was
/// started successfully on port N."; an earlier line says "on port 0").
fn driver_port(driver: &mut Child) -> u16 {
    let out = driver.stdout.take().expect("chromedriver's stdout");
    let mut lines = BufReader::new(out).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("read chromedriver's output");
        if let Some(port) = line
            .split("started successfully on port ")
            .nth(1)
            .and_then(|rest| rest.trim_end_matches('.').trim().parse().ok())
        {
            // Keep draining its output so chromedriver never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return port;
        }
        seen.push(line);
    }
    panic!("chromedriver exited without naming its port: {seen:?}");
}
