//! Wake-up handles of the lanes on this host: ingest wakes the lanes its events are for,
//! another host's NOTIFY wakes a workspace's lanes, maintenance wakes orphaned lanes, and an
//! operator's change wakes one lane. A lane that is not woken issues no statement.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Notify;

use sluice_core::{DestinationId, WorkspaceId};
use tokio_util::sync::CancellationToken;

use sluice_store::Store;

/// Wake-up handles per lane, shared with ingest and maintenance.
#[derive(Clone, Default)]
pub struct Wakers {
    /// By destination id.
    pub(crate) by_destination: Arc<HashMap<DestinationId, Arc<Notify>>>,
    /// Destination ids by workspace.
    pub(crate) by_workspace: Arc<HashMap<WorkspaceId, Vec<DestinationId>>>,
    /// By destination id: an operator changed the lane (due keys, pause).
    pub(crate) operator: Arc<HashMap<DestinationId, Arc<Notify>>>,
}

impl Wakers {
    /// Tells the destination's lane there may be new work.
    pub fn wake(&self, destination_id: &str) {
        if let Some(n) = self.by_destination.get(destination_id) {
            n.notify_one();
        }
    }

    /// Wakes every lane of a workspace (another host wrote events for it).
    pub fn wake_workspace(&self, workspace_id: &str) {
        for d in self.by_workspace.get(workspace_id).into_iter().flatten() {
            self.wake(d);
        }
    }

    /// Tells the destination's lane that an operator changed it.
    pub fn operator(&self, destination_id: &str) {
        if let Some(n) = self.operator.get(destination_id) {
            n.notify_one();
        }
    }

    /// Wakes every lane (a wake-up may have been missed).
    pub fn wake_all(&self) {
        for n in self.by_destination.values() {
            n.notify_one();
        }
    }
}

/// Wakes local lanes when another host's ingest wrote events for their workspace.
pub async fn listen_for_peers(
    store: Store,
    wakers: Wakers,
    maintenance: Arc<Notify>,
    me: uuid::Uuid,
    shutdown: CancellationToken,
) {
    let mut listener = loop {
        match store.wake_listener().await {
            Ok(l) => break l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN for other hosts; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    };
    loop {
        let wake = tokio::select! {
            w = listener.next() => w,
            _ = shutdown.cancelled() => return,
        };
        match wake {
            Ok(w) if w.operator.is_some() => {
                if let Some((_, destination)) = &w.operator {
                    wakers.operator(destination);
                }
            }
            Ok(w) if w.from == Some(me) => {}
            Ok(w) if w.joined => {
                // Another host started: shares of lanes change.
                maintenance.notify_one();
            }
            Ok(w) if w.workspaces.is_empty() => {
                // Reconnected: notifications may have been missed.
                wakers.wake_all();
                maintenance.notify_one();
            }
            Ok(w) => {
                for ws in &w.workspaces {
                    wakers.wake_workspace(ws);
                }
                maintenance.notify_one();
            }
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}
