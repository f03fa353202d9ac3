//! Making sure the Citus extension is installed in the system's PostgreSQL, building it from the
//! vendored source tarball when it is not.
//!
//! Contract:
//! - Citus counts as installed when `citus.so` is in `pg_config --pkglibdir` and
//!   `citus.control` in `pg_config --sharedir`/extension, for the `pg_config` beside the
//!   server binaries that [`PgBinaries::find`] picks (the server the clusters run on).
//! - Otherwise it is built and installed: Debian's build packages with apt-get (the server's
//!   dev package pinned to the installed server's version: unpinned, apt would pull a newer
//!   minor and upgrade the server with it), then `configure`, `make` and `make install` in a
//!   fresh build directory. `make install` writes into the system's PostgreSQL directories,
//!   so this needs root (CI runs as root).
//! - Concurrent callers (two test binaries at once) are serialised by a lock file; the one
//!   that waited finds Citus installed and returns. The build runs at most once per machine.
//! - Each step's output goes to a log file in the build directory; a failure names the step
//!   and carries the tail of its output.
//!
//! This blocks for minutes on a first run: call it from a thread that may block (before a
//! runtime starts, or in `spawn_blocking`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::embedded_pg::PgBinaries;

/// The Citus release vendored beside the repository (`shared/vendor/`): the newest line that
/// builds against PostgreSQL 15.
pub const CITUS_TARBALL_NAME: &str = "citus-13.2.2.tar.gz";

/// Debian packages the build needs besides the server's dev package: compression libraries
/// Citus's columnar storage links, Kerberos headers (the server headers include gssapi), and
/// the toolchain. `curl` is left out: `--without-libcurl` drops its one use (usage statistics).
const BUILD_PACKAGES: &[&str] = &[
    "liblz4-dev",
    "libzstd-dev",
    "libkrb5-dev",
    "autoconf",
    "make",
    "gcc",
];

/// Serialises installs across processes (the store and engine test binaries may both need
/// Citus at once). Under `/tmp` so every process on the machine finds the same file.
const LOCK_FILE: &str = "/tmp/sluice-citus-install.lock";

/// Lines of a failed step's output kept in the error.
const TAIL_LINES: usize = 30;

#[derive(Debug, thiserror::Error)]
pub enum CitusInstallError {
    #[error(
        "no PostgreSQL server binaries found (looked in $SLUICE_PG_BIN, `pg_config --bindir`, \
         /usr/lib/postgresql/*/bin and $PATH); install PostgreSQL first"
    )]
    NoBinaries,
    #[error(
        "Citus is not installed in {pkglibdir}, and building it needs root (`make install` \
         writes there): run once as root, or install Citus for this PostgreSQL yourself"
    )]
    NotRoot { pkglibdir: PathBuf },
    #[error(
        "Citus is not installed and its source tarball {} is missing (set \
         SLUICE_CITUS_TARBALL to the path of {CITUS_TARBALL_NAME})",
        path.display()
    )]
    NoTarball { path: PathBuf },
    #[error(
        "Citus is not installed and the server is not Debian's `postgresql-{major}` package \
         ({detail}), so its build packages cannot be installed here; install Citus yourself"
    )]
    NotDebianServer { major: String, detail: String },
    #[error("installing Citus: {step} failed ({status}); log {}:\n{tail}", log.display())]
    Step {
        step: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("installing Citus: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CitusInstallError {
    let context = context.into();
    move |source| CitusInstallError::Io { context, source }
}

/// Where the source comes from and where it is built.
#[derive(Debug, Clone)]
pub struct CitusSource {
    pub tarball: PathBuf,
    /// Emptied and filled with the extracted source and the step logs.
    pub build_dir: PathBuf,
}

impl CitusSource {
    /// `$SLUICE_CITUS_TARBALL`, else the tarball in `shared/vendor/` beside this checkout
    /// (resolved from where this crate was compiled, which is the checkout the tests and the
    /// example run from); built under the system's temporary directory.
    pub fn from_env() -> CitusSource {
        let tarball = std::env::var_os("SLUICE_CITUS_TARBALL")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                // host/crates/store → the workspace root → its sibling `shared/`.
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../../../shared/vendor")
                    .join(CITUS_TARBALL_NAME)
            });
        CitusSource {
            tarball,
            build_dir: std::env::temp_dir().join("sluice-citus-build"),
        }
    }
}

