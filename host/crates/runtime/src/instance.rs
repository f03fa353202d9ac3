//! One configured plugin instance serving one destination.
//!
//! A plugin built against WIT 0.2 transforms a call's jobs in one `transform-batch`; one built
//! against 0.1.x gets a `transform` per job, which [`PluginInstance::transform_batch`] hides.
//!
//! Instances are reused for many calls (instantiation costs ~10-20 µs, a call well under one).
//! After a trap the instance's state is unknown: it is marked poisoned and the owner drops it.
//! A guest failure that the plugin returns (`retry`, `abort`) is not a trap and leaves the
//! instance healthy.

use std::sync::Arc;

use wasmtime::{Store, UpdateDeadline};

use super::PluginRuntime;
use super::allowlist::Allowlist;
use super::bindings::{
    BatchContext, BatchJob, Destination, Failure, Outcome, Request, TransformError, v0_1,
};
use super::host_api::{HostState, InstanceLimits, Labels};
use super::limiter::Limiter;
use super::loader::{LoadedPlugin, Pre};
use super::outbound::Outbound;
use super::redact::Scrubber;

/// A call that did not return normally: the plugin trapped, ran out of time or memory, or
/// broke the protocol. The job is retried with this code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub code: CallErrorCode,
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Why a call did not return normally. Its [`as_str`](CallErrorCode::as_str) is the job's
/// `error_code` in the store and in logs: the strings are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallErrorCode {
    /// `plugin_trap`: the guest trapped (a panic, an unreachable, a failed host import).
    Trap,
    /// `plugin_timeout`: the guest ran past the manifest's `limits.deadline`.
    Timeout,
    /// `plugin_memory`: the guest grew past the manifest's `limits.memory`.
    Memory,
    /// `plugin_config`: `configure` rejected the destination's config.
    Config,
    /// `plugin_protocol`: the guest broke the contract (e.g. not one outcome per request).
    Protocol,
    /// `plugin_unavailable`: no plugin version is installed for the destination.
    Unavailable,
}

impl CallErrorCode {
    pub const ALL: [CallErrorCode; 6] = [
        CallErrorCode::Trap,
        CallErrorCode::Timeout,
        CallErrorCode::Memory,
        CallErrorCode::Config,
        CallErrorCode::Protocol,
        CallErrorCode::Unavailable,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            CallErrorCode::Trap => "plugin_trap",
            CallErrorCode::Timeout => "plugin_timeout",
            CallErrorCode::Memory => "plugin_memory",
            CallErrorCode::Config => "plugin_config",
            CallErrorCode::Protocol => "plugin_protocol",
            CallErrorCode::Unavailable => "plugin_unavailable",
        }
    }
}

impl std::fmt::Display for CallErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an instance is created for.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub plugin: Arc<LoadedPlugin>,
    pub destination_id: String,
    /// The destination's config as JSON text, handed to `configure`.
    pub config_json: String,
    pub allowlist: Arc<Allowlist>,
    /// The HTTP client for the destination's network policy (`PluginRuntime::outbound`).
    pub http: Outbound,
    /// The destination's concurrency limit, shared by its instances.
    pub limiter: Arc<Limiter>,
}

/// What `transform-batch` returns: one result per job, in order.
pub type Transformed = Vec<Result<Vec<Vec<u8>>, TransformError>>;

pub struct PluginInstance {
    sandbox: Sandbox,
    bindings: Bindings,
}

/// The instance's store and health, apart from its exports so that a call can borrow both.
struct Sandbox {
    store: Store<HostState>,
    poisoned: bool,
}

/// The instance's exports, in the world its plugin was built against.
enum Bindings {
    V0_2(Destination),
    V0_1(v0_1::Destination),
}

impl PluginInstance {
    /// The destination's adaptive limit on requests in flight (shared by its instances).
    pub fn concurrency_limit(&self) -> usize {
        self.sandbox.store.data().concurrency_limit()
    }

