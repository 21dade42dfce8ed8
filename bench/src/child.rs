//! What the bench runs in child processes: the cold ramp (a fresh process per
//! contender, so resident memory is not polluted by the others), the
//! magazine-hit loop counted under valgrind, and the observability loop that
//! a tracer attaches to.
//!
//! Children speak one JSON line on stdout; the driver parses it.

use std::io::{BufRead, Write};
use std::time::Duration;

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
    /// The same repetitions in the thread's own CPU time
    /// (`CLOCK_THREAD_CPUTIME_ID`): what other processes on the CPU take
    /// from the wall time is not in it; what the kernel does for this thread
    /// (a uprobe's trap) is.
    pub cpu_samples: Vec<f64>,
    /// Times the measuring thread was preempted (`ru_nivcsw`) during the
    /// measured repetitions.
    pub preempted: u64,
    /// Where the churn loop's function starts, modulo 64 (its code alignment
    /// within a cache line; the two builds place it differently).
    pub loop_offset: u64,
    /// Text mapped with huge pages (`FilePmdMapped` of
    /// `/proc/self/smaps_rollup`, kB), after the repetitions.
    pub file_pmd_kb: u64,
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Involuntary context switches of this thread so far.
fn preemptions() -> u64 {
    // SAFETY: all zeroes is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    u64::try_from(ru.ru_nivcsw).unwrap_or(0)
}

/// `FilePmdMapped` of this process, in kB (0 when the kernel does not say).
fn file_pmd_kb() -> u64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("FilePmdMapped:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
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
    let ops = rounds * live as u64 * 2;
    let mut samples = Vec::with_capacity(reps);
    let mut cpu_samples = Vec::with_capacity(reps);
    let mut preempted = 0;
    for rep in 0..=reps {
        let (cpu0, pre0) = (thread_cpu(), preemptions());
        let d = churn(&cache, live, &order, rounds);
        let cpu = thread_cpu().saturating_sub(cpu0);
        if rep > 0 {
            samples.push(ns_per(d, ops));
            cpu_samples.push(ns_per(cpu, ops));
            preempted += preemptions() - pre0;
        }
    }
    let res = ObsResult {
        probes: cfg!(feature = "probes"),
        samples,
        cpu_samples,
        preempted,
        loop_offset: churn::<Slabscope> as *const () as u64 % 64,
        file_pmd_kb: file_pmd_kb(),
    };
    writeln!(out, "{}", serde_json::to_string(&res)?)?;
    Ok(())
}
