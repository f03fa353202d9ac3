//! A private PostgreSQL cluster for `sluice serve` when no `DATABASE_URL` is given.
//!
//! Contract:
//! - The cluster lives under the data directory (`<data_dir>/postgres/`) and listens only on a
//!   Unix socket in a directory of its own, so it cannot clash with another server's TCP port.
//! - First start runs `initdb`; later starts reuse the cluster. A cluster left running by a
//!   `sluice` that was killed (`kill -9`) is found through `pg_ctl status` and adopted as is.
//! - PostgreSQL refuses to run as root. When we are root the server runs as the `postgres`
//!   user, which must be able to reach the cluster: if any parent of the data directory is not
//!   traversable by others (e.g. `/root`), the cluster is placed in
//!   `/var/lib/sluice/pg-<hash of the data dir>` instead, and the log says so.
//! - The server runs in its own process group so that a Ctrl-C aimed at `sluice` does not stop
//!   the database before `sluice` has written its last job outcomes; `stop` shuts it down.
//! - [`ServerOptions`] add a TCP port on 127.0.0.1 and settings for other uses of the same
//!   machinery (the nodes of a [`citus::CitusCluster`]); `sluice serve` uses the defaults.

mod binaries;
pub mod citus;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::process::Command;

pub use binaries::PgBinaries;

/// The port only names the socket file (`.s.PGSQL.<port>`): the server listens on no TCP port.
const SOCKET_PORT: u16 = 5432;
/// Unix socket paths are limited to 107 bytes on Linux; leave room for `/.s.PGSQL.5432`.
const MAX_SOCKET_DIR_LEN: usize = 90;

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPgError {
    #[error(
        "no PostgreSQL server binaries found (looked in $SLUICE_PG_BIN, `pg_config --bindir`, \
         /usr/lib/postgresql/*/bin and $PATH); install PostgreSQL (e.g. `apt-get install \
         postgresql`) or set DATABASE_URL"
    )]
    NoBinaries,
    #[error("running as root, but there is no `postgres` user to run the embedded server as")]
    NoPostgresUser,
    #[error("{action} failed: {detail}")]
    Command { action: String, detail: String },
    #[error("embedded postgres: {context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmbeddedPgError {
    let context = context.into();
    move |source| EmbeddedPgError::Io { context, source }
}

/// How to run a cluster beyond the defaults that suit `sluice serve`.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Also listen on `127.0.0.1:<port>`, and give a TCP URL (Citus nodes connect to each
    /// other over TCP). The Unix socket stays, named after this port.
    pub tcp_port: Option<u16>,
    /// `name = value` settings given after the defaults, so they override them. Applied at
    /// every start, not written to the cluster's files; an adopted server keeps its own.
    pub settings: Vec<(String, String)>,
}

/// The user the server runs as when we are root.
#[derive(Debug, Clone)]
struct RunAs {
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    home: PathBuf,
}

/// A running private cluster. Call [`EmbeddedPostgres::stop`] on shutdown; if the value is
/// dropped without it (a panic unwinding through `sluice::run`), the server is stopped then.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bins: PgBinaries,
    cluster_dir: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<RunAs>,
    url: String,
    stopped: bool,
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let mut cmd = std::process::Command::new(self.bins.pg_ctl());
        cmd.arg("stop")
            .arg("-D")
            .arg(&self.cluster_dir)
            .args(["-m", "fast", "-w", "-t", "60"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(user) = &self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .env("HOME", &user.home);
        }
        let _ = cmd.status();
    }
}

impl EmbeddedPostgres {
    /// Initialises (first run), adopts (left running) or starts the cluster for `data_dir`.
    pub async fn start(data_dir: &Path) -> Result<EmbeddedPostgres, EmbeddedPgError> {
        EmbeddedPostgres::start_with(data_dir, &ServerOptions::default()).await
    }

    /// [`EmbeddedPostgres::start`] with a TCP port and extra settings.
    pub async fn start_with(
        data_dir: &Path,
        options: &ServerOptions,
    ) -> Result<EmbeddedPostgres, EmbeddedPgError> {
        let bins = PgBinaries::find().ok_or(EmbeddedPgError::NoBinaries)?;
        std::fs::create_dir_all(data_dir).map_err(io(format!("create {}", data_dir.display())))?;
        let data_dir = data_dir
            .canonicalize()
            .map_err(io(format!("resolve {}", data_dir.display())))?;

        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or(EmbeddedPgError::NoPostgresUser)?;
            Some(RunAs {
                uid: user.uid,
                gid: user.gid,
                home: user.dir,
            })
        } else {
            None
        };

        let mut root = data_dir.join("postgres");
        if run_as.is_some() && !traversable_by_others(&data_dir) {
            root = PathBuf::from("/var/lib/sluice").join(format!("pg-{}", short_hash(&data_dir)));
            tracing::info!(
                data_dir = %data_dir.display(),
                cluster = %root.display(),
                "the data directory is not reachable by the `postgres` user; keeping the embedded cluster elsewhere"
            );
        }
        let cluster_dir = root.join("data");
        let mut socket_dir = root.join("run");
        if socket_dir.as_os_str().len() > MAX_SOCKET_DIR_LEN {
            socket_dir = std::env::temp_dir().join(format!("sluice-pg-{}", short_hash(&root)));
        }
        for dir in [&root, &socket_dir] {
            std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        }
        if let Some(&RunAs { uid, gid, .. }) = run_as.as_ref() {
            for dir in [&root, &socket_dir] {
                nix::unistd::chown(dir.as_path(), Some(uid), Some(gid)).map_err(|e| {
                    EmbeddedPgError::Io {
                        context: format!("chown {} to postgres", dir.display()),
                        source: e.into(),
                    }
                })?;
            }
        }

