//! Idle plugin instances of one destination, reused across claims.
//!
//! Instances are created on demand (at most `max_in_flight` are ever busy at once, since each
//! delivery holds one) and returned after use; poisoned instances (after a trap) are dropped.

use std::sync::Mutex;

use crate::runtime::{CallError, InstanceSpec, PluginInstance, PluginRuntime};

pub struct InstancePool {
    runtime: PluginRuntime,
    spec: InstanceSpec,
    idle: Mutex<Vec<PluginInstance>>,
}

impl InstancePool {
    pub fn new(runtime: PluginRuntime, spec: InstanceSpec) -> InstancePool {
        InstancePool {
            runtime,
            spec,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn destination_id(&self) -> &str {
        &self.spec.destination_id
    }

    pub fn plugin_name(&self) -> &str {
        &self.spec.plugin.name
    }

    /// An idle instance, or a freshly instantiated and configured one.
    pub async fn take(&self) -> Result<PluginInstance, CallError> {
        let idle = self.idle.lock().map(|mut v| v.pop()).unwrap_or(None);
        match idle {
            Some(i) => Ok(i),
            None => PluginInstance::new(&self.runtime, &self.spec).await,
        }
    }

    /// Returns an instance for reuse; a poisoned one is dropped.
    pub fn give_back(&self, instance: PluginInstance) {
        if instance.is_poisoned() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(instance);
        }
    }
}
