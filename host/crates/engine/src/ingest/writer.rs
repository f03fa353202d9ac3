//! Group commit: every request on this host goes through a writer task, which appends
//! whatever requests are waiting in one transaction (`store::append`) and answers each.
//!
//! There are `ingest_writers` of them, and a workspace's requests always go to the same one
//! (by a hash of its id): workspaces on different writers commit at once (their ingest locks
//! are their own, `store::ingest_lock`).
//!
//! A writer has up to [`IN_FLIGHT`] groups on their way to the store: while one holds the
//! workspace's lock, the next is already sent and waits for it in PostgreSQL, so the lock is
//! never idle for the round trip and the host's work between two groups (2026-12-04, two
//! `--scenario ingest` runs each: 0.57 and 0.59 of the COPY peer with one group in flight,
//! 0.59 and 0.60 with two, 0.55 and 0.58 with three; a small gain, within a run's spread). Two
//! groups in flight at once take the lock in either order; a request sent after another's
//! answer is always stored after it, and ids within a group follow request order.
//!
//! There is no artificial delay: while groups commit, the next requests queue up and form the
//! next group, so under load groups grow by themselves and one fsync serves many requests; at
//! low load a request is written at once. A group is bounded by events and bytes. After a
//! commit the writer wakes the local lanes of the sources written, and maintenance.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use uuid::Uuid;

use crate::wake::Wakers;
use sluice_store::notify::wake_payload;
use sluice_store::{AppendOutcome, AppendRequest, Dedup, Store, StoreError};

/// Largest group: events and bytes.
const MAX_GROUP_EVENTS: usize = 20_000;
const MAX_GROUP_BYTES: usize = 32 << 20;
/// Requests waiting for the writer before senders wait too.
const QUEUE: usize = 1024;
/// Groups of one writer on their way to the store at once.
const IN_FLIGHT: usize = 2;

/// Why a write failed, as the handler needs it (one error answers every request of a group,
/// so it carries text rather than the store's error).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The store is unreachable, or the writer is stopping: the client should retry (503).
    #[error("{0}")]
    Unavailable(String),
    /// The store refused the write: nothing was stored (500).
    #[error("{0}")]
    Failed(String),
}

impl WriteError {
    /// Whether the client should retry later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, WriteError::Unavailable(_))
    }
}

impl From<&StoreError> for WriteError {
    fn from(e: &StoreError) -> WriteError {
        if e.is_unavailable() {
            WriteError::Unavailable(e.to_string())
        } else {
            WriteError::Failed(e.to_string())
        }
    }
}

struct Pending {
    request: AppendRequest,
    /// Destinations fed by the request's source (woken after the commit).
    destinations: Arc<[String]>,
    reply: oneshot::Sender<Result<AppendOutcome, WriteError>>,
}

/// Handle to the writer tasks; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    txs: Arc<[mpsc::Sender<Pending>]>,
}

impl Writer {
    /// Starts `writers` writer tasks (at least one).
    pub fn start(
        writers: usize,
        store: Store,
        dedup: Dedup,
        wakers: Wakers,
        maintenance: Arc<Notify>,
        me: Uuid,
    ) -> Writer {
        let txs: Vec<mpsc::Sender<Pending>> = (0..writers.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(run(
                    rx,
                    store.clone(),
                    dedup,
                    wakers.clone(),
                    maintenance.clone(),
                    me,
                ));
                tx
            })
            .collect();
        Writer { txs: txs.into() }
    }

    /// The writer of a workspace: always the same one.
    fn writer_of(&self, workspace: &str) -> &mpsc::Sender<Pending> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        workspace.hash(&mut h);
        &self.txs[(h.finish() % self.txs.len() as u64) as usize]
    }

    /// Appends one request; answers after its commit.
    pub async fn append(
        &self,
        request: AppendRequest,
        destinations: Arc<[String]>,
    ) -> Result<AppendOutcome, WriteError> {
        let (reply, answer) = oneshot::channel();
        let started = std::time::Instant::now();
        let stopped = || WriteError::Unavailable("the ingest writer is stopping".into());
        self.writer_of(&request.workspace_id)
            .send(Pending {
                request,
                destinations,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        let outcome = answer.await.map_err(|_| stopped())?;
        if outcome.is_ok() {
            crate::metrics::ingest_commit(started.elapsed());
        }
        outcome
    }
}

async fn run(
    mut rx: mpsc::Receiver<Pending>,
    store: Store,
    dedup: Dedup,
    wakers: Wakers,
    maintenance: Arc<Notify>,
    me: Uuid,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut events = first.request.events.len();
        let mut bytes: usize = first.request.events.iter().map(|e| e.json.len()).sum();
        let mut group = vec![first];
        while events < MAX_GROUP_EVENTS && bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    events += p.request.events.len();
                    bytes += p.request.events.iter().map(|e| e.json.len()).sum::<usize>();
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        let (store, wakers, maintenance) = (store.clone(), wakers.clone(), maintenance.clone());
        tokio::spawn(async move {
            commit(group, &store, dedup, &wakers, &maintenance, me).await;
            drop(permit);
        });
    }
}

