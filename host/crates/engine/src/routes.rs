//! The lanes a configuration describes: one per destination, fed by the sources naming it.

use sluice_config::Config;
use sluice_store::{LaneId, LaneSpec};

/// The lanes the config describes: one per destination, fed by the sources naming it.
pub fn lane_specs(config: &Config) -> Vec<LaneSpec> {
    config
        .destinations
        .iter()
        .map(|d| LaneSpec {
            lane: LaneId {
                workspace_id: d.workspace.clone(),
                destination_id: d.id.clone(),
            },
            ordering: d.ordering,
            sources: config
                .sources
                .iter()
                .filter(|s| s.destinations.contains(&d.id))
                .map(|s| s.id.clone())
                .collect(),
        })
        .collect()
}
