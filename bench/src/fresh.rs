//! Drivers of the workloads that need a process of their own: the cold ramp
//! (workloads 3 and 4, one fresh child per contender and run, interleaved)
//! and instruction counts under valgrind (workload 6).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::contenders::Kind;
use crate::measure::Summary;
use crate::workloads::RampResult;

/// Ramp results of one contender.
#[derive(Clone, Debug)]
pub struct RampRow {
    pub kind: Kind,
    /// ns per allocated object over the ramp.
    pub ns_per_obj: Summary,
    /// The run whose ramp time was the median (its memory figures are shown).
    pub median_run: RampResult,
}

/// Run `exe ramp` for every contender, `runs` times, interleaved.
pub fn ramp(
    exe: &Path,
    kinds: &[Kind],
    runs: usize,
    count: usize,
    cpu: usize,
    notes: &mut Vec<String>,
) -> Vec<RampRow> {
    let mut results: BTreeMap<Kind, Vec<RampResult>> = BTreeMap::new();
    for run in 0..runs {
        for j in 0..kinds.len() {
            let kind = kinds[(j + run) % kinds.len()];
            if kind == Kind::Pool && run > 0 {
                continue;
            }
            match ramp_once(exe, kind, ramp_count(kind, count), cpu) {
                Ok(r) => results.entry(kind).or_default().push(r),
                Err(e) => {
                    let note = format!("ramp, {}: {e:#}", kind.label());
                    if !notes.contains(&note) {
                        notes.push(note);
                    }
                }
            }
        }
    }
    eprintln!("  ramp to {count} objects: done");
    results
        .into_iter()
        .filter_map(|(kind, mut rs)| {
            let per: Vec<f64> = rs
                .iter()
                .map(|r| r.ramp_ns as f64 / r.count as f64)
                .collect();
            let ns_per_obj = Summary::of(&per)?;
            rs.sort_by_key(|r| r.ramp_ns);
            let median_run = rs.swap_remove(rs.len() / 2);
            Some(RampRow {
                kind,
                ns_per_obj,
                median_run,
            })
        })
        .collect()
}

/// Objects a contender ramps to. `lockfree-object-pool`'s linear pool scans
/// its whole list before it grows, so a cold ramp is quadratic (a million
/// objects take about a minute): it ramps to a tenth, once.
pub fn ramp_count(kind: Kind, count: usize) -> usize {
    if kind == Kind::Pool {
        count / 10
    } else {
        count
    }
}

fn ramp_once(exe: &Path, kind: Kind, count: usize, cpu: usize) -> Result<RampResult> {
    let out = Command::new(exe)
        .args(["ramp", "--alloc", kind.key(), "--count"])
        .arg(count.to_string())
        .args(["--size", "64", "--cpu"])
        .arg(cpu.to_string())
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    if !out.status.success() {
        bail!(
            "the ramp child failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .last()
        .context("the ramp child printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("parsing the ramp child's output {line:?}"))
}

/// Instructions per operation for one configuration.
#[derive(Clone, Debug)]
pub struct InstrRow {
    pub size: usize,
    pub live: usize,
    pub cells: BTreeMap<Kind, f64>,
    /// What the harness alone executes per operation (included in every cell).
    pub harness: Option<f64>,
}

/// Whether valgrind can be run.
pub fn valgrind_available() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Total instructions of `exe hit ...` under cachegrind without cache simulation.
fn instructions(
    exe: &Path,
    kind: Option<Kind>,
    size: usize,
    live: usize,
    rounds: u64,
) -> Result<u64> {
    let out = Command::new("valgrind")
        .args([
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
        ])
        .arg(exe)
        .args([
            "hit",
            "--alloc",
            kind.map_or("harness", Kind::key),
            "--size",
        ])
        .arg(size.to_string())
        .arg("--live")
        .arg(live.to_string())
        .arg("--rounds")
        .arg(rounds.to_string())
        .output()
        .context("running valgrind (Debian package valgrind)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("valgrind failed ({}): {}", out.status, stderr.trim());
    }
    parse_irefs(&stderr)
        .with_context(|| format!("no `I refs:` line in valgrind's output: {stderr}"))
}

/// The total of cachegrind's `==pid== I   refs:      1,234,567` line.
pub fn parse_irefs(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .filter_map(|l| {
            l.split_once("I   refs:")
                .or_else(|| l.split_once("I refs:"))
        })
        .filter_map(|(_, n)| n.trim().replace(',', "").parse().ok())
        .next_back()
}

/// Instructions per op: run R and 2R rounds and divide the difference by the
/// operations the extra R rounds did, cancelling start-up and warm-up.
pub fn instr_per_op(
    exe: &Path,
    kind: Option<Kind>,
    size: usize,
    live: usize,
    rounds: u64,
) -> Result<f64> {
    let a = instructions(exe, kind, size, live, rounds)?;
    let b = instructions(exe, kind, size, live, 2 * rounds)?;
    let ops = rounds * live as u64 * 2;
    Ok(b.saturating_sub(a) as f64 / ops as f64)
}

/// Workload 6 for each (size, live) in `configs`.
pub fn instr(
    exe: &Path,
    kinds: &[Kind],
    configs: &[(usize, usize)],
    ops: u64,
    notes: &mut Vec<String>,
) -> Vec<InstrRow> {
    let mut rows = Vec::new();
    for &(size, live) in configs {
        let rounds = (ops / (2 * live as u64)).max(1);
        let mut cells = BTreeMap::new();
        for &k in kinds {
            match instr_per_op(exe, Some(k), size, live, rounds) {
                Ok(v) => {
                    cells.insert(k, v);
                }
                Err(e) => notes.push(format!("instructions, {}, {size} B: {e:#}", k.label())),
            }
        }
        let harness = instr_per_op(exe, None, size, live, rounds)
            .map_err(|e| notes.push(format!("instructions, harness: {e:#}")))
            .ok();
        eprintln!("  instructions {size} B, {live} live: done");
        rows.push(InstrRow {
            size,
            live,
            cells,
            harness,
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cachegrind_totals() {
        let s = "==19905== \n==19905== I   refs:      129,911\n";
        assert_eq!(parse_irefs(s), Some(129_911));
        assert_eq!(parse_irefs("==1== I refs: 42"), Some(42));
        assert_eq!(parse_irefs("no totals here"), None);
    }
}
