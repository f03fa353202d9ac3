//! Running the real `sluice` binary: config in a temp dir, embedded Postgres, port 0, and the
//! bound address read from its JSON log (picking a free port first would be racy).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::plugins::{plugin_cache_dir, plugins_dir};

/// The secrets key of the hosts that share a database (`start_on`): 32 bytes in base64.
pub const SHARED_SECRETS_KEY: &str = "c2x1aWNlLWUyZS1zaGFyZWQtc2VjcmV0cy1rZXktMzI=";

/// A running `sluice serve` with its own data directory (and so its own embedded Postgres).
pub struct Sluice {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<Vec<Value>>>,
    pub addr: String,
    pub db_url: String,
    /// Extra environment, kept for restarts.
    env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

/// Builds the config text for a test: sources and destinations in TOML.
pub fn config_text(body: &str) -> String {
    config_text_with(body, "")
}

/// The same, with more `[server]` settings. Test receivers listen on loopback, so plugins may
/// reach 127.0.0.0/8 (the default network policy refuses it).
pub fn config_text_with(body: &str, server: &str) -> String {
    config_text_public_only(
        body,
        &format!("allowed_private_networks = [\"127.0.0.0/8\"]\n{server}"),
    )
}

/// The config text with the default network policy: plugins reach public addresses only.
pub fn config_text_public_only(body: &str, server: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nplugins_dir = \"{}\"\ndata_dir = \"data\"\nplugin_cache_dir = \"{}\"\n{server}\n\n{body}",
        plugins_dir().display(),
        plugin_cache_dir().display()
    )
}

impl Sluice {
    /// Starts sluice in a fresh temp dir with `config_body` (sources/destinations TOML).
    pub fn start(config_body: &str) -> Sluice {
        Sluice::start_with_server(config_body, "")
    }

    /// Starts sluice in a fresh temp dir with `config_body` and more `[server]` settings.
    pub fn start_with_server(config_body: &str, server: &str) -> Sluice {
        Sluice::start_fresh(&config_text_with(config_body, server), &[])
    }

    /// Starts sluice in a fresh temp dir with more environment (`RUST_LOG`, say).
    pub fn start_with_env(config_body: &str, env: &[(&str, &str)]) -> Sluice {
        Sluice::start_fresh(&config_text(config_body), env)
    }

    /// Starts sluice on a shared database with more environment.
    pub fn start_fresh_on(database_url: &str, config_body: &str, env: &[(&str, &str)]) -> Sluice {
        let mut all = vec![("DATABASE_URL", database_url)];
        all.extend_from_slice(env);
        Sluice::start_fresh(&config_text(config_body), &all)
    }

    /// Starts sluice on a shared database (`DATABASE_URL`): one of several hosts, sharing
    /// [`SHARED_SECRETS_KEY`] as the hosts of one database must.
    pub fn start_on(database_url: &str, config_body: &str, server: &str) -> Sluice {
        Sluice::start_fresh(
            &config_text_with(config_body, server),
            &[
                ("DATABASE_URL", database_url),
                ("SLUICE_SECRETS_KEY", SHARED_SECRETS_KEY),
            ],
        )
    }

    fn start_fresh(config: &str, env: &[(&str, &str)]) -> Sluice {
        let tmp = tempfile::Builder::new()
            .prefix("sluice-e2e-")
            .tempdir()
            .expect("tempdir");
        // The embedded Postgres runs as the `postgres` user when we are root: it must be able
        // to traverse the data directory.
        set_mode(tmp.path(), 0o755);
        let dir = tmp.path().to_path_buf();
        let mut s = Sluice::start_in(&dir, config, env);
        s._tmp = Some(tmp);
        s
    }

    /// The process id of the running sluice.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// The embedded PostgreSQL's log file.
    pub fn postgres_log(&self) -> PathBuf {
        self.dir.join("data/postgres/postgres.log")
    }

    /// Starts sluice in `dir` with the full config text and extra environment.
    pub fn start_in(dir: &Path, config: &str, env: &[(&str, &str)]) -> Sluice {
        let config_path = dir.join("sluice.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut s = Sluice {
            dir: dir.to_path_buf(),
            config_path,
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
            addr: String::new(),
            db_url: String::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _tmp: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(crate::harness::sluice_bin());
        cmd.args(["--log-format", "json", "serve", "--config"])
            .arg(&self.config_path)
            // SLUICE_TEST_LOG=debug (or any filter) to see more of a failing test's host.
            .env(
                "RUST_LOG",
                std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn sluice");
        let log = Arc::new(Mutex::new(Vec::new()));
        // The log goes to stderr; stdout is kept too (interleaved), so that tests can check
        // everything the host printed.
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        collect_lines(stdout, log.clone());
        collect_lines(stderr, log.clone());
        self.child = Some(child);
        self.log = log;
        let listening = self.wait_for_log(Duration::from_secs(120), |l| {
            l["fields"]["addr"].is_string()
        });
        self.addr = listening["fields"]["addr"].as_str().unwrap().to_string();
        let db = self
            .find_log(|l| l["fields"]["message"] == "database")
            .expect("database log line");
        self.db_url = db["fields"]["url"].as_str().unwrap().to_string();
    }

    /// Waits for a log line matching `pred`; panics with the log if sluice exits or time runs out.
    pub fn wait_for_log(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.find_log(&pred) {
                return v;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                std::thread::sleep(Duration::from_millis(200));
                panic!("sluice exited ({status}) early; log:\n{}", self.log_text());
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for a log line; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many log lines match `pred` so far.
    pub fn count_log(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.log.lock().unwrap().iter().filter(|l| pred(l)).count()
    }

    /// Every log line matching `pred` so far.
    pub fn logs(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| pred(l))
            .cloned()
            .collect()
    }

    pub fn find_log(&self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        self.log.lock().unwrap().iter().find(|l| pred(l)).cloned()
    }

    pub fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `kill -9`: no shutdown, the embedded Postgres is left running (orphaned).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the same config again (after `kill9`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }

    /// SIGTERM and wait for a clean exit (which also stops the embedded Postgres).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Sluice {
    /// Stops the embedded Postgres behind sluice's back (the store "goes away").
    pub fn stop_postgres(&self) {
        self.pg_ctl(&["stop", "-m", "fast", "-w"]);
    }

    fn cluster_dir(&self) -> PathBuf {
        self.dir.join("data/postgres/data")
    }

    fn pg_ctl(&self, args: &[&str]) {
        let Some(bins) = sluice_store::embedded_pg::PgBinaries::find() else {
            return;
        };
        let mut cmd = Command::new(bins.pg_ctl());
        cmd.arg("-D").arg(self.cluster_dir()).args(args);
        if nix::unistd::geteuid().is_root() {
            use std::os::unix::process::CommandExt;
            if let Ok(Some(u)) = nix::unistd::User::from_name("postgres") {
                cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
            }
        }
        let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        self.stop();
        // Belt and braces: never leave a Postgres behind, even after a kill9 with no restart.
        if self.cluster_dir().join("postmaster.pid").exists() {
            self.pg_ctl(&["stop", "-m", "immediate"]);
        }
    }
}

/// Reads `stream` line by line into `log` (JSON lines parsed, others kept as strings).
fn collect_lines(stream: impl std::io::Read + Send + 'static, log: Arc<Mutex<Vec<Value>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
            log.lock().unwrap().push(v);
        }
    });
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
