//! What the runtime counts, through the `metrics` facade (the binary installs the Prometheus
//! recorder; without one these are no-ops). Labels are destination ids from the catalog,
//! never user data.

use std::time::Duration;

use metrics::histogram;

/// One outbound HTTP request of a plugin, sent and answered (or failed).
pub fn http_request(destination: &str, took: Duration) {
    histogram!("sluice_http_request_seconds", "destination" => destination.to_string())
        .record(took.as_secs_f64());
}
