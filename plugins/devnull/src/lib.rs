//! Sluice `devnull` destination: every event goes through `transform` (forwarded as it was
//! stored) and `send` (accepted), and nowhere else. Use it to test a pipeline without a
//! receiver, and to measure what Sluice itself costs per event (`sluice bench`).
//!
//! Config: none (any JSON value is accepted and ignored).

use sluice_sdk::{ConfigError, Destination, JobContext, Outcome, Request, TransformError};

/// The destination that accepts everything.
#[derive(Debug)]
pub struct Devnull;

impl Destination for Devnull {
    /// Anything goes: the config is read (it must be JSON) and ignored.
    type Config = serde::de::IgnoredAny;

    fn configure(_config: Self::Config) -> Result<Self, ConfigError> {
        Ok(Devnull)
    }

    fn transform_json(
        &self,
        _ctx: &JobContext,
        event_json: &str,
    ) -> Result<Vec<Vec<u8>>, TransformError> {
        Ok(vec![event_json.as_bytes().to_vec()])
    }

    fn send(&self, requests: Vec<Request>) -> Vec<Outcome> {
        vec![Outcome::Delivered; requests.len()]
    }
}

sluice_sdk::export_destination!(Devnull);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_everything() {
        for config in ["{}", r#"{"anything": [1, 2]}"#, "null"] {
            assert!(sluice_sdk::testing::configure::<Devnull>(config).is_ok());
        }
        let d = sluice_sdk::testing::configure::<Devnull>("{}").unwrap();
        let ctx = JobContext {
            job_id: 1,
            idempotency_key: "m:d".into(),
            message_id: "m".into(),
            workspace_id: "w".into(),
            source_id: "s".into(),
            destination_id: "d".into(),
            attempt: 0,
        };
        let payloads = d.transform_json(&ctx, r#"{"type":"track"}"#).unwrap();
        assert_eq!(payloads, vec![br#"{"type":"track"}"#.to_vec()]);
        let requests = vec![Request {
            context: ctx,
            body: payloads[0].clone(),
        }];
        assert_eq!(d.send(requests), vec![Outcome::Delivered]);
    }
}
