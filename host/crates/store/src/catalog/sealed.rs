//! A destination config as it is kept: sealed for the hosts (`destinations.config_sealed`),
//! masked for people (`destinations.config` and the audit).

use sluice_core::catalog::{DestinationConfig, masked_config};

use super::write::Audit;
use crate::StoreError;
use crate::sealer::{SealError, Sealer};

/// The audit's view of a destination: its secret paths masked.
pub(super) fn audited(d: &DestinationConfig, audit: &Audit) -> serde_json::Value {
    let mut v = serde_json::to_value(d).unwrap_or_default();
    if let Some(c) = v.get_mut("config") {
        *c = shown_config(d, audit);
    }
    v
}

/// The config as `destinations.config` and the audit show it: declared secrets and URL
/// credentials masked.
pub(super) fn shown_config(d: &DestinationConfig, audit: &Audit) -> serde_json::Value {
    masked_config(&d.config, audit.secrets.get(&d.plugin).map(Vec::as_slice))
}

/// What binds a sealed config to its destination.
pub(super) fn aad(workspace: &str, id: &str) -> Vec<u8> {
    format!("destination {workspace}/{id}").into_bytes()
}

pub(super) fn seal_config(d: &DestinationConfig, sealer: &Sealer) -> Vec<u8> {
    sealer.seal(d.config.to_string().as_bytes(), &aad(&d.workspace, &d.id))
}

/// A destination's config from its sealed form.
pub(super) fn open_config(
    sealer: &Sealer,
    workspace: &str,
    id: &str,
    sealed: &[u8],
) -> Result<serde_json::Value, StoreError> {
    let sealed_error = |source| StoreError::Sealed {
        workspace: workspace.to_string(),
        destination: id.to_string(),
        source,
    };
    let plain = sealer
        .open(sealed, &aad(workspace, id))
        .map_err(sealed_error)?;
    serde_json::from_slice(&plain).map_err(|_| sealed_error(SealError::Damaged))
}