/// Appends `group` in one transaction and answers each request. When that fails and the
/// group holds several workspaces, each workspace's requests are tried again in a transaction
/// of their own: on Citus a workspace's rows live on one worker, and a worker that is down
/// must cost only its own workspaces a 503, not every workspace that shared the group.
async fn commit(
    group: Vec<Pending>,
    store: &Store,
    dedup: Dedup,
    wakers: &Wakers,
    maintenance: &Notify,
    me: Uuid,
) {
    let e = match try_commit(&group, store, dedup, me).await {
        Ok(outcomes) => return answer(group, outcomes, wakers, maintenance),
        Err(e) => e,
    };
    let mut by_workspace: Vec<Vec<Pending>> = Vec::new();
    for p in group {
        match by_workspace
            .iter_mut()
            .find(|g| g[0].request.workspace_id == p.request.workspace_id)
        {
            Some(g) => g.push(p),
            None => by_workspace.push(vec![p]),
        }
    }
    if by_workspace.len() == 1 {
        return fail(by_workspace.into_iter().flatten().collect(), &e);
    }
    tracing::warn!(error = %e, workspaces = by_workspace.len(), "group commit failed; committing each workspace on its own");
    for group in by_workspace {
        match try_commit(&group, store, dedup, me).await {
            Ok(outcomes) => answer(group, outcomes, wakers, maintenance),
            Err(e) => fail(group, &e),
        }
    }
}

async fn try_commit(
    group: &[Pending],
    store: &Store,
    dedup: Dedup,
    me: Uuid,
) -> Result<Vec<AppendOutcome>, StoreError> {
    let requests: Vec<&AppendRequest> = group.iter().map(|p| &p.request).collect();
    let workspaces: HashSet<&str> = requests.iter().map(|r| &*r.workspace_id).collect();
    let workspaces: Vec<&str> = workspaces.into_iter().collect();
    let payload = wake_payload(me, &workspaces);
    store
        .event_append(&requests, Some(dedup), Some(&payload))
        .await
}

/// Wakes the lanes fed by what was accepted, and answers each request with its outcome.
fn answer(
    group: Vec<Pending>,
    outcomes: Vec<AppendOutcome>,
    wakers: &Wakers,
    maintenance: &Notify,
) {
    let mut woken: HashSet<&str> = HashSet::new();
    for (p, o) in group.iter().zip(&outcomes) {
        if o.accepted > 0 {
            for d in p.destinations.iter() {
                if woken.insert(d) {
                    wakers.wake(d);
                }
            }
        }
    }
    maintenance.notify_one();
    for (p, o) in group.into_iter().zip(outcomes) {
        let _ = p.reply.send(Ok(o));
    }
}

fn fail(group: Vec<Pending>, e: &StoreError) {
    let err = WriteError::from(e);
    if err.is_unavailable() {
        tracing::warn!(error = %e, requests = group.len(), "store unavailable; answering 503");
    } else {
        tracing::error!(error = %e, requests = group.len(), "ingest write failed");
    }
    for p in group {
        let _ = p.reply.send(Err(err.clone()));
    }
}
