//! Logging into the host's log, which tags each line with the job, destination and plugin.
//!
//! Contract: in a WebAssembly build each call goes to the host's `log` import; in a native
//! build (unit tests) it is printed to stderr, where the test harness captures it, and kept
//! for [`crate::testing::logs`]. [`enabled`] says whether the host would keep a line at a
//! level (WIT 0.1.1), so that plugins skip formatting lines nobody will see.

/// Log at trace level.
pub fn trace(msg: &str) {
    emit(Level::Trace, msg);
}

/// Log at debug level.
pub fn debug(msg: &str) {
    emit(Level::Debug, msg);
}

/// Log at info level.
pub fn info(msg: &str) {
    emit(Level::Info, msg);
}

/// Log at warn level.
pub fn warn(msg: &str) {
    emit(Level::Warn, msg);
}

/// Log at error level.
pub fn error(msg: &str) {
    emit(Level::Error, msg);
}

/// Whether a line at `level` would be kept by the host's log filter: check it before
/// building an expensive message. (Native builds, for unit tests: always `true`.)
pub fn enabled(level: Level) -> bool {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::sluice::destination::log::enabled(wire_level(level))
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = level;
        true
    }
}

/// A log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Trace.
    Trace,
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
}

#[cfg(target_arch = "wasm32")]
fn wire_level(level: Level) -> crate::bindings::sluice::destination::log::Level {
    use crate::bindings::sluice::destination::log as wire;
    match level {
        Level::Trace => wire::Level::Trace,
        Level::Debug => wire::Level::Debug,
        Level::Info => wire::Level::Info,
        Level::Warn => wire::Level::Warn,
        Level::Error => wire::Level::Error,
    }
}

#[cfg(target_arch = "wasm32")]
fn emit(level: Level, msg: &str) {
    crate::bindings::sluice::destination::log::log(wire_level(level), msg);
}

#[cfg(not(target_arch = "wasm32"))]
fn emit(level: Level, msg: &str) {
    eprintln!("[sluice {level:?}] {msg}");
    crate::testing::record_log(level, msg);
}
