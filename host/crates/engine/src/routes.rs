//! The lane of a destination.

use sluice_config::DestinationConfig;
use sluice_store::LaneId;

/// The lane of a destination. The store keeps ids as text; they were validated when the
/// destination was made (`sluice_core::ids`).
pub fn lane_of(d: &DestinationConfig) -> LaneId {
    LaneId {
        workspace_id: d.workspace.to_string(),
        destination_id: d.id.to_string(),
    }
}
