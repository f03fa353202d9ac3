//! The admin API's check of a destination, answered by the engine's plugin set: the same
//! loaded plugin that will serve the destination runs `configure` on the new config before
//! the catalog accepts it. Wired here because `admin` and `engine` do not know each other.

use std::sync::Arc;

use sluice_admin::catalog::{CatalogCheck, CheckFuture, Refusal};
use sluice_config::DestinationConfig;
use sluice_engine::delivery::PluginSet;
use sluice_runtime::Manifest;

pub struct EngineCheck(pub Arc<PluginSet>);

impl CatalogCheck for EngineCheck {
    fn check<'a>(&'a self, dest: &'a DestinationConfig) -> CheckFuture<'a, Result<(), Refusal>> {
        Box::pin(async move {
            self.0.check(dest).await.map_err(|r| Refusal {
                field: r.field,
                message: r.message,
            })
        })
    }

    fn secret_paths<'a>(&'a self, plugin: &'a str) -> CheckFuture<'a, Option<Vec<String>>> {
        Box::pin(self.0.secret_paths(plugin))
    }

    fn plugins(&self) -> CheckFuture<'_, Vec<Manifest>> {
        Box::pin(self.0.manifests())
    }
}
