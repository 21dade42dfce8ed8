//! What the bench runs in child processes: the cold ramp (a fresh process per
//! contender, so resident memory is not polluted by the others), the
//! magazine-hit loop counted under valgrind, and the observability loop that
//! a tracer attaches to.
//!
//! Children speak one JSON line on stdout; the driver parses it.

use std::io::{BufRead, Write};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::contenders::{Baseline, Kind, build};
use crate::measure::{free_order, ns_per, pin_to};
use crate::slab::Slabscope;
use crate::workloads::{Runner, churn};

/// Workloads 3 and 4 for `kind`: print a [`crate::workloads::RampResult`].
pub fn ramp(kind: Kind, count: usize, size: usize, cpu: usize) -> Result<()> {
    pin_to(cpu)?;
    let r = build(kind, size)?;
    let res = r.ramp(count, size)?;
    println!("{}", serde_json::to_string(&res)?);
    Ok(())
}

/// The magazine-hit loop for instruction counting: three warm-up rounds,
/// then `rounds` rounds of `live` allocations and frees. The driver runs it
/// for R and 2R rounds and divides the difference. `kind` `None` runs the
/// harness alone ([`Baseline`]).
pub fn hit(kind: Option<Kind>, size: usize, live: usize, rounds: u64) -> Result<()> {
    let r: Box<dyn Runner> = match kind {
        Some(k) => build(k, size)?,
        None => Box::new(Baseline::new(size)),
    };
    let order = free_order(live, false);
    r.churn(live, &order, 3);
    r.churn(live, &order, rounds);
    Ok(())
}

/// What one observability child measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ObsResult {
    /// Whether this binary has slabscope's probe sites.
    pub probes: bool,
    /// ns/op of each repetition, the warm-up repetition left out.
    pub samples: Vec<f64>,
}

/// Workload 5: slabscope churn at 64 B, `live` live (1000 for workload 5),
/// LIFO, as in workload 1. Prints `ready <pid>`, waits for a line on stdin
/// (the driver attaches its tracer in between), then runs `reps + 1`
/// repetitions of `rounds` rounds and prints an [`ObsResult`].
pub fn obs(rounds: u64, reps: usize, cpu: usize, live: usize, nodebug: bool) -> Result<()> {
    pin_to(cpu)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {}", std::process::id())?;
    out.flush()?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("waiting for the driver's go")?;
    if line.trim() != "go" {
        bail!("expected `go` on stdin, got {line:?}");
    }
    // The cache is created after `go`, so a tracer attached in between sees
    // its creation and its first grows.
    let flags = if nodebug {
        slabscope::flags::KMC_NODEBUG
    } else {
        0
    };
    let cache = Slabscope::with_flags(64, flags)?;
    let order = free_order(live, false);
    let mut samples = Vec::with_capacity(reps);
    for rep in 0..=reps {
        let d = churn(&cache, live, &order, rounds);
        if rep > 0 {
            samples.push(ns_per(d, rounds * live as u64 * 2));
        }
    }
    let res = ObsResult {
        probes: cfg!(feature = "probes"),
        samples,
    };
    writeln!(out, "{}", serde_json::to_string(&res)?)?;
    Ok(())
}
