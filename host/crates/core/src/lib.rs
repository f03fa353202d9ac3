//! The bottom of Sluice's crate graph: small types that several layers share, and nothing that
//! does IO. Every other host crate may depend on this one; it depends on none of them.
//!
//! - [`catalog`]: sources, destinations and links, as files, the store and the engine see them.
//! - [`clock`]: where time comes from (the system clock, or a manual one in tests).
//! - [`filter`]: [`EventFilter`], which events a destination receives.
//! - [`ids`]: [`WorkspaceId`], [`SourceId`], [`DestinationId`], validated when made.
//! - [`size`]: [`ByteSize`], sizes as people write them (`64MiB`).
//! - [`retry`]: [`RetryOverrides`], retry settings as config and manifests write them.
//! - [`ordering`]: [`OrderingScope`], what a destination keeps in order.
//! - [`source_limits`]: [`SourceLimits`], rates and sizes for public (browser) keys.
//! - [`origins`]: [`AllowedOrigin`], the browser origins a source accepts (CORS).
//! - [`datasets`]: [`DatasetPolicy`], when the store rotates and drops datasets.

pub mod catalog;
pub mod clock;
pub mod datasets;
pub mod filter;
pub mod ids;
pub mod ordering;
pub mod origins;
pub mod retry;
pub mod size;
pub mod source_limits;

pub use datasets::DatasetPolicy;
pub use filter::EventFilter;
pub use ids::{DestinationId, InvalidId, SourceId, WorkspaceId};
pub use ordering::OrderingScope;
pub use origins::AllowedOrigin;
pub use retry::RetryOverrides;
pub use size::ByteSize;
pub use source_limits::SourceLimits;
