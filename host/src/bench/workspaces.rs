//! Per-workspace ingest on one PostgreSQL (issue "Past one PostgreSQL"): four workspaces
//! ingesting at once, with four ingest writers (each workspace's transactions under its own
//! lock, committing side by side) against one writer (one ingest transaction at a time: what
//! the single store-wide ingest lock allowed), in the same run on the same PostgreSQL.

use std::path::Path;

use super::env::Host;
use super::load::{self, Shape};
use super::{Bench, Row};

pub(super) const WORKSPACES: usize = 4;
/// Connections per workspace: enough requests in flight that one writer is the limit.
pub(super) const CONNECTIONS: usize = 8;

/// Four workspaces, each with a source (`wk_<i>`) feeding a no-op destination, and `writers`
/// ingest writers.
pub(super) fn config(plugins_dir: &Path, writers: usize) -> String {
    let cache = plugins_dir.with_file_name("plugin-cache");
    let mut t = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nplugins_dir = \"{}\"\nplugin_cache_dir = \"{}\"\ndata_dir = \"data\"\ningest_writers = {writers}\n\n",
        plugins_dir.display(),
        cache.display(),
    );
    for i in 0..WORKSPACES {
        t.push_str(&format!(
            "[[source]]\nid = \"web-{i}\"\nworkspace = \"ws-{i}\"\nwrite_key = \"wk_{i}\"\ndestinations = [\"noop-{i}\"]\n\n\
             [[destination]]\nid = \"noop-{i}\"\nworkspace = \"ws-{i}\"\nplugin = \"devnull\"\nconfig = {{}}\n\n"
        ));
    }
    t
}

/// The [`WORKSPACES`] workspaces' clients at once, each sending `per_workspace` events over
/// [`CONNECTIONS`] connections (write keys `wk_<i>`, as [`config`] gives them).
pub(super) async fn ingest_all(
    url: &str,
    label: &str,
    per_workspace: u64,
    shape: Shape,
) -> anyhow::Result<()> {
    let mut loads = tokio::task::JoinSet::new();
    for i in 0..WORKSPACES {
        let (url, key, run) = (url.to_string(), format!("wk_{i}"), format!("{label}-{i}"));
        loads.spawn(async move {
            load::ingest(&url, &key, per_workspace, shape, CONNECTIONS, &run).await
        });
    }
    while let Some(done) = loads.join_next().await {
        done??;
    }
    Ok(())
}

impl Bench {
    /// Events/s of four workspaces ingesting at once (CONNECTIONS each), with `writers`
    /// ingest writers.
    async fn four_workspaces(&mut self, writers: usize, total: u64) -> anyhow::Result<f64> {
        let label = format!("workspaces_{writers}");
        let db = self.pg.fresh_db(&label).await?;
        let host = Host::start(
            &self.host_dir(&label),
            &config(&self.empty_plugins, writers),
            &db,
        )?;
        let shape = Shape::STANDARD;
        let per_workspace = total / WORKSPACES as u64;
        let started = std::time::Instant::now();
        ingest_all(&host.url("/v1/batch"), &label, per_workspace, shape).await?;
        Ok((per_workspace * WORKSPACES as u64) as f64 / started.elapsed().as_secs_f64())
    }

    /// Four workspaces at once: four writers vs one.
    pub(super) async fn ingest_workspaces(&mut self) -> anyhow::Result<()> {
        let total = self.sized(300_000, 60_000);
        let one = self.four_workspaces(1, total).await?;
        let four = self.four_workspaces(4, total).await?;
        self.rows.push(Row::ratio(
            "ingest: 4 workspaces at once (8 connections each), 4 writers",
            four,
            "events/s",
            "1 writer (each group holds the four workspaces' locks; two groups in flight)",
            one,
            1.3,
        ));
        Ok(())
    }
}