    /// Instantiates the plugin and runs `configure`.
    pub async fn new(
        runtime: &PluginRuntime,
        spec: &InstanceSpec,
    ) -> Result<PluginInstance, CallError> {
        let manifest = &spec.plugin.manifest;
        let limits = InstanceLimits {
            max_memory: manifest.limits.memory.as_usize(),
            deadline: manifest.limits.deadline,
            http_timeout: manifest.limits.http_timeout,
            max_response: manifest.limits.response_size.as_usize(),
        };
        let scrubber = Arc::new(Scrubber::from_json(&spec.config_json, &manifest.secrets));
        let state = HostState::new(
            spec.http.clone(),
            spec.allowlist.clone(),
            spec.limiter.clone(),
            Arc::new(Labels {
                plugin: spec.plugin.name.clone(),
                destination: spec.destination_id.clone(),
            }),
            limits,
            scrubber,
        );
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|mut ctx| {
            if ctx.data_mut().clock.expired() {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });

        // Instantiation runs guest start code, so it gets the same deadline as a call.
        store.data_mut().clock.begin();
        store.set_epoch_deadline(1);
        let bindings = match &spec.plugin.pre {
            Pre::V0_2(pre) => pre.instantiate_async(&mut store).await.map(Bindings::V0_2),
            Pre::V0_1(pre) => pre.instantiate_async(&mut store).await.map(Bindings::V0_1),
        };
        let bindings = match bindings {
            Ok(b) => b,
            Err(e) => return Err(classify(store.data(), &e)),
        };
        let mut instance = PluginInstance {
            sandbox: Sandbox {
                store,
                poisoned: false,
            },
            bindings,
        };
        instance.sandbox.begin();
        let config = &spec.config_json;
        let result = match &instance.bindings {
            Bindings::V0_2(b) => {
                b.sluice_destination_plugin()
                    .call_configure(&mut instance.sandbox.store, config)
                    .await
            }
            Bindings::V0_1(b) => {
                b.sluice_destination_plugin()
                    .call_configure(&mut instance.sandbox.store, config)
                    .await
            }
        };
        match instance.sandbox.finish(result)? {
            Ok(()) => Ok(instance),
            Err(message) => Err(CallError {
                code: CallErrorCode::Config,
                message: format!(
                    "the plugin rejected the destination config: {}",
                    instance.scrubber().scrub(&message)
                ),
            }),
        }
    }

    /// The most linear memory this instance has had, in bytes.
    pub fn peak_memory(&self) -> usize {
        self.sandbox.store.data().limiter.peak
    }

    /// Whether the instance trapped and must be dropped.
    pub fn is_poisoned(&self) -> bool {
        self.sandbox.poisoned
    }

    /// `transform` of a call's jobs: exactly one result per job, or an error for the whole
    /// call (a trap, the deadline, the memory cap: the call's deadline covers all its jobs; a
    /// wrong number of results is `plugin_protocol`). On an error the instance is poisoned and
    /// the caller may run the jobs one by one on fresh instances to find the one at fault.
    pub async fn transform_batch(
        &mut self,
        batch: &BatchContext,
        jobs: &[BatchJob],
    ) -> Result<Transformed, CallError> {
        let mut results = match &self.bindings {
            Bindings::V0_2(b) => {
                let b = b.sluice_destination_plugin();
                self.sandbox.begin();
                if let [job] = jobs {
                    self.sandbox.store.data_mut().current_job = Some(job.job_id);
                }
                let result = b
                    .call_transform_batch(&mut self.sandbox.store, batch, jobs)
                    .await;
                self.sandbox.finish(result)?
            }
            Bindings::V0_1(b) => {
                let b = b.sluice_destination_plugin();
                let mut results = Vec::with_capacity(jobs.len());
                for job in jobs {
                    let context = crate::compat::job_context(batch, job);
                    self.sandbox.begin();
                    self.sandbox.store.data_mut().current_job = Some(job.job_id);
                    let result = b
                        .call_transform(&mut self.sandbox.store, &context, &job.event)
                        .await;
                    results.push(self.sandbox.finish(result)?.map_err(Into::into));
                }
                results
            }
        };
        if results.len() != jobs.len() {
            self.sandbox.poisoned = true;
            return Err(CallError {
                code: CallErrorCode::Protocol,
                message: format!(
                    "transform-batch returned {} results for {} jobs",
                    results.len(),
                    jobs.len()
                ),
            });
        }
        let scrubber = self.scrubber().clone();
        for result in &mut results {
            if let Err(TransformError::Retry(f) | TransformError::Abort(f)) = result {
                scrub_failure(&scrubber, f);
            }
        }
        Ok(results)
    }

