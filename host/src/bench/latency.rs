//! Latency at a steady 1,000 events/s, client send → a fast receiver, and where it goes: the
//! budget of each step, from the client's own timing and the host's histograms.
//!
//! The steps, in the order an event takes them:
//! 1. the ingest request, send → answer (the client's clock; the answer waits for commit),
//!    of which the group commit (`sluice_ingest_commit_seconds`: the wait for the writer and
//!    the transaction);
//! 2. arrival (`receivedAt`) → the start of the plugin call that carries it
//!    (`sluice_delivery_wait_seconds`: commit, wake-up, the lane's read, earlier calls);
//! 3. the plugin call (`sluice_plugin_call_seconds`: transform, then send), of which the HTTP
//!    request to the receiver (`sluice_http_request_seconds`).
//!
//! The host's figures are means over the run (histograms keep sums and counts), warm-up
//! included; the end-to-end figures are percentiles after the first second.

use std::time::{Duration, Instant};

use anyhow::Context;

use super::cpu_split::CpuMark;
use super::env::{ConfigBuilder, Host};
use super::load::{self, LatencyReceiver, Shape};
use super::{Bench, Row};

impl Bench {
    pub(super) async fn latency(&mut self) -> anyhow::Result<()> {
        let receiver = LatencyReceiver::default();
        let url = receiver.start().await?;
        let db = self.pg.fresh_db("latency").await?;
        let config = ConfigBuilder::new(&self.plugins).destination(
            "dest",
            "webhook",
            &format!("{{ url = \"{url}\", secret = \"whsec_YmVuY2g=\" }}"),
        );
        let host = Host::start(&self.host_dir("latency"), &config.text(), &db)?;
        let shape = Shape {
            users: 200,
            pad: 900,
            batch: 100,
        };
        let duration = Duration::from_secs(self.sized(20, 8));
        let postmaster = self.pg.postmaster_pid();
        let before = CpuMark::now(host.pid(), postmaster);
        let sent = load::steady(
            &host.url("/v1/batch"),
            "wk_0",
            shape,
            Duration::from_millis(100),
            duration,
            "lat",
        )
        .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while (receiver.count() as u64) < sent.events && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let used = before.until(&CpuMark::now(host.pid(), postmaster));
        // The first second warms up connections and plugin instances.
        let (p50, p99) = receiver.percentiles(1000).context("nothing arrived")?;
        self.rows.push(Row {
            scenario: "latency at 1,000 events/s, client send → receiver: p50".into(),
            sluice: format!("{:.1} ms", ms(p50)),
            peer: String::new(),
            ratio: None,
            target: "< 5 ms".into(),
            met: Some(ms(p50) < 5.0),
        });
        self.rows.push(Row {
            scenario: "latency: p99".into(),
            sluice: format!("{:.1} ms", ms(p99)),
            peer: format!("{} of {} events arrived", receiver.count(), sent.events),
            ratio: None,
            target: "< 20 ms".into(),
            met: Some(ms(p99) < 20.0),
        });

        let page = reqwest::get(host.url("/metrics"))
            .await?
            .error_for_status()?
            .text()
            .await?;
        let mut acks = sent.acks;
        acks.sort();
        let ack_p50 = acks.get(acks.len() / 2).copied().unwrap_or_default();
        let ack_mean = acks.iter().sum::<Duration>() / (acks.len().max(1) as u32);
        let steps = [
            (
                "latency budget: ingest request, send → answer (client)",
                format!("{:.1} ms mean, p50 {:.1} ms", ms(ack_mean), ms(ack_p50)),
            ),
            (
                "latency budget: … of which group commit (writer wait + transaction)",
                mean_of(&page, "sluice_ingest_commit_seconds"),
            ),
            (
                "latency budget: arrival → its plugin call starts (commit, wake-up, read)",
                mean_of(&page, "sluice_delivery_wait_seconds"),
            ),
            (
                "latency budget: plugin call (transform + send)",
                mean_of(&page, "sluice_plugin_call_seconds"),
            ),
            (
                "latency budget: … of which the HTTP request to the receiver",
                mean_of(&page, "sluice_http_request_seconds"),
            ),
            (
                // The cores are mostly idle at this pace: each step starts on a cold CPU.
                "latency: CPU over the run (the load generator includes the receiver)",
                used.per_sluice_event(sent.events as f64),
            ),
        ];
        for (step, figure) in steps {
            self.rows.push(Row {
                scenario: step.into(),
                sluice: figure,
                peer: String::new(),
                ratio: None,
                target: String::new(),
                met: None,
            });
        }
        drop(host);
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `name`'s mean over all its label sets on a Prometheus page, as `"1.2 ms mean (n calls)"`.
fn mean_of(page: &str, name: &str) -> String {
    let total = |suffix: &str| -> f64 {
        let series = format!("{name}_{suffix}");
        page.lines()
            .filter(|l| {
                l.strip_prefix(&series)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (sum, count) = (total("sum"), total("count"));
    if count == 0.0 {
        return "not recorded".into();
    }
    format!("{:.2} ms mean ({count:.0} recorded)", sum / count * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_add_up_every_label_set_and_skip_other_series() {
        let page = "# TYPE x_seconds summary\n\
                    x_seconds_sum{destination=\"a\"} 0.3\n\
                    x_seconds_count{destination=\"a\"} 100\n\
                    x_seconds_sum{destination=\"b\"} 0.1\n\
                    x_seconds_count{destination=\"b\"} 100\n\
                    x_seconds_other_sum 50\n\
                    y_seconds_sum 9\n";
        assert_eq!(mean_of(page, "x_seconds"), "2.00 ms mean (200 recorded)");
        assert_eq!(mean_of(page, "z_seconds"), "not recorded");
    }
}
