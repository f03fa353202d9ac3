//! Group commit: every request on this host goes through a writer task, which appends
//! whatever requests are waiting in one transaction (`store::append`) and answers each.
//!
//! There are `ingest_writers` of them, and a workspace's requests always go to the same one
//! (by a hash of its id): workspaces on different writers commit at once (their ingest locks
//! are their own, `store::ingest_lock`).
//!
//! A workspace has up to two groups on their way to the store (`write_queue::PER_WORKSPACE`):
//! while one holds the workspace's lock, the next is already sent and waits for it in
//! PostgreSQL, so the lock is never idle for the round trip and the host's work between two
//! groups (2026-12-04, two `--scenario ingest` runs each: 0.57 and 0.59 of the COPY peer with
//! one group in flight, 0.59 and 0.60 with two, 0.55 and 0.58 with three; a small gain, within
//! a run's spread). Two groups in flight at once take the lock in either order; a request sent
//! after another's answer is always stored after it, and ids within a group follow request
//! order. The places in flight are the workspace's own: a workspace whose writes hang (its
//! lock held elsewhere, a Citus worker down) holds up no other workspace of its writer (see
//! `write_queue`). The writer as a whole has at most [`MAX_GROUPS`] in flight.
//!
//! There is no artificial delay: while groups commit, the next requests queue up and form the
//! next group, so under load groups grow by themselves and one fsync serves many requests; at
//! low load a request is written at once. A group is bounded by events and bytes. After a
//! commit the writer wakes the local lanes of the sources written, and maintenance.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use super::write_queue::{Bounds, Queued, WriteQueue};
use crate::wake::Wakers;
use sluice_store::notify::wake_payload;
use sluice_store::{AppendOutcome, AppendRequest, Dedup, Store, StoreError};

/// Largest group: events and bytes.
const MAX_GROUP_EVENTS: usize = 20_000;
const MAX_GROUP_BYTES: usize = 32 << 20;
/// Requests handed to a writer and not yet taken from its channel, before senders wait too.
const QUEUE: usize = 1024;
/// Groups of one writer on their way to the store at once, whatever their workspaces (each
/// workspace has at most `write_queue::PER_WORKSPACE` of them): a bound on the connections
/// ingest takes from the store's pool.
const MAX_GROUPS: usize = 8;

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

/// How long a request waits for its write before it is answered 503. Below the timeouts of
/// the SDKs (10 s in analytics-node, 15 s in the Python SDKs), so that a client gets an answer
/// to retry on rather than its own timeout. A request still waiting for its group is then
/// dropped (`write_queue`); one whose group is on its way may still be stored, which the
/// retry's dedup absorbs (a 503 says the outcome is unknown, not that nothing was stored).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(8);

/// Handle to the writer tasks; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    txs: Arc<[mpsc::Sender<Pending>]>,
    answer_timeout: Duration,
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
        Writer {
            txs: txs.into(),
            answer_timeout: ANSWER_TIMEOUT,
        }
    }

    /// Another wait before a request is answered 503 (tests).
    pub fn with_answer_timeout(mut self, timeout: Duration) -> Writer {
        self.answer_timeout = timeout;
        self
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
        let workspace = request.workspace_id.clone();
        self.writer_of(&request.workspace_id)
            .send(Pending {
                request,
                destinations,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        let Ok(answered) = tokio::time::timeout(self.answer_timeout, answer).await else {
            tracing::warn!(
                workspace = %workspace,
                waited_ms = self.answer_timeout.as_millis() as u64,
                "an ingest write did not finish in time; answering 503"
            );
            return Err(WriteError::Unavailable(format!(
                "the write did not finish within {} s; retry",
                self.answer_timeout.as_secs_f64()
            )));
        };
        let outcome = answered.map_err(|_| stopped())?;
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
    let mut queue = WriteQueue::new(
        Bounds {
            events: MAX_GROUP_EVENTS,
            bytes: MAX_GROUP_BYTES,
        },
        MAX_GROUPS,
    );
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Arc<str>>();
    let mut open = true;
    loop {
        while let Some((group, workspace)) = queue.next_group() {
            let done = Done {
                tx: done_tx.clone(),
                workspace,
            };
            let (store, wakers, maintenance) = (store.clone(), wakers.clone(), maintenance.clone());
            tokio::spawn(async move {
                commit(group, &store, dedup, &wakers, &maintenance, me).await;
                drop(done);
            });
        }
        if !open && queue.is_idle() {
            return;
        }
        tokio::select! {
            pending = rx.recv(), if open => match pending {
                Some(p) => queue.push(p),
                None => open = false,
            },
            Some(workspace) = done_rx.recv() => queue.finished(&workspace),
        }
        // Whatever else is waiting joins the next group.
        while let Ok(p) = rx.try_recv() {
            queue.push(p);
        }
    }
}

/// Tells the writer a group is done when its commit task ends, however it ends (a panic too:
/// its workspace must not stay counted in flight for good).
struct Done {
    tx: mpsc::UnboundedSender<Arc<str>>,
    workspace: Arc<str>,
}

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.tx.send(self.workspace.clone());
    }
}

impl Queued for Pending {
    fn workspace(&self) -> &Arc<str> {
        &self.request.workspace_id
    }
    fn size(&self) -> (usize, usize) {
        let events = &self.request.events;
        (events.len(), events.iter().map(|e| e.json.len()).sum())
    }
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// Appends `group` (one workspace's requests) in one transaction and answers each request.
async fn commit(
    group: Vec<Pending>,
    store: &Store,
    dedup: Dedup,
    wakers: &Wakers,
    maintenance: &Notify,
    me: Uuid,
) {
    match try_commit(&group, store, dedup, me).await {
        Ok(outcomes) => answer(group, outcomes, wakers, maintenance),
        Err(e) => fail(group, &e),
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
