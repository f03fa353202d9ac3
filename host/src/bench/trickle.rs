//! The trickle that fairness is measured with: 100 webhook lanes, each sent two events a second,
//! and a receiver that times every event from the client's send to its arrival. Scenarios put
//! a heavy lane (a flood, a backfill) beside it and report the trickle's p99 wait.

use std::time::{Duration, Instant};

use anyhow::Context;

use super::Row;
use super::env::ConfigBuilder;
use super::load::{self, LatencyReceiver, Shape};

pub struct Trickle {
    receiver: LatencyReceiver,
    lanes: Vec<String>,
    hook: String,
}

impl Trickle {
    /// Starts the receiver.
    pub async fn start() -> anyhow::Result<Trickle> {
        let receiver = LatencyReceiver::default();
        let url = receiver.start().await?;
        Ok(Trickle {
            receiver,
            lanes: (0..100).map(|i| format!("t{i}")).collect(),
            hook: format!("{{ url = \"{url}\", secret = \"whsec_YmVuY2g=\" }}"),
        })
    }

    /// Adds source `trickle` (write key `wk_trickle`) and its 100 webhook destinations.
    pub fn add_to(&self, mut config: ConfigBuilder) -> ConfigBuilder {
        config = config.route("trickle", "wk_trickle", &self.lanes);
        for t in &self.lanes {
            config = config.destination(t, "webhook", &self.hook);
        }
        config
    }

    /// Sends to `ingest_url` for `secs` seconds, then waits (up to a minute) for every event.
    /// Returns how many were sent to the lanes together.
    pub async fn run(&self, ingest_url: &str, secs: u64) -> anyhow::Result<usize> {
        let shape = Shape {
            users: 50,
            pad: 200,
            batch: 2,
        };
        let sent = load::steady(
            ingest_url,
            "wk_trickle",
            shape,
            Duration::from_secs(1),
            Duration::from_secs(secs),
            "trickle",
        )
        .await?
        .events;
        let expected = sent as usize * self.lanes.len();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.receiver.count() < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(expected)
    }

    /// The row of the trickle's wait: p99 within one pickup round, every event arrived.
    pub fn row(&self, scenario: String, expected: usize) -> anyhow::Result<Row> {
        let (p50, p99) = self
            .receiver
            .percentiles(0)
            .context("no trickle event arrived")?;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let arrived = self.receiver.count();
        Ok(Row {
            scenario,
            sluice: format!("{:.1} ms (p50 {:.1} ms)", ms(p99), ms(p50)),
            peer: format!("{arrived} of {expected} trickle jobs arrived"),
            ratio: None,
            target: "< 1 s (one pickup round)".into(),
            met: Some(ms(p99) < 1000.0 && arrived == expected),
        })
    }
}
