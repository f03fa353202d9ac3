//! The lanes a configuration describes: one per destination, fed by the sources naming it.

use sluice_config::{Config, DestinationConfig};
use sluice_store::{LaneId, LaneSpec};

/// The lane of a destination. The store keeps ids as text; they were validated when the
/// config was read (`sluice_core::ids`).
pub fn lane_of(d: &DestinationConfig) -> LaneId {
    LaneId {
        workspace_id: d.workspace.to_string(),
        destination_id: d.id.to_string(),
    }
}

/// The sources feeding a destination.
pub fn sources_of(config: &Config, d: &DestinationConfig) -> Vec<String> {
    config
        .sources
        .iter()
        .filter(|s| s.destinations.contains(&d.id))
        .map(|s| s.id.to_string())
        .collect()
}

/// The lanes the config describes: one per destination, fed by the sources naming it.
pub fn lane_specs(config: &Config) -> Vec<LaneSpec> {
    config
        .destinations
        .iter()
        .map(|d| LaneSpec {
            lane: lane_of(d),
            ordering: d.ordering,
            sources: sources_of(config, d),
        })
        .collect()
}