    /// `send` of a batch; exactly one outcome per request or a `plugin_protocol` error.
    pub async fn send(&mut self, requests: &[Request]) -> Result<Vec<Outcome>, CallError> {
        self.sandbox.begin();
        let mut outcomes = match &self.bindings {
            Bindings::V0_2(b) => {
                let result = b
                    .sluice_destination_plugin()
                    .call_send(&mut self.sandbox.store, requests)
                    .await;
                self.sandbox.finish(result)?
            }
            Bindings::V0_1(b) => {
                let requests: Vec<_> = requests.iter().map(Into::into).collect();
                let result = b
                    .sluice_destination_plugin()
                    .call_send(&mut self.sandbox.store, &requests)
                    .await;
                self.sandbox
                    .finish(result)?
                    .into_iter()
                    .map(Into::into)
                    .collect()
            }
        };
        let scrubber = self.scrubber().clone();
        for outcome in &mut outcomes {
            if let Outcome::Retry(f) | Outcome::Abort(f) | Outcome::TooLarge(f) = outcome {
                scrub_failure(&scrubber, f);
            }
        }
        if outcomes.len() != requests.len() {
            self.sandbox.poisoned = true;
            return Err(CallError {
                code: CallErrorCode::Protocol,
                message: format!(
                    "send returned {} outcomes for {} requests",
                    outcomes.len(),
                    requests.len()
                ),
            });
        }
        Ok(outcomes)
    }

    /// Masks this destination's secrets (and URL credentials) in text the plugin produced.
    pub fn scrubber(&self) -> &Arc<Scrubber> {
        &self.sandbox.store.data().scrubber
    }
}

impl Sandbox {
    fn begin(&mut self) {
        let data = self.store.data_mut();
        data.clock.begin();
        data.logs.begin();
        data.current_job = None;
        // The deadline is relative to the current epoch: set it before every call.
        self.store.set_epoch_deadline(1);
    }

    fn finish<R>(&mut self, result: wasmtime::Result<R>) -> Result<R, CallError> {
        self.store.data_mut().report_dropped_logs();
        result.map_err(|e| {
            self.poisoned = true;
            classify(self.store.data(), &e)
        })
    }
}

fn scrub_failure(scrubber: &Scrubber, failure: &mut Failure) {
    scrubber.scrub_in_place(&mut failure.code);
    scrubber.scrub_in_place(&mut failure.message);
}

/// Names a failed call by what the sandbox observed, not by the error text.
fn classify(state: &HostState, error: &wasmtime::Error) -> CallError {
    if state.clock.timed_out {
        return CallError {
            code: CallErrorCode::Timeout,
            message: format!(
                "the plugin ran longer than its deadline of {:?} and was stopped",
                state.clock.deadline
            ),
        };
    }
    if state.limiter.exceeded {
        return CallError {
            code: CallErrorCode::Memory,
            message: format!(
                "the plugin exceeded its memory limit of {} bytes and was stopped",
                state.limiter.max_bytes
            ),
        };
    }
    let mut message = format!("{error:#}");
    let stderr = state.stderr_tail();
    if !stderr.is_empty() {
        message.push_str("; plugin stderr: ");
        message.push_str(&stderr);
    }
    CallError {
        code: CallErrorCode::Trap,
        // Panic messages and stderr are the plugin's text: they may quote its config.
        message: state.scrubber.scrub(&message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes are stored as jobs' `error_code` and documented: they must not drift.
    #[test]
    fn call_error_codes_keep_their_stored_names() {
        let names: Vec<&str> = CallErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "plugin_trap",
                "plugin_timeout",
                "plugin_memory",
                "plugin_config",
                "plugin_protocol",
                "plugin_unavailable",
            ]
        );
        let e = CallError {
            code: CallErrorCode::Timeout,
            message: "stopped".into(),
        };
        assert_eq!(e.to_string(), "plugin_timeout: stopped");
    }
}