        let url = match options.tcp_port {
            Some(port) => format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            None => format!(
                "postgres://postgres@localhost/postgres?host={}&port={SOCKET_PORT}",
                socket_dir.display()
            ),
        };
        let pg = EmbeddedPostgres {
            bins,
            cluster_dir,
            socket_dir,
            run_as,
            url,
            stopped: false,
        };

        if !pg.cluster_dir.join("PG_VERSION").exists() {
            pg.initdb(&root).await?;
        }
        if pg.is_running().await {
            tracing::info!(cluster = %pg.cluster_dir.display(), "adopting the embedded postgres left running by an earlier sluice");
        } else {
            pg.start_server(&root, options).await?;
            tracing::info!(cluster = %pg.cluster_dir.display(), "started embedded postgres");
        }
        Ok(pg)
    }

    /// Connection URL (Unix socket) for sqlx.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn cluster_dir(&self) -> &Path {
        &self.cluster_dir
    }

    /// The postmaster's pid (from `postmaster.pid`), for CPU accounting; `None` if unreadable.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.cluster_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Fast shutdown: open transactions are rolled back, committed data is safe.
    pub async fn stop(mut self) -> Result<(), EmbeddedPgError> {
        let mut cmd = self.command(self.bins.pg_ctl());
        cmd.arg("stop")
            .arg("-D")
            .arg(&self.cluster_dir)
            .args(["-m", "fast", "-w", "-t", "60"]);
        run(cmd, "pg_ctl stop").await?;
        self.stopped = true;
        tracing::info!(cluster = %self.cluster_dir.display(), "stopped embedded postgres");
        Ok(())
    }

    async fn initdb(&self, root: &Path) -> Result<(), EmbeddedPgError> {
        tracing::info!(cluster = %self.cluster_dir.display(), "initialising embedded postgres (first run)");
        let mut cmd = self.command(self.bins.initdb());
        cmd.arg("-D")
            .arg(&self.cluster_dir)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ])
            .current_dir(root);
        run(cmd, "initdb").await.map(|_| ())
    }

    async fn is_running(&self) -> bool {
        let mut cmd = self.command(self.bins.pg_ctl());
        cmd.arg("status").arg("-D").arg(&self.cluster_dir);
        matches!(cmd.output().await, Ok(out) if out.status.success())
    }

    async fn start_server(
        &self,
        root: &Path,
        server: &ServerOptions,
    ) -> Result<(), EmbeddedPgError> {
        let listen = match server.tcp_port {
            Some(port) => format!("-c listen_addresses=127.0.0.1 -p {port}"),
            None => format!("-c listen_addresses='' -p {SOCKET_PORT}"),
        };
        // Room for several hosts (each with its pool) and tools; a buffer pool and WAL budget
        // sized for a queue that writes continuously (the defaults checkpoint every 1 GB).
        // New WAL segments are not zero-filled: a fresh cluster has no old segments to recycle
        // until its checkpoints estimate how many it needs, and with zero-filling the commit
        // that fills a segment first writes 16 MB to the next one. At 1,000 events/s that was
        // a 14 ms COMMIT every ~11 s, the p99 of the latency benchmark: 19.5–21.2 ms in six
        // runs against 11.5–14.6 ms without it (2026-12-04T10:30Z, `--scenario latency`; one
        // run of nine had a 100 ms stall, not seen again), ingest unchanged. ext4 allocates
        // the blocks as WAL is written.
        let mut options = format!(
            "{listen} -k {} -c max_connections=200 \
             -c shared_buffers=256MB -c max_wal_size=4GB -c checkpoint_timeout=15min \
             -c wal_init_zero=off",
            self.socket_dir.display()
        );
        for (name, value) in &server.settings {
            // pg_ctl hands `-o` to a shell: quote each setting as one word.
            options.push_str(" -c ");
            options.push_str(&shell_quote(&format!("{name}={value}")));
        }
        let mut cmd = self.command(self.bins.pg_ctl());
        cmd.arg("start")
            .arg("-D")
            .arg(&self.cluster_dir)
            .arg("-l")
            .arg(root.join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &options])
            .current_dir(root)
            // Own process group: a terminal's Ctrl-C must reach sluice only.
            .process_group(0);
        run(cmd, "pg_ctl start")
            .await
            .map_err(|e| match e {
                EmbeddedPgError::Command { action, detail } => EmbeddedPgError::Command {
                    action,
                    detail: format!(
                        "{detail} (server log: {})",
                        root.join("postgres.log").display()
                    ),
                },
                other => other,
            })
            .map(|_| ())
    }

    fn command(&self, program: PathBuf) -> Command {
        let mut cmd = Command::new(program);
        cmd.stdin(std::process::Stdio::null()).kill_on_drop(false);
        if let Some(user) = &self.run_as {
            // HOME too: the server's own libpq (Citus connecting to other nodes) reads
            // `$HOME/.postgresql/`, and root's home is closed to the `postgres` user.
            cmd.uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .env("HOME", &user.home);
        }
        cmd
    }
}

async fn run(mut cmd: Command, action: &str) -> Result<String, EmbeddedPgError> {
    let out = cmd.output().await.map_err(io(format!("run {action}")))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if detail.is_empty() {
        detail = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    Err(EmbeddedPgError::Command {
        action: action.to_string(),
        detail: format!("{} ({detail})", out.status),
    })
}

/// `s` as one single-quoted POSIX shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Whether every directory from `/` down to `dir` can be traversed by other users.
fn traversable_by_others(dir: &Path) -> bool {
    dir.ancestors().all(|d| {
        std::fs::metadata(d)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

fn short_hash(path: &Path) -> String {
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    hex::encode(&digest[..6])
}
