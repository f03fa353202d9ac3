//! The table `sluice bench` prints: one row per measurement, with the peer or limit measured
//! in the same run, the ratio and the target.

use std::time::Duration;

/// One line of the table.
pub(super) struct Row {
    pub(super) scenario: String,
    pub(super) sluice: String,
    pub(super) peer: String,
    pub(super) ratio: Option<f64>,
    pub(super) target: String,
    pub(super) met: Option<bool>,
}

impl Row {
    pub(super) fn ratio(
        scenario: &str,
        sluice: f64,
        unit: &str,
        peer_name: &str,
        peer: f64,
        target: f64,
    ) -> Row {
        let ratio = sluice / peer.max(1e-9);
        Row {
            scenario: scenario.into(),
            sluice: format!("{} {unit}", thousands(sluice)),
            peer: format!("{peer_name}: {} {unit}", thousands(peer)),
            ratio: Some(ratio),
            target: format!("≥ {target}×"),
            met: Some(ratio >= target),
        }
    }

    /// A ratio reported without a target (what the issue asks to measure, not to reach).
    pub(super) fn report(
        scenario: &str,
        sluice: f64,
        unit: &str,
        peer_name: &str,
        peer: f64,
    ) -> Row {
        Row::report_text(
            scenario,
            format!("{} {unit}", thousands(sluice)),
            format!("{peer_name}: {} {unit}", thousands(peer)),
            sluice / peer.max(1e-9),
        )
    }

    pub(super) fn report_text(scenario: &str, sluice: String, peer: String, ratio: f64) -> Row {
        Row {
            scenario: scenario.into(),
            sluice,
            peer,
            ratio: Some(ratio),
            target: "reported".into(),
            met: None,
        }
    }

    /// Adds the host's CPU per delivered `unit` to the Sluice column.
    pub(super) fn with_host_cpu(mut self, us: f64, unit: &str) -> Row {
        self.sluice = format!("{} (host CPU {us:.1} µs/{unit})", self.sluice);
        self
    }

    /// Adds a remark to the Sluice column (after its figure and any CPU split).
    pub(super) fn with_note(mut self, note: &str) -> Row {
        self.sluice = format!("{}; {note}", self.sluice);
        self
    }

    /// The host's CPU and PostgreSQL's per unit: whether depth costs the store or the host.
    pub(super) fn with_cpu(mut self, host_us: f64, db_us: f64, unit: &str) -> Row {
        self.sluice = format!(
            "{} (CPU per {unit}: host {host_us:.1} µs, PostgreSQL {db_us:.1} µs)",
            self.sluice
        );
        self
    }

    pub(super) fn failed(scenario: &str, e: &anyhow::Error) -> Row {
        Row {
            scenario: scenario.into(),
            sluice: format!("error: {e:#}"),
            peer: String::new(),
            ratio: None,
            target: String::new(),
            met: Some(false),
        }
    }
}

pub(super) fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

pub(super) fn short(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n.is_multiple_of(1_000_000) => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n.is_multiple_of(1_000) => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// The line above a run's table: when, where, how long.
pub(super) fn header(took: Duration) -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    format!(
        "{date} — {cores} cores ({model}), Sluice and PostgreSQL on the same machine; took {:.0}s",
        took.as_secs_f64()
    )
}

/// The rows as a Markdown table, ending with a newline.
pub(super) fn render_rows(rows: &[&Row]) -> String {
    let mut out = String::from(
        "| scenario | Sluice | peer or limit, same run | ratio | target | met |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let ratio = r.ratio.map(|x| format!("{x:.2}")).unwrap_or_default();
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {ratio} | {} | {met} |\n",
            r.scenario, r.sluice, r.peer, r.target
        ));
    }
    out
}
