//! The requests waiting for a writer, per workspace, and which of them form the next group.
//!
//! The invariant this owns: **a workspace has at most [`PER_WORKSPACE`] groups on their way to
//! the store, and a workspace at that limit never keeps another workspace's requests from
//! forming a group.** A write can hang for a long time: the workspace's ingest lock held by
//! another host's stuck transaction, or on Citus a worker going down under the write (seen in
//! CI: a group stuck for over 40 s). When the writer's places in flight were shared by all its
//! workspaces, two stuck groups of one workspace (the first request, then its client's retry)
//! took them both, and every other workspace hashed to that writer waited with it.
//!
//! A group holds one workspace's requests: a transaction that took two workspaces' locks would
//! hold the first one's while it waits for the second's (or for the worker of the second), and
//! a noisy workspace's big group would make a small one's commit wait for its write. Within a
//! workspace, requests leave in arrival order; a group takes a prefix of the workspace's queue
//! within the group's bounds, and the workspace waiting longest goes first. Sans-IO: the
//! writer feeds it requests and finished groups, and starts the groups it returns.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Groups of one workspace on their way to the store at once: while one holds the workspace's
/// lock, the next is already sent and waits for it in PostgreSQL (see `writer`).
pub const PER_WORKSPACE: usize = 2;

/// What the queue needs to know of a request.
pub trait Queued {
    fn workspace(&self) -> &Arc<str>;
    /// Events and bytes, for the group's bounds.
    fn size(&self) -> (usize, usize);
    /// Nobody waits for its answer any more (answered 503 after waiting too long, or its
    /// client went away): it is dropped rather than written, since its client sends it again.
    fn abandoned(&self) -> bool;
}

/// A group's bounds: it stops taking requests once it holds this many events or bytes (the
/// first request is always taken, whatever its size).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub events: usize,
    pub bytes: usize,
}

/// One writer's waiting requests, and its groups on their way.
pub struct WriteQueue<T> {
    waiting: HashMap<Arc<str>, VecDeque<T>>,
    /// Workspaces with waiting requests, the one waiting longest first.
    order: VecDeque<Arc<str>>,
    /// Groups on their way, per workspace (workspaces with none are absent).
    in_flight: HashMap<Arc<str>, usize>,
    bounds: Bounds,
    /// Groups on their way at once, whatever their workspaces.
    max_in_flight: usize,
}

impl<T: Queued> WriteQueue<T> {
    pub fn new(bounds: Bounds, max_in_flight: usize) -> Self {
        WriteQueue {
            waiting: HashMap::new(),
            order: VecDeque::new(),
            in_flight: HashMap::new(),
            bounds,
            max_in_flight,
        }
    }

    pub fn push(&mut self, request: T) {
        let workspace = request.workspace().clone();
        let queue = self.waiting.entry(workspace.clone()).or_default();
        if queue.is_empty() {
            self.order.push_back(workspace);
        }
        queue.push_back(request);
    }

    /// Whether no request waits (the writer asks [`WriteQueue::is_idle`]).
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Whether no request waits and no group is on its way.
    pub fn is_idle(&self) -> bool {
        self.order.is_empty() && self.in_flight.is_empty()
    }

    /// The next group, unless the writer has its most groups on their way: the waiting
    /// requests of the workspace waiting longest among those with room in flight, oldest
    /// first, within the bounds. The workspace counts it in flight until
    /// [`WriteQueue::finished`].
    pub fn next_group(&mut self) -> Option<(Vec<T>, Arc<str>)> {
        if self.in_flight.values().sum::<usize>() >= self.max_in_flight {
            return None;
        }
        loop {
            let index = self
                .order
                .iter()
                .position(|w| self.in_flight.get(w).copied().unwrap_or(0) < PER_WORKSPACE)?;
            let workspace = self.order[index].clone();
            let mut group: Vec<T> = Vec::new();
            if let Some(queue) = self.waiting.get_mut(&workspace) {
                let (mut events, mut bytes) = (0, 0);
                while let Some(next) = queue.front() {
                    if next.abandoned() {
                        queue.pop_front();
                        continue;
                    }
                    let (e, b) = next.size();
                    let fits = events + e <= self.bounds.events && bytes + b <= self.bounds.bytes;
                    if !group.is_empty() && !fits {
                        break;
                    }
                    events += e;
                    bytes += b;
                    group.extend(queue.pop_front());
                }
            }
            if self.waiting.get(&workspace).is_none_or(VecDeque::is_empty) {
                self.waiting.remove(&workspace);
                self.order.remove(index);
            }
            if !group.is_empty() {
                *self.in_flight.entry(workspace.clone()).or_default() += 1;
                return Some((group, workspace));
            }
        }
    }

    /// A group of `workspace` started by [`WriteQueue::next_group`] is done (committed or
    /// failed).
    pub fn finished(&mut self, workspace: &str) {
        if let Some(n) = self.in_flight.get_mut(workspace) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(workspace);
            }
        }
    }
}

#[cfg(test)]
mod tests;