/// What [`ensure_citus_installed`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CitusInstall {
    AlreadyInstalled,
    /// Built and installed now, in this many seconds (apt-get included).
    Built {
        seconds: u64,
    },
}

/// Installs Citus into the server [`PgBinaries::find`] picks, unless it is there already.
pub fn ensure_citus_installed(source: &CitusSource) -> Result<CitusInstall, CitusInstallError> {
    let bins = PgBinaries::find().ok_or(CitusInstallError::NoBinaries)?;
    let pg_config = bins.pg_config();
    let dirs = PgDirs::query(&pg_config, &source.build_dir)?;
    if dirs.has_citus() {
        return Ok(CitusInstall::AlreadyInstalled);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(CitusInstallError::NotRoot {
            pkglibdir: dirs.pkglibdir,
        });
    }

    let lock = File::create(LOCK_FILE).map_err(io(format!("open {LOCK_FILE}")))?;
    // Blocks while another process builds; the lock goes with the file when we return.
    lock.lock().map_err(io(format!("lock {LOCK_FILE}")))?;
    if dirs.has_citus() {
        return Ok(CitusInstall::AlreadyInstalled);
    }
    if !source.tarball.is_file() {
        return Err(CitusInstallError::NoTarball {
            path: source.tarball.clone(),
        });
    }

    let started = std::time::Instant::now();
    tracing::info!(tarball = %source.tarball.display(), build_dir = %source.build_dir.display(), "building Citus (a few minutes, once per machine)");
    install_build_packages(&dirs.major, &source.build_dir)?;
    let src = extract(source)?;
    let pg_config_arg = format!("PG_CONFIG={}", pg_config.display());
    let log_dir = &source.build_dir;
    step(
        Command::new("./configure")
            .arg(&pg_config_arg)
            .arg("--without-libcurl")
            .current_dir(&src),
        "configure",
        log_dir,
    )?;
    // No LLVM bitcode: the server's JIT is not used for Citus here, and it doubles the build.
    step(
        Command::new("make")
            .args(["-j2", "with_llvm=no"])
            .current_dir(&src),
        "make",
        log_dir,
    )?;
    step(
        Command::new("make")
            .args(["install", "with_llvm=no"])
            .current_dir(&src),
        "make-install",
        log_dir,
    )?;
    if !dirs.has_citus() {
        return Err(CitusInstallError::Step {
            step: "make install".into(),
            status: "exit status 0".into(),
            log: log_dir.join("make-install.log"),
            tail: format!(
                "citus.so is still not in {} (is {} the server's own pg_config?)",
                dirs.pkglibdir.display(),
                pg_config.display()
            ),
        });
    }
    let seconds = started.elapsed().as_secs();
    tracing::info!(seconds, "Citus built and installed");
    Ok(CitusInstall::Built { seconds })
}

/// The server's extension directories and major version, from its `pg_config`.
struct PgDirs {
    pkglibdir: PathBuf,
    extension_dir: PathBuf,
    major: String,
}

