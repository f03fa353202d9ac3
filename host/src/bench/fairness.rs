//! The scenarios of hostile load and fairness: ingest next to slow clients, a flooded lane
//! next to trickling ones, and two hosts sharing the lanes.

use std::time::{Duration, Instant};

use super::env::{ConfigBuilder, Host, wait_drained};
use super::load::{self, Shape};
use super::trickle::Trickle;
use super::{Bench, Row, short, thousands};

impl Bench {
    /// Ingest while 1,000 slow clients hold connections open (a byte of head a second).
    pub(super) async fn slow_clients(&mut self) -> anyhow::Result<()> {
        let total = self.sized(300_000, 60_000);
        let shape = Shape::STANDARD;
        let config = ConfigBuilder::new(&self.empty_plugins).destination("noop", "devnull", "{}");
        let baseline = match self.ingest_rate {
            Some(r) => r,
            None => {
                let db = self.pg.fresh_db("slowbase").await?;
                let host = Host::start(&self.host_dir("slowbase"), &config.text(), &db)?;
                load::ingest(&host.url("/v1/batch"), "wk_0", total, shape, 8, "slowbase")
                    .await?
                    .rate()
            }
        };
        let db = self.pg.fresh_db("slowclients").await?;
        let host = Host::start(&self.host_dir("slowclients"), &config.text(), &db)?;
        let stop = tokio_util::sync::CancellationToken::new();
        load::slow_clients(&host.addr, 1000, stop.clone());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let r = load::ingest(
            &host.url("/v1/batch"),
            "wk_0",
            total,
            shape,
            8,
            "slowclients",
        )
        .await;
        stop.cancel();
        let r = r?;
        self.rows.push(Row::ratio(
            "ingest while 1,000 slow clients hold connections",
            r.rate(),
            "events/s",
            "ingest without them",
            baseline,
            0.8,
        ));
        Ok(())
    }

    /// One lane drains a big backlog while 100 other lanes get a trickle: the trickle's wait.
    pub(super) async fn flood(&mut self) -> anyhow::Result<()> {
        let flood = self.sized(1_000_000, 200_000);
        let trickle = Trickle::start().await?;
        let mut config = trickle.add_to(
            ConfigBuilder::new(&self.empty_plugins)
                .route("flood", "wk_flood", &["flood".to_string()])
                .destination("flood", "devnull", "{}"),
        );
        let db = self.pg.fresh_db("flood").await?;
        let shape = Shape::STANDARD;
        {
            let filler = Host::start(&self.host_dir("flood-fill"), &config.text(), &db)?;
            load::ingest(
                &filler.url("/v1/batch"),
                "wk_flood",
                flood,
                shape,
                8,
                "flood",
            )
            .await?;
        }
        config.plugins_dir = self.plugins.clone();
        let host = Host::start(&self.host_dir("flood"), &config.text(), &db)?;
        // Two events a second to each of the 100 trickle lanes while the flood drains.
        let expected = trickle
            .run(&host.url("/v1/batch"), self.sized(20, 10))
            .await?;
        self.rows.push(trickle.row(
            format!(
                "flooded lane ({} backlog draining) beside 100 trickle lanes: trickle p99",
                short(flood)
            ),
            expected,
        )?);
        drop(host);
        Ok(())
    }

    /// Four destinations drained by one host, then by two hosts sharing the store.
    pub(super) async fn two_hosts(&mut self) -> anyhow::Result<()> {
        let n = self.sized(250_000, 50_000);
        let mut rates = Vec::new();
        for hosts in [1usize, 2] {
            let mut config = ConfigBuilder::new(&self.empty_plugins);
            for d in 0..4 {
                config = config.destination(&format!("d{d}"), "devnull", "{}");
            }
            let db = self.pg.fresh_db(&format!("hosts{hosts}")).await?;
            let shape = Shape::STANDARD;
            {
                let filler = Host::start(
                    &self.host_dir(&format!("hosts{hosts}-fill")),
                    &config.text(),
                    &db,
                )?;
                load::ingest(&filler.url("/v1/batch"), "wk_0", n, shape, 8, "hosts").await?;
            }
            config.plugins_dir = self.plugins.clone();
            let started = Instant::now();
            let running: Vec<Host> = (0..hosts)
                .map(|h| {
                    Host::start(
                        &self.host_dir(&format!("hosts{hosts}-{h}")),
                        &config.text(),
                        &db,
                    )
                })
                .collect::<anyhow::Result<_>>()?;
            let done = wait_drained(&db, Duration::from_secs(3600)).await?;
            let rate = (4 * n) as f64 / done.duration_since(started).as_secs_f64();
            let lanes: Vec<usize> = running
                .iter()
                .map(|h| h.count_log("lane acquired"))
                .collect();
            rates.push((rate, lanes));
        }
        let (one, _) = rates[0].clone();
        let (two, lanes) = rates[1].clone();
        self.rows.push(Row {
            scenario: format!(
                "4 destinations, {} jobs: two hosts against one",
                short(4 * n)
            ),
            sluice: format!("{} jobs/s with two", thousands(two)),
            peer: format!(
                "one host: {} jobs/s; lanes taken by each of the two: {lanes:?}",
                thousands(one)
            ),
            ratio: Some(two / one),
            target: "both hosts work".into(),
            met: Some(lanes.iter().all(|l| *l > 0)),
        });
        Ok(())
    }
}
