//! The catalog (migration 0008, docs/catalog.md): workspaces, sources and their write keys,
//! destinations, and the links between them.
//!
//! - `load`: the whole catalog as of one version, read in one snapshot;
//! - `write`: creating, changing and deleting items, each in one transaction that also makes
//!   the lane and its links match, bumps `catalog_version`, writes a `catalog_audit` row and
//!   sends `catalog <version>` on `sluice_events`;
//! - `drain`: deleting a destination once it has delivered what it had;
//! - `seed`: the `[[source]]`/`[[destination]]` tables of a `sluice.toml`, stored for the
//!   workspaces the store does not have yet, and only for those.
//!
//! Every host runs what this holds; no host changes it because of its own file. Write keys are
//! kept as SHA-256 only.

mod drain;
mod load;
mod rows;
mod sealed;
mod seed;
mod write;

use serde::{Deserialize, Serialize};

use sluice_core::catalog::InvalidItem;
use sluice_core::{EventFilter, RetryOverrides};

pub use drain::DrainPass;
pub use seed::SeedReport;
pub use write::{Audit, CatalogStep, DestinationStart, KeyRotation, SourceWrite};

use super::StoreError;

/// Why a catalog write was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("no {kind} `{id}` in workspace `{workspace}`")]
    NotFound {
        kind: &'static str,
        workspace: String,
        id: String,
    },
    /// The item exists already, or the change clashes with the catalog's state.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Invalid(#[from] InvalidItem),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `destinations.settings`: a destination's delivery settings, as one JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Settings {
    #[serde(default)]
    retry: RetryOverrides,
    #[serde(default = "sluice_core::catalog::default_max_concurrency")]
    max_concurrency: usize,
    #[serde(default)]
    rate_limit: Option<f64>,
    #[serde(default)]
    allowed_private_networks: Vec<ipnet::IpNet>,
    /// Absent in rows written before filters existed: no filter.
    #[serde(default, skip_serializing_if = "EventFilter::is_empty")]
    filter: EventFilter,
}

impl Settings {
    fn of(d: &sluice_core::catalog::DestinationConfig) -> Settings {
        Settings {
            retry: d.retry.clone(),
            max_concurrency: d.max_concurrency,
            rate_limit: d.rate_limit,
            allowed_private_networks: d.allowed_private_networks.clone(),
            filter: d.filter.clone(),
        }
    }
}
