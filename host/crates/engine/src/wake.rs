//! Wake-up handles of the lanes on this host: ingest wakes the lanes its events are for,
//! another host's NOTIFY wakes a workspace's lanes, maintenance wakes orphaned lanes, and an
//! operator's change wakes one lane. A lane that is not woken issues no statement. A catalog
//! change announced by any host wakes the catalog follower (`catalog`).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use sluice_core::{DestinationId, WorkspaceId};
use tokio_util::sync::CancellationToken;

use sluice_store::{Store, Wake};

/// Wake-up handles per lane, shared with ingest and maintenance. The lanes change with the
/// catalog: delivery replaces the maps ([`Wakers::replace`]) and every clone sees the new ones.
#[derive(Clone, Default)]
pub struct Wakers {
    maps: Arc<ArcSwap<WakerMaps>>,
}

/// The handles of the lanes running on this host.
#[derive(Default)]
pub(crate) struct WakerMaps {
    /// By destination id.
    pub by_destination: HashMap<DestinationId, Arc<Notify>>,
    /// Destination ids by workspace.
    pub by_workspace: HashMap<WorkspaceId, Vec<DestinationId>>,
    /// By destination id: an operator changed the lane (due keys, pause).
    pub operator: HashMap<DestinationId, Arc<Notify>>,
}

impl Wakers {
    pub(crate) fn replace(&self, maps: WakerMaps) {
        self.maps.store(Arc::new(maps));
    }

    /// Tells the destination's lane there may be new work.
    pub fn wake(&self, destination_id: &str) {
        if let Some(n) = self.maps.load().by_destination.get(destination_id) {
            n.notify_one();
        }
    }

    /// Wakes every lane of a workspace (another host wrote events for it).
    pub fn wake_workspace(&self, workspace_id: &str) {
        let maps = self.maps.load();
        for d in maps.by_workspace.get(workspace_id).into_iter().flatten() {
            if let Some(n) = maps.by_destination.get(d) {
                n.notify_one();
            }
        }
    }

    /// Tells the destination's lane that an operator changed it.
    pub fn operator(&self, destination_id: &str) {
        if let Some(n) = self.maps.load().operator.get(destination_id) {
            n.notify_one();
        }
    }

    /// Wakes every lane (a wake-up may have been missed).
    pub fn wake_all(&self) {
        for n in self.maps.load().by_destination.values() {
            n.notify_one();
        }
    }
}

/// What the NOTIFYs of other hosts and operators wake on this host.
pub struct PeerWakes {
    pub wakers: Wakers,
    pub maintenance: Arc<Notify>,
    /// The catalog follower (`catalog::follow`).
    pub catalog: Arc<Notify>,
}

/// Wakes local lanes when another host's ingest wrote events for their workspace, an operator
/// changed one, or the catalog changed.
pub async fn listen_for_peers(
    store: Store,
    wakes: PeerWakes,
    me: uuid::Uuid,
    shutdown: CancellationToken,
) {
    let PeerWakes {
        wakers,
        maintenance,
        catalog,
    } = wakes;
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
            Ok(Wake::Operator { destination, .. }) => wakers.operator(&destination),
            Ok(Wake::Catalog { .. }) => {
                catalog.notify_one();
                // A destination may have started draining: maintenance deletes it once done.
                maintenance.notify_one();
            }
            Ok(Wake::Events { from, .. }) | Ok(Wake::Joined { from }) if from == Some(me) => {}
            Ok(Wake::Joined { .. }) => {
                // Another host started: shares of lanes change.
                maintenance.notify_one();
            }
            Ok(Wake::Reconnected) => {
                // Notifications may have been missed.
                wakers.wake_all();
                maintenance.notify_one();
                catalog.notify_one();
            }
            Ok(Wake::Events { workspaces, .. }) => {
                for ws in &workspaces {
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
