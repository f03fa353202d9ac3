//! Finding the system's PostgreSQL server binaries (`initdb`, `pg_ctl`).
//!
//! `SLUICE_PG_BIN` (a bin directory), when set, is the only place looked at. Otherwise:
//! `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin` (Debian/Ubuntu), then `PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The bin directory holding `initdb` and `pg_ctl`.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub bin_dir: PathBuf,
}

impl PgBinaries {
    pub fn initdb(&self) -> PathBuf {
        self.bin_dir.join("initdb")
    }
    pub fn pg_ctl(&self) -> PathBuf {
        self.bin_dir.join("pg_ctl")
    }
    /// The `pg_config` of this very server (Debian ships one per major beside `initdb`), so an
    /// extension built against it lands where this server loads extensions from.
    pub fn pg_config(&self) -> PathBuf {
        self.bin_dir.join("pg_config")
    }

    /// Looks in the usual places; `None` if no directory has both `initdb` and `pg_ctl`.
    pub fn find() -> Option<PgBinaries> {
        candidates()
            .into_iter()
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
            .map(|bin_dir| PgBinaries { bin_dir })
    }
}

fn candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("SLUICE_PG_BIN") {
        return vec![PathBuf::from(dir)];
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    dirs.extend(debian_bin_dirs(Path::new("/usr/lib/postgresql")));
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs
}

/// `/usr/lib/postgresql/<major>/bin`, newest major first.
fn debian_bin_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    versions.into_iter().map(|(_, p)| p).collect()
}
