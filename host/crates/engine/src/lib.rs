//! The engine: everything between an HTTP request and a destination's answer.
//!
//! ```text
//! ingest ──append (one tx)──▶ store ──read by lanes──▶ delivery ──▶ plugin (runtime) ──▶ destination
//!    └── wake ──────────────────────────────────────────▲
//! ```
//!
//! - [`ingest`]: the Segment/RudderStack-compatible HTTP API and the group-commit writer.
//! - [`lane`]: the sans-IO state of one lane: which jobs may go, and what an outcome decides.
//! - [`delivery`]: the lane loops that drive [`lane`] against the store and the plugins.
//! - [`wake`]: the wake-up handles that ingest, other hosts and operators use.
//! - [`catalog`]: follows the catalog in the store, so that every change runs on this host.
//! - [`routes`]: the lane of a destination.
//! - [`maintenance`]: dataset rotation, orphaned lanes, host liveness, stats expiry.
//! - [`metrics`]: the Prometheus page.

pub mod catalog;
pub mod delivery;
pub mod ingest;
pub mod lane;
pub mod maintenance;
pub mod metrics;
pub mod routes;
pub mod wake;