impl PgDirs {
    fn query(pg_config: &Path, log_dir: &Path) -> Result<PgDirs, CitusInstallError> {
        let out = Command::new(pg_config)
            .args(["--pkglibdir", "--sharedir", "--version"])
            .stdin(Stdio::null())
            .output()
            .map_err(io(format!("run {}", pg_config.display())))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        // `PostgreSQL 15.18 (Debian 15.18-0+deb12u1)` → `15`.
        let major = lines
            .get(2)
            .and_then(|v| v.strip_prefix("PostgreSQL "))
            .and_then(|v| v.split(['.', ' ']).next())
            .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()));
        match (out.status.success(), lines.first(), lines.get(1), major) {
            (true, Some(pkglibdir), Some(sharedir), Some(major)) => Ok(PgDirs {
                pkglibdir: PathBuf::from(pkglibdir),
                extension_dir: Path::new(sharedir).join("extension"),
                major: major.to_string(),
            }),
            _ => Err(CitusInstallError::Step {
                step: format!("{} --pkglibdir --sharedir --version", pg_config.display()),
                status: out.status.to_string(),
                log: log_dir.to_path_buf(),
                tail: format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
            }),
        }
    }

    fn has_citus(&self) -> bool {
        self.pkglibdir.join("citus.so").is_file()
            && self.extension_dir.join("citus.control").is_file()
    }
}

/// apt-get install of the build packages; `apt-get update` only when the install fails (a
/// fresh machine may have no package lists, and updating every time costs time and network).
fn install_build_packages(major: &str, log_dir: &Path) -> Result<(), CitusInstallError> {
    std::fs::create_dir_all(log_dir).map_err(io(format!("create {}", log_dir.display())))?;
    let server = format!("postgresql-{major}");
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", &server])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CitusInstallError::NotDebianServer {
            major: major.to_string(),
            detail: format!("dpkg-query: {e}"),
        })?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || version.is_empty() {
        return Err(CitusInstallError::NotDebianServer {
            major: major.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let mut packages = vec![format!("postgresql-server-dev-{major}={version}")];
    packages.extend(BUILD_PACKAGES.iter().map(|p| p.to_string()));
    let install = |step_name: &str| {
        step(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            step_name,
            log_dir,
        )
    };
    if install("apt-get-install").is_ok() {
        return Ok(());
    }
    step(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get-update",
        log_dir,
    )?;
    install("apt-get-install-after-update")
}

/// Extracts the tarball into an emptied `build_dir/src`; returns the directory holding
/// `configure` (the tarball may or may not wrap its files in a top directory).
fn extract(source: &CitusSource) -> Result<PathBuf, CitusInstallError> {
    let src = source.build_dir.join("src");
    if src.exists() {
        // A half-built tree from an interrupted run must not leak into this build.
        std::fs::remove_dir_all(&src).map_err(io(format!("remove {}", src.display())))?;
    }
    std::fs::create_dir_all(&src).map_err(io(format!("create {}", src.display())))?;
    step(
        Command::new("tar")
            .arg("-xzf")
            .arg(&source.tarball)
            .arg("-C")
            .arg(&src),
        "extract",
        &source.build_dir,
    )?;
    if src.join("configure").is_file() {
        return Ok(src);
    }
    let entries = std::fs::read_dir(&src).map_err(io(format!("read {}", src.display())))?;
    for entry in entries.flatten() {
        if entry.path().join("configure").is_file() {
            return Ok(entry.path());
        }
    }
    Err(CitusInstallError::Step {
        step: "extract".into(),
        status: "exit status 0".into(),
        log: source.build_dir.join("extract.log"),
        tail: format!(
            "{} holds no `configure` script: is it the Citus source?",
            source.tarball.display()
        ),
    })
}

/// Runs one step with its output (stdout and stderr, interleaved) in `<log_dir>/<name>.log`.
fn step(cmd: &mut Command, name: &str, log_dir: &Path) -> Result<(), CitusInstallError> {
    let log = log_dir.join(format!("{name}.log"));
    let file = File::create(&log).map_err(io(format!("create {}", log.display())))?;
    let file2 = file
        .try_clone()
        .map_err(io(format!("open {}", log.display())))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .status()
        .map_err(io(format!("run {name}")))?;
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
    Err(CitusInstallError::Step {
        step: name.to_string(),
        status: status.to_string(),
        log,
        tail,
    })
}
