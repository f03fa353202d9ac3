//! Per-workspace ingest on one PostgreSQL (issue "Past one PostgreSQL"): four workspaces
//! ingesting at once (each workspace's transactions under its own lock, committing side by
//! side) against one workspace sent the same load over as many connections (its lock lets one
//! ingest transaction write at a time: what the single store-wide ingest lock allowed for
//! all), in the same run on the same PostgreSQL.
//!
//! Until 2026-12-05 the peer was the four workspaces on one ingest writer, whose groups then
//! held all four workspaces' locks; a group now holds one workspace's requests
//! (`engine::ingest::write_queue`), so one writer commits workspaces side by side too.

use std::path::Path;

use super::cpu_split::CpuMark;
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

/// `workspaces` workspaces' clients at once (write keys `wk_<i>`, as [`config`] gives them),
/// each sending `per_workspace` events over `connections` connections.
pub(super) async fn ingest_all(
    url: &str,
    label: &str,
    workspaces: usize,
    per_workspace: u64,
    connections: usize,
    shape: Shape,
) -> anyhow::Result<()> {
    let mut loads = tokio::task::JoinSet::new();
    for i in 0..workspaces {
        let (url, key, run) = (url.to_string(), format!("wk_{i}"), format!("{label}-{i}"));
        loads.spawn(async move {
            load::ingest(&url, &key, per_workspace, shape, connections, &run).await
        });
    }
    while let Some(done) = loads.join_next().await {
        done??;
    }
    Ok(())
}

impl Bench {
    /// Events/s of `workspaces` workspaces ingesting at once, [`WORKSPACES`] × [`CONNECTIONS`]
    /// connections in all, `total` events in all.
    /// Also returns where the CPU went meanwhile, per event.
    async fn workspaces_at_once(
        &mut self,
        workspaces: usize,
        total: u64,
    ) -> anyhow::Result<(f64, String)> {
        let label = format!("workspaces_{workspaces}");
        let db = self.pg.fresh_db(&label).await?;
        let host = Host::start(
            &self.host_dir(&label),
            &config(&self.empty_plugins, WORKSPACES),
            &db,
        )?;
        let shape = Shape::STANDARD;
        let per_workspace = total / workspaces as u64;
        let connections = WORKSPACES * CONNECTIONS / workspaces;
        let postmaster = self.pg.postmaster_pid();
        let before = CpuMark::now(host.pid(), postmaster);
        let url = host.url("/v1/batch");
        ingest_all(&url, &label, workspaces, per_workspace, connections, shape).await?;
        let used = before.until(&CpuMark::now(host.pid(), postmaster));
        let events = (per_workspace * workspaces as u64) as f64;
        Ok((events / used.secs, used.per_sluice_event(events)))
    }

    /// Four workspaces at once against one, the same connections and events in all.
    pub(super) async fn ingest_workspaces(&mut self) -> anyhow::Result<()> {
        let total = self.sized(300_000, 60_000);
        let (one, one_cpu) = self.workspaces_at_once(1, total).await?;
        let (four, four_cpu) = self.workspaces_at_once(WORKSPACES, total).await?;
        // Both are bounded by the cores when the split shows them full: four locks cannot
        // add CPU.
        let mut row = Row::ratio(
            "ingest: 4 workspaces at once (8 connections each)",
            four,
            "events/s",
            "1 workspace, 32 connections (its lock: one ingest transaction writes at a time)",
            one,
            1.3,
        );
        row.sluice = format!("{} ({four_cpu})", row.sluice);
        row.peer = format!("{} ({one_cpu})", row.peer);
        self.rows.push(row);
        Ok(())
    }
}
