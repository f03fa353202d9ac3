//! A PostgreSQL of the test's own, shared by several sluice hosts (`DATABASE_URL`), that the
//! test can stop and start again.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use sluice_store::embedded_pg::{EmbeddedPostgres, PgBinaries};

pub struct SharedPg {
    dir: tempfile::TempDir,
    pg: Option<EmbeddedPostgres>,
    cluster: PathBuf,
    pub url: String,
}

impl SharedPg {
    pub async fn start() -> SharedPg {
        let dir = tempfile::Builder::new()
            .prefix("sluice-e2e-pg-")
            .tempdir()
            .expect("tempdir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let pg = EmbeddedPostgres::start(dir.path())
            .await
            .expect("start PostgreSQL");
        SharedPg {
            url: pg.url().to_string(),
            cluster: pg.cluster_dir().to_path_buf(),
            pg: Some(pg),
            dir,
        }
    }

    /// Stops the server (fast shutdown: sessions are cut, committed data is safe).
    pub async fn stop(&mut self) {
        if let Some(pg) = self.pg.take() {
            pg.stop().await.expect("stop PostgreSQL");
        }
    }

    /// Starts it again on the same data.
    pub async fn start_again(&mut self) {
        assert!(self.pg.is_none(), "still running");
        let pg = EmbeddedPostgres::start(self.dir.path())
            .await
            .expect("restart PostgreSQL");
        assert_eq!(pg.url(), self.url);
        self.pg = Some(pg);
    }
}

impl Drop for SharedPg {
    fn drop(&mut self) {
        if self.cluster.join("postmaster.pid").exists()
            && let Some(bins) = PgBinaries::find()
        {
            let mut cmd = Command::new(bins.pg_ctl());
            cmd.arg("-D")
                .arg(&self.cluster)
                .args(["stop", "-m", "immediate"]);
            if nix::unistd::geteuid().is_root() {
                use std::os::unix::process::CommandExt;
                if let Ok(Some(u)) = nix::unistd::User::from_name("postgres") {
                    cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
                }
            }
            let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
    }
}
