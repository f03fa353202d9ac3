//! A local Citus cluster (a coordinator and N workers on 127.0.0.1) for tests and developers,
//! each node an [`EmbeddedPostgres`] of its own.
//!
//! Contract:
//! - Citus must be installed first ([`ensure_citus_installed`] builds it from the vendored
//!   tarball when it is missing).
//! - Nodes live in `<dir>/coordinator`, `<dir>/worker-1`, …, each with its own `initdb`'d
//!   cluster (kept elsewhere when the `postgres` user cannot reach `dir`, as
//!   [`EmbeddedPostgres`] does), and listen on a free TCP port of 127.0.0.1: Citus nodes talk
//!   to each other over TCP. A node's port is kept in `<dir>/<node>/port`, because the
//!   coordinator's metadata names its workers by port: starting on an existing `dir` reuses
//!   the nodes, their data and their ports (and adopts nodes left running by a killed process).
//! - The coordinator's `postgres` database is a Citus database ([`CitusCluster::url`]), and so
//!   is [`TEMPLATE`] on every node: a database created by [`CitusCluster::create_database`]
//!   is a copy of it on every node, with the extension and the coordinator's node metadata
//!   already in place, so no test pays for `CREATE EXTENSION` and `citus_add_node`.
//! - [`CitusCluster::stop`] stops every node (fast shutdown); dropping the cluster stops the
//!   nodes still running, so a panicking test leaves no server behind.
//! - [`CitusCluster::stop_worker`] and [`CitusCluster::start_worker`] take one worker down and
//!   bring it back on the same port and data (a worker outage, for tests).

mod install;

use std::path::{Path, PathBuf};

use futures_util::future::try_join_all;
use sqlx::Connection;

use super::{EmbeddedPgError, EmbeddedPostgres, ServerOptions};

pub use install::{
    CITUS_TARBALL_NAME, CitusInstall, CitusInstallError, CitusSource, ensure_citus_installed,
};

/// The database on every node that [`CitusCluster::create_database`] copies.
pub const TEMPLATE: &str = "citus_template";

/// Fresh ports are picked by binding port 0 and releasing it, so another process may take one
/// before the node binds it: a new node tries this many ports.
const PORT_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum CitusError {
    #[error("citus node {node}: {source}")]
    Node {
        node: String,
        #[source]
        source: EmbeddedPgError,
    },
    #[error("citus node {node}: {action}: {source}")]
    Sql {
        node: String,
        action: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("citus cluster: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0:?} is not a database name this cluster creates (lowercase letters, digits, _)")]
    BadName(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CitusError {
    let context = context.into();
    move |source| CitusError::Io { context, source }
}

/// One node: running while `pg` is there.
#[derive(Debug)]
struct Node {
    name: String,
    port: u16,
    dir: PathBuf,
    pg: Option<EmbeddedPostgres>,
}

impl Node {
    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    async fn connect(&self, database: &str) -> Result<sqlx::PgConnection, CitusError> {
        sqlx::PgConnection::connect(&self.url(database))
            .await
            .map_err(|source| CitusError::Sql {
                node: self.name.clone(),
                action: format!("connect to {database}"),
                source,
            })
    }

    /// Runs `sql` statements one by one in `database`.
    async fn execute(&self, database: &str, sql: &[String]) -> Result<(), CitusError> {
        let mut conn = self.connect(database).await?;
        for statement in sql {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement.as_str()))
                .execute(&mut conn)
                .await
                .map_err(|source| CitusError::Sql {
                    node: self.name.clone(),
                    action: statement.clone(),
                    source,
                })?;
        }
        conn.close().await.ok();
        Ok(())
    }

    /// `CREATE DATABASE name TEMPLATE template` on this node. The template must have no other
    /// sessions, and Citus keeps a maintenance daemon in every database it has been used in
    /// (the coordinator's connections while a template was set up start one on each worker).
    /// Ending them is safe: the daemon exits cleanly and comes back when someone connects,
    /// which may be between the two statements (55006, "being accessed by other users"):
    /// then both run again.
    async fn create_database_from(&self, name: &str, template: &str) -> Result<(), CitusError> {
        let sql = [
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{template}' AND pid <> pg_backend_pid()"
            ),
            format!("CREATE DATABASE {name} TEMPLATE {template}"),
        ];
        self.execute_when_free(&sql).await
    }

    /// Runs `sql` on `postgres`, again while it fails with 55006 ("being accessed by other
    /// users"): a Citus maintenance daemon came back between ending the sessions and the
    /// statement that needs none.
    async fn execute_when_free(&self, sql: &[String]) -> Result<(), CitusError> {
        let mut attempt = 1;
        loop {
            match self.execute("postgres", sql).await {
                Err(CitusError::Sql { source, .. })
                    if attempt < 20
                        && source
                            .as_database_error()
                            .and_then(|e| e.code())
                            .is_some_and(|c| c == "55006") =>
                {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
                }
                other => return other,
            }
        }
    }
}

/// A running coordinator and its workers.
#[derive(Debug)]
pub struct CitusCluster {
    coordinator: Node,
    workers: Vec<Node>,
}

