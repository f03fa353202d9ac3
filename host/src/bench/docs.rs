//! `sluice bench --update FILE`: writes the run's table into the documents that quote it, so
//! that every figure in them comes from one run, with its date, and nothing else sits in the
//! table.
//!
//! A document marks each generated block:
//!
//! ```text
//! <!-- sluice-bench:begin -->                      the whole table (a run of every scenario)
//! <!-- sluice-bench:begin scenarios=ingest,two-hosts -->   only those scenarios' rows
//! …replaced…
//! <!-- sluice-bench:end -->
//! ```
//!
//! A block is replaced only when this run measured everything it shows (every scenario for
//! the whole table); otherwise it is left as it was and the run says so, so that a partial run
//! never mixes its figures into an older run's table.

use std::path::Path;

use anyhow::{Context, bail};

use super::table::{Row, render_rows};

const BEGIN: &str = "<!-- sluice-bench:begin";
const END: &str = "<!-- sluice-bench:end -->";

/// What a run measured: each row with the scenario that produced it.
pub(super) struct Run<'a> {
    /// `sluice bench …`, the date, the machine and the duration: the line above each table.
    pub(super) header: String,
    pub(super) rows: &'a [Row],
    /// The scenario of each row (same length as `rows`).
    pub(super) scenarios: &'a [&'static str],
    /// Whether every scenario ran (the whole table may be written).
    pub(super) complete: bool,
}

/// Rewrites the generated blocks of `path` with `run`; returns how many were replaced.
pub(super) fn update(path: &Path, run: &Run<'_>) -> anyhow::Result<usize> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (updated, replaced) =
        rewrite(&text, run).with_context(|| format!("in {}", path.display()))?;
    if replaced > 0 {
        std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(replaced)
}

/// `text` with each block whose figures this run measured replaced.
fn rewrite(text: &str, run: &Run<'_>) -> anyhow::Result<(String, usize)> {
    let mut out = String::with_capacity(text.len());
    let mut replaced = 0;
    let mut lines = text.split_inclusive('\n').enumerate();
    let mut blocks = 0;
    while let Some((n, line)) = lines.next() {
        out.push_str(line);
        let Some(spec) = line.trim().strip_prefix(BEGIN) else {
            continue;
        };
        blocks += 1;
        let wanted =
            parse_spec(spec).with_context(|| format!("line {}: `{}`", n + 1, line.trim()))?;
        let mut old = String::new();
        let mut closed = false;
        for (_, inner) in lines.by_ref() {
            if inner.trim() == END {
                closed = true;
                match block(run, wanted.as_deref()) {
                    Some(new) => {
                        out.push_str(&new);
                        replaced += 1;
                    }
                    None => {
                        eprintln!(
                            "bench: line {}: this run did not measure every scenario the block shows; left as it was",
                            n + 1
                        );
                        out.push_str(&old);
                    }
                }
                out.push_str(inner);
                break;
            }
            old.push_str(inner);
        }
        if !closed {
            bail!("line {}: `{BEGIN} …` has no `{END}`", n + 1);
        }
    }
    if blocks == 0 {
        bail!("no `{BEGIN} -->` marker: nothing to update");
    }
    Ok((out, replaced))
}

/// `None` for the whole table, else the scenarios named by ` scenarios=a,b -->`.
fn parse_spec(spec: &str) -> anyhow::Result<Option<Vec<String>>> {
    let spec = spec
        .trim()
        .strip_suffix("-->")
        .context("the marker does not end with `-->`")?
        .trim();
    if spec.is_empty() {
        return Ok(None);
    }
    let list = spec
        .strip_prefix("scenarios=")
        .context("expected `scenarios=NAME,NAME` or nothing")?;
    let names: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
    for name in &names {
        if !super::SCENARIOS.contains(&name.as_str()) {
            bail!(
                "unknown scenario `{name}` (known: {})",
                super::SCENARIOS.join(", ")
            );
        }
    }
    Ok(Some(names))
}

/// The block's new text, or `None` when this run did not measure all it shows.
fn block(run: &Run<'_>, wanted: Option<&[String]>) -> Option<String> {
    let rows: Vec<&Row> = match wanted {
        None if run.complete => run.rows.iter().collect(),
        None => return None,
        Some(names) => {
            if !names.iter().all(|n| run.scenarios.contains(&n.as_str())) {
                return None;
            }
            run.rows
                .iter()
                .zip(run.scenarios)
                .filter(|(_, s)| names.iter().any(|n| n == *s))
                .map(|(r, _)| r)
                .collect()
        }
    };
    Some(format!("{}\n\n{}", run.header, render_rows(&rows)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str) -> Row {
        Row {
            scenario: name.into(),
            sluice: "1".into(),
            peer: String::new(),
            ratio: None,
            target: String::new(),
            met: None,
        }
    }

    #[test]
    fn blocks_are_replaced_only_with_what_the_run_measured() {
        let rows = [row("a row"), row("b row")];
        let run = Run {
            header: "HEADER".into(),
            rows: &rows,
            scenarios: &["ingest", "webhook"],
            complete: false,
        };
        let doc = "intro\n<!-- sluice-bench:begin scenarios=webhook -->\nold\n<!-- sluice-bench:end -->\nmid\n<!-- sluice-bench:begin -->\nold whole\n<!-- sluice-bench:end -->\n<!-- sluice-bench:begin scenarios=fanout -->\nold fanout\n<!-- sluice-bench:end -->\n";
        let (out, replaced) = rewrite(doc, &run).expect("rewritten");
        assert_eq!(replaced, 1);
        assert_eq!(
            out,
            "intro\n<!-- sluice-bench:begin scenarios=webhook -->\nHEADER\n\n| scenario | Sluice | peer or limit, same run | ratio | target | met |\n|---|---|---|---|---|---|\n| b row | 1 |  |  |  |  |\n<!-- sluice-bench:end -->\nmid\n<!-- sluice-bench:begin -->\nold whole\n<!-- sluice-bench:end -->\n<!-- sluice-bench:begin scenarios=fanout -->\nold fanout\n<!-- sluice-bench:end -->\n"
        );

        let complete = Run {
            complete: true,
            ..run
        };
        let (out, replaced) = rewrite(doc, &complete).expect("rewritten");
        assert_eq!(replaced, 2);
        assert!(out.contains("| a row | 1 |"), "{out}");
    }

    #[test]
    fn bad_markers_are_named_with_their_line() {
        let run = Run {
            header: String::new(),
            rows: &[],
            scenarios: &[],
            complete: true,
        };
        let err = rewrite(
            "x\n<!-- sluice-bench:begin scenarios=nope -->\n<!-- sluice-bench:end -->\n",
            &run,
        )
        .expect_err("unknown scenario");
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        assert!(
            format!("{err:#}").contains("unknown scenario `nope`"),
            "{err:#}"
        );
        let err =
            rewrite("<!-- sluice-bench:begin -->\nnever closed\n", &run).expect_err("unclosed");
        assert!(format!("{err:#}").contains("has no"), "{err:#}");
        let err = rewrite("no markers\n", &run).expect_err("no markers");
        assert!(format!("{err:#}").contains("nothing to update"), "{err:#}");
    }
}
