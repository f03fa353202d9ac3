//! What the runtime counts, through the `metrics` facade (the binary installs the Prometheus
//! recorder; without one these are no-ops). Labels are destination ids from the catalog,
//! never user data.

use metrics::{Histogram, histogram};

/// Where a destination's outbound HTTP requests (sent and answered, or failed) are timed;
/// looked up once per plugin instance, not per request.
pub fn http_requests(destination: &str) -> Histogram {
    histogram!("sluice_http_request_seconds", "destination" => destination.to_string())
}