impl CitusCluster {
    /// Starts (or reuses, see the module doc) a coordinator and `workers` workers under `dir`,
    /// joins them, and prepares [`TEMPLATE`].
    pub async fn start(dir: &Path, workers: usize) -> Result<CitusCluster, CitusError> {
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let names = std::iter::once("coordinator".to_string())
            .chain((1..=workers).map(|i| format!("worker-{i}")));
        // initdb dominates a first start; the nodes do it side by side.
        let mut starts = tokio::task::JoinSet::new();
        for (i, name) in names.enumerate() {
            let node_dir = dir.join(&name);
            starts.spawn(async move { (i, start_node(name, node_dir).await) });
        }
        let mut nodes: Vec<Option<Node>> = (0..=workers).map(|_| None).collect();
        let mut first_error = None;
        while let Some(joined) = starts.join_next().await {
            match joined {
                Ok((i, Ok(node))) => nodes[i] = Some(node),
                Ok((_, Err(e))) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        if let Some(e) = first_error {
            // The nodes that did start stop as `nodes` drops.
            return Err(e);
        }
        let mut nodes = nodes.into_iter().flatten();
        let coordinator = nodes.next().ok_or_else(|| CitusError::Io {
            context: "start the coordinator".into(),
            source: std::io::Error::other("no coordinator"),
        })?;
        let cluster = CitusCluster {
            coordinator,
            workers: nodes.collect(),
        };
        cluster.join("postgres").await?;
        cluster.prepare_template().await?;
        Ok(cluster)
    }

    /// The coordinator's `postgres` database (a Citus database with the workers added).
    pub fn url(&self) -> String {
        self.coordinator.url("postgres")
    }

    /// The coordinator's URL for `database`.
    pub fn database_url(&self, database: &str) -> String {
        self.coordinator.url(database)
    }

    /// Each worker's `postgres` database, for inspecting shards.
    pub fn worker_urls(&self) -> Vec<String> {
        self.workers.iter().map(|w| w.url("postgres")).collect()
    }

    /// Creates `name` on every node as a copy of [`TEMPLATE`]; returns its coordinator URL.
    pub async fn create_database(&self, name: &str) -> Result<String, CitusError> {
        self.create_database_from(name, TEMPLATE).await
    }

    /// Creates `name` on every node as a copy of `template`, a database made on every node by
    /// [`CitusCluster::create_database`] (e.g. one migrated once for many tests); returns its
    /// coordinator URL. Copying each node's own template keeps the coordinator's metadata
    /// (nodes, shards and their ids) true for the copies on the workers.
    pub async fn create_database_from(
        &self,
        name: &str,
        template: &str,
    ) -> Result<String, CitusError> {
        check_name(name)?;
        check_name(template)?;
        try_join_all(
            self.nodes()
                .map(|node| node.create_database_from(name, template)),
        )
        .await?;
        Ok(self.coordinator.url(name))
    }

    /// Drops `name` on every node, ending its sessions (`WITH (FORCE)`) and the Citus daemons
    /// that serve it; a test database left behind would keep a background worker.
    pub async fn drop_database(&self, name: &str) -> Result<(), CitusError> {
        check_name(name)?;
        let sql = [format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")];
        // All nodes at once: FORCE ends the coordinator's connections to a worker's copy too,
        // and a connection that tries again waits for the drop and then fails.
        try_join_all(self.nodes().map(|node| node.execute_when_free(&sql))).await?;
        Ok(())
    }

    /// Each running node's name (`coordinator`, `worker-1`, …) and postmaster pid, for CPU
    /// accounting (`sluice bench --scenario citus`).
    pub fn postmaster_pids(&self) -> Vec<(String, u32)> {
        self.nodes()
            .filter_map(|node| Some((node.name.clone(), node.pg.as_ref()?.postmaster_pid()?)))
            .collect()
    }

    /// Each worker's port on 127.0.0.1 (as `pg_dist_node` and shard placements name it), in
    /// the order [`CitusCluster::stop_worker`] numbers them.
    pub fn worker_ports(&self) -> Vec<u16> {
        self.workers.iter().map(|w| w.port).collect()
    }

    /// Stops worker `index` (fast shutdown): its shards are unreachable until
    /// [`CitusCluster::start_worker`]. Stopping a stopped worker does nothing.
    pub async fn stop_worker(&mut self, index: usize) -> Result<(), CitusError> {
        let node = self.worker_mut(index)?;
        if let Some(pg) = node.pg.take() {
            pg.stop().await.map_err(|source| CitusError::Node {
                node: node.name.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Starts worker `index` again, on its port and data. Starting a running worker does
    /// nothing.
    pub async fn start_worker(&mut self, index: usize) -> Result<(), CitusError> {
        let node = self.worker_mut(index)?;
        if node.pg.is_none() {
            let started = start_node(node.name.clone(), node.dir.clone()).await?;
            node.pg = started.pg;
        }
        Ok(())
    }

    fn worker_mut(&mut self, index: usize) -> Result<&mut Node, CitusError> {
        let count = self.workers.len();
        self.workers.get_mut(index).ok_or_else(|| CitusError::Io {
            context: format!("worker {index}"),
            source: std::io::Error::other(format!("the cluster has {count} workers")),
        })
    }

    /// Stops every node (fast shutdown), the coordinator first.
    pub async fn stop(self) -> Result<(), CitusError> {
        let mut first_error = None;
        for node in std::iter::once(self.coordinator).chain(self.workers) {
            let Some(pg) = node.pg else { continue };
            if let Err(source) = pg.stop().await {
                first_error.get_or_insert(CitusError::Node {
                    node: node.name,
                    source,
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn nodes(&self) -> impl Iterator<Item = &Node> {
        std::iter::once(&self.coordinator).chain(&self.workers)
    }

    /// Makes `database` (existing on every node) a Citus database: the extension on every
    /// node, then the coordinator registers itself and the workers. Every step is idempotent,
    /// so a cluster reused from an earlier run (or half set up by one that died) comes right.
    async fn join(&self, database: &str) -> Result<(), CitusError> {
        let extension = ["CREATE EXTENSION IF NOT EXISTS citus".to_string()];
        // Workers first: adding a worker copies the coordinator's metadata into it.
        try_join_all(self.workers.iter().map(|w| w.execute(database, &extension))).await?;
        let mut sql = extension.to_vec();
        sql.push(format!(
            "SELECT citus_set_coordinator_host('127.0.0.1', {})",
            self.coordinator.port
        ));
        for worker in &self.workers {
            sql.push(format!(
                "SELECT citus_add_node('127.0.0.1', {})",
                worker.port
            ));
        }
        self.coordinator.execute(database, &sql).await
    }

    async fn prepare_template(&self) -> Result<(), CitusError> {
        for node in self.nodes() {
            let mut conn = node.connect("postgres").await?;
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
                    .bind(TEMPLATE)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(|source| CitusError::Sql {
                        node: node.name.clone(),
                        action: "look for the template".into(),
                        source,
                    })?;
            if !exists {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {TEMPLATE}")))
                    .execute(&mut conn)
                    .await
                    .map_err(|source| CitusError::Sql {
                        node: node.name.clone(),
                        action: format!("CREATE DATABASE {TEMPLATE}"),
                        source,
                    })?;
            }
            conn.close().await.ok();
        }
        self.join(TEMPLATE).await
    }
}

/// Starts one node, on the port it had before or on a fresh one.
async fn start_node(name: String, node_dir: PathBuf) -> Result<Node, CitusError> {
    std::fs::create_dir_all(&node_dir).map_err(io(format!("create {}", node_dir.display())))?;
    let port_file = node_dir.join("port");
    let kept_port = match std::fs::read_to_string(&port_file) {
        Ok(text) => Some(text.trim().parse::<u16>().map_err(|e| CitusError::Io {
            context: format!("read {}", port_file.display()),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(format!("read {}", port_file.display()))(e)),
    };
    let attempts = if kept_port.is_some() {
        1
    } else {
        PORT_ATTEMPTS
    };
    let mut last_error = None;
    for _ in 0..attempts {
        let port = match kept_port {
            Some(port) => port,
            None => free_port()?,
        };
        let options = ServerOptions {
            tcp_port: Some(port),
            settings: node_settings(),
        };
        match EmbeddedPostgres::start_with(&node_dir, &options).await {
            Ok(pg) => {
                std::fs::write(&port_file, format!("{port}\n"))
                    .map_err(io(format!("write {}", port_file.display())))?;
                return Ok(Node {
                    name,
                    port,
                    dir: node_dir,
                    pg: Some(pg),
                });
            }
            Err(source) => last_error = Some(source),
        }
    }
    Err(CitusError::Node {
        node: name,
        source: last_error.unwrap_or(EmbeddedPgError::NoBinaries),
    })
}

fn node_settings() -> Vec<(String, String)> {
    [
        ("shared_preload_libraries", "citus"),
        // It would phone home; nothing outside the package registries is reachable anyway.
        ("citus.enable_statistics_collection", "off"),
        // Three servers share a test machine with the build: a smaller buffer pool each.
        ("shared_buffers", "128MB"),
        // Citus runs a maintenance daemon (a background worker) in every database it is used
        // in, and tests make a database each: the default 8 would run out while tests overlap.
        ("max_worker_processes", "64"),
        // A two-phase commit cut short by a worker going down leaves a prepared transaction
        // on it, holding its locks once the worker is back, until the coordinator's recovery
        // resolves it: once a minute by default, during which ingest for the workspaces whose
        // shards it locks waits (`tests/e2e/citus/prepared_leftover.rs`). Recovery reads each
        // worker's `pg_prepared_xacts`, which costs next to nothing.
        ("citus.recover_2pc_interval", "2s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, CitusError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(io("find a free TCP port"))?;
    let port = listener
        .local_addr()
        .map_err(io("find a free TCP port"))?
        .port();
    Ok(port)
}

/// Database names go into SQL unquoted: keep them to what needs no quoting.
fn check_name(name: &str) -> Result<(), CitusError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(CitusError::BadName(name.to_string()))
    }
}
