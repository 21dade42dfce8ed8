//! Workload 5: what being observable costs. The same slabscope churn (64 B,
//! 1000 live, LIFO) runs in child processes of five kinds, interleaved
//! (the same runner measures the magazine fast path's variants, which are
//! per process too):
//!
//! 1. the bench built without slabscope's `probes` feature (sites compiled
//!    out);
//! 2. the bench built with them, nothing attached;
//! 3. the control: the same build as 2 from a second file, nothing
//!    attached. Two files of one build differ only in where the kernel put
//!    their pages and in when their children ran, so 3 against 2 is the
//!    noise of this run, the yardstick for 2 against 1;
//! 4. the build with probes, the slabscope collector attached (the
//!    inspector's `--json` view);
//! 5. the build with probes, a bpftrace one-liner attached.
//!
//! Each child prints `ready <pid>`; the driver attaches the tracer, waits
//! until it reports that it is attached, says `go`, and reads the child's
//! figures: wall-clock and thread-CPU ns/op per repetition, how often it was
//! preempted, and where its churn loop sits in a cache line. The modes are
//! compared on CPU time, which other processes on the CPU do not inflate;
//! on the shared 2-vCPU machine they took half the wall time of some
//! children. A mode that cannot run here is reported as not measured, with
//! why.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::child::ObsResult;
use crate::measure::Summary;

/// The bpftrace one-liner of mode 4.
pub const BPFTRACE_SCRIPT: &str = "usdt:*:slabscope:grow_start { @[str(arg1)] = count(); }";

/// Every child, in every mode, publishes its caches' counters this often (the
/// `cache_stats` probe), as a program meant to be watched by the inspector does:
/// without it the inspector sees a cache only when it grows or reaps.
pub const STATS_ENV: &str = "SLABSCOPE_STATS_INTERVAL_MS";
pub const STATS_INTERVAL_MS: &str = "1000";

/// The label of workload 5's control: the build with probes again, from a
/// second file, untraced.
pub const CONTROL: &str = "control: probes compiled in, untraced, a second copy";

/// A tracer to attach.
#[derive(Clone, Debug)]
pub enum Tracer {
    /// `bpftrace -p PID -e BPFTRACE_SCRIPT`.
    Bpftrace,
    /// The slabscope inspector: `<bin> --pid PID <args...>`.
    Collector { bin: PathBuf, args: Vec<String> },
}

/// One way of running the workload.
#[derive(Clone, Debug)]
pub struct Mode {
    pub label: &'static str,
    /// The bench binary to run, or why this mode is not measured.
    pub binary: Result<PathBuf, String>,
    pub tracer: Option<Tracer>,
    /// Extra environment of the child (e.g. `SLABSCOPE_MAGAZINE_RSEQ`).
    pub env: Vec<(&'static str, &'static str)>,
    /// The child's cache has `KMC_NODEBUG`.
    pub nodebug: bool,
}

/// What a mode measured.
#[derive(Clone, Debug)]
pub struct ObsRow {
    pub label: &'static str,
    /// Wall-clock ns/op: what the program sees, including the time other
    /// processes took the CPU from it (on a shared machine, most of the
    /// spread).
    pub result: Result<Summary, String>,
    /// The same repetitions in the measuring thread's CPU time: what the
    /// code itself costs, a uprobe's trap included. The figure the modes
    /// are compared on.
    pub cpu: Option<Summary>,
    /// How often the measuring threads were preempted in all.
    pub preempted: u64,
    /// Where the churn loop's function starts within its cache line, in
    /// every child of this mode (one value unless the mode ran binaries
    /// of different builds).
    pub loop_offsets: Vec<u64>,
    /// Each run's child of this mode: its CPU-time median (`None` where it
    /// did not run), for comparisons run by run ([`ObsRow::vs`]).
    pub per_run: Vec<Option<f64>>,
    /// A word from the tracer, e.g. what the bpftrace map held at the end.
    pub evidence: Option<String>,
}

/// One mode against another, run by run ([`ObsRow::vs`]), in percent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Paired {
    /// The median of the runs' differences.
    pub median: f64,
    /// The low end of an interval of order statistics of the runs'
    /// differences that holds the true median with probability `coverage`
    /// (distribution-free: the number of runs below the median is binomial).
    pub low: f64,
    /// Its high end.
    pub high: f64,
    /// The probability that the interval holds the median (0 for one run).
    pub coverage: f64,
    /// How many runs both modes ran in.
    pub runs: usize,
}

/// `P(B <= k)` for `B ~ Binomial(n, 1/2)`.
fn binomial_half_cdf(n: usize, k: usize) -> f64 {
    let mut term = 0.5f64.powi(i32::try_from(n).unwrap_or(i32::MAX));
    let mut sum = term;
    for i in 1..=k.min(n) {
        // C(n, i) = C(n, i - 1) * (n - i + 1) / i
        term *= (n - i + 1) as f64 / i as f64;
        sum += term;
    }
    sum
}

impl Paired {
    /// The median of `diffs` and the narrowest symmetric interval of order
    /// statistics that covers the median with at least 90 % probability
    /// (all of them when there are too few runs for that).
    pub fn of(diffs: &[f64]) -> Option<Paired> {
        let median = Summary::of(diffs)?.median;
        let mut v = diffs.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        // The interval [v[k-1], v[n-k]] misses the median when k or fewer
        // of the n runs fall on one side: probability 2 P(B <= k-1).
        let mut k = 1;
        while k < n.div_ceil(2) && 1.0 - 2.0 * binomial_half_cdf(n, k) >= 0.9 {
            k += 1;
        }
        let coverage = 1.0 - 2.0 * binomial_half_cdf(n, k - 1);
        Some(Paired {
            median,
            low: v[k - 1],
            high: v[n - k],
            coverage: coverage.max(0.0),
            runs: n,
        })
    }
}

impl ObsRow {
    /// How much slower than `base` this mode ran, run by run: each run's
    /// child's CPU-time median over that run's `base` child's, in percent,
    /// over the runs in which both ran. The children of one run follow each
    /// other within seconds, so what slows a whole stretch of the session
    /// (on the shared machine, CPU time itself swung between 1.6 and 2.4
    /// ns/op for tens of seconds at a time) divides out; pooled medians keep
    /// it, weighted by how many of each mode's children it happened to catch.
    pub fn vs(&self, base: &ObsRow) -> Option<Paired> {
        if self.result.is_err() || base.result.is_err() {
            return None;
        }
        let diffs: Vec<f64> = self
            .per_run
            .iter()
            .zip(&base.per_run)
            .filter_map(|(a, b)| Some(100.0 * (a.as_ref()? / b.as_ref()? - 1.0)))
            .collect();
        Paired::of(&diffs)
    }
}

/// The order of the modes in run `run` of `n` modes: rotated by one each
/// run, and backwards every other run, so no mode always follows the same
/// other mode (a child that runs right after a traced one would otherwise
/// always meet the same tracer's exit).
pub fn run_order(run: usize, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).map(|j| (j + run) % n).collect();
    if run % 2 == 1 {
        order.reverse();
    }
    order
}

/// Run every mode `runs` times, interleaved; each child does `reps`
/// repetitions of `rounds` rounds of churn with `live` objects.
pub fn run(
    modes: &[Mode],
    runs: usize,
    rounds: u64,
    reps: usize,
    cpu: usize,
    live: usize,
) -> Vec<ObsRow> {
    let n = modes.len();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut cpu_samples: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut preempted = vec![0; n];
    let mut offsets: Vec<Vec<u64>> = vec![Vec::new(); n];
    let mut per_run: Vec<Vec<Option<f64>>> = vec![Vec::with_capacity(runs); n];
    let mut errors: Vec<Option<String>> = modes
        .iter()
        .map(|m| m.binary.as_ref().err().cloned())
        .collect();
    let mut evidence: Vec<Option<String>> = vec![None; n];
    for run in 0..runs {
        for v in &mut per_run {
            v.push(None);
        }
        for i in run_order(run, n) {
            if errors[i].is_some() {
                continue;
            }
            let Ok(bin) = &modes[i].binary else { continue };
            match run_once(&modes[i], bin, rounds, reps, cpu, live) {
                Ok((res, ev)) => {
                    samples[i].extend(res.samples);
                    if let Some(slot) = per_run[i].last_mut() {
                        *slot = Summary::of(&res.cpu_samples).map(|s| s.median);
                    }
                    cpu_samples[i].extend(res.cpu_samples);
                    preempted[i] += res.preempted;
                    if !offsets[i].contains(&res.loop_offset) {
                        offsets[i].push(res.loop_offset);
                    }
                    if ev.is_some() {
                        evidence[i] = ev;
                    }
                }
                Err(e) => errors[i] = Some(format!("{e:#}")),
            }
        }
    }
    eprintln!("  observability: done");
    modes
        .iter()
        .enumerate()
        .map(|(i, m)| ObsRow {
            label: m.label,
            result: match (&errors[i], Summary::of(&samples[i])) {
                (Some(e), _) => Err(e.clone()),
                (None, Some(s)) => Ok(s),
                (None, None) => Err("no samples".into()),
            },
            cpu: Summary::of(&cpu_samples[i]),
            preempted: preempted[i],
            loop_offsets: offsets[i].clone(),
            per_run: per_run[i].clone(),
            evidence: evidence[i].clone(),
        })
        .collect()
}

/// Kill `child` with `sig`, then wait for it, with SIGKILL after `grace`.
fn stop(child: &mut Child, sig: i32, grace: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill has no memory-safety preconditions; pid is our child.
        unsafe { libc::kill(pid, sig) };
    }
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Lines of a child's pipe, read on a thread of their own.
fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

struct Attached {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    what: String,
}

/// Start `tracer` on `pid` and wait until it is attached.
fn attach(tracer: &Tracer, pid: u32) -> Result<Attached> {
    let (mut cmd, what) = match tracer {
        Tracer::Bpftrace => {
            let mut c = Command::new("bpftrace");
            c.args(["-p", &pid.to_string(), "-e", BPFTRACE_SCRIPT]);
            (c, "bpftrace".to_string())
        }
        Tracer::Collector { bin, args } => {
            let mut c = Command::new(bin);
            c.args(["--pid", &pid.to_string()]).args(args);
            // Only the file name: the report must not name this machine's paths.
            let name = bin
                .file_name()
                .map_or("inspector".into(), |n| n.to_string_lossy());
            (c, format!("{name} --pid {pid} {}", args.join(" ")))
        }
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let out = lines(child.stdout.take().context("tracer stdout")?);
    let err = lines(child.stderr.take().context("tracer stderr")?);
    let mut a = Attached {
        child,
        out,
        err,
        what,
    };
    // bpftrace says "Attaching N probes..." once its probes are in place; the
    // collector prints its first update once attached. Either way the first
    // line on stdout is the sign.
    match a.out.recv_timeout(Duration::from_secs(30)) {
        Ok(_) => {
            std::thread::sleep(Duration::from_millis(300));
            Ok(a)
        }
        Err(_) => {
            let exited = a.child.try_wait().ok().flatten();
            stop(&mut a.child, libc::SIGKILL, Duration::from_secs(1));
            let mut err = Vec::new();
            while let Ok(l) = a.err.recv_timeout(Duration::from_secs(1)) {
                err.push(l);
            }
            match exited {
                Some(status) => bail!(
                    "{} exited ({status}) before printing anything: {}",
                    a.what,
                    err.join(" | ")
                ),
                None => bail!(
                    "{} printed nothing within 30 s: {}",
                    a.what,
                    err.join(" | ")
                ),
            }
        }
    }
}

/// Stop the tracer and sum up what it printed.
fn detach(mut a: Attached) -> String {
    stop(&mut a.child, libc::SIGINT, Duration::from_secs(10));
    // The reader thread ends, and the channel disconnects, when the tracer's
    // stdout closes.
    let mut out = Vec::new();
    while let Ok(l) = a.out.recv_timeout(Duration::from_secs(5)) {
        if !l.trim().is_empty() {
            out.push(l);
        }
    }
    match out.last() {
        Some(last) if last.trim_start().starts_with('{') => {
            match serde_json::from_str::<serde_json::Value>(last) {
                Ok(v) => format!(
                    "{}: {} JSON lines; last: {} events received, {} lost",
                    a.what,
                    out.len(),
                    v["events_total"],
                    v["lost_events"]
                ),
                Err(_) => format!("{}: {} lines", a.what, out.len()),
            }
        }
        Some(last) => format!("{}: {} lines, last: {}", a.what, out.len(), last.trim()),
        None => format!("{}: printed nothing more", a.what),
    }
}

fn run_once(
    mode: &Mode,
    bin: &Path,
    rounds: u64,
    reps: usize,
    cpu: usize,
    live: usize,
) -> Result<(ObsResult, Option<String>)> {
    let tracer = mode.tracer.as_ref();
    let mut cmd = Command::new(bin);
    cmd.env(STATS_ENV, STATS_INTERVAL_MS)
        .envs(mode.env.iter().copied())
        .args(["obs-child", "--rounds", &rounds.to_string()])
        .args(["--reps", &reps.to_string(), "--cpu", &cpu.to_string()])
        .args(["--live", &live.to_string()]);
    if mode.nodebug {
        cmd.arg("--nodebug");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting the bench child {}", bin.display()))?;
    let out = lines(child.stdout.take().context("child stdout")?);
    let ready = out
        .recv_timeout(Duration::from_secs(30))
        .context("the obs child never said ready")?;
    if !ready.starts_with("ready ") {
        stop(&mut child, libc::SIGKILL, Duration::from_secs(1));
        bail!("the obs child said {ready:?} instead of ready");
    }
    let t0 = std::time::Instant::now();
    let attached = match tracer.map(|t| attach(t, child.id())).transpose() {
        Ok(a) => a,
        Err(e) => {
            stop(&mut child, libc::SIGKILL, Duration::from_secs(1));
            return Err(e);
        }
    };
    let mut stdin = child.stdin.take().context("child stdin")?;
    writeln!(stdin, "go").context("telling the obs child to go")?;
    let t1 = std::time::Instant::now();
    let line = out.recv_timeout(Duration::from_mins(10));
    let t2 = std::time::Instant::now();
    let traced = attached.is_some();
    let evidence = attached.map(detach);
    let _ = child.wait();
    if traced {
        // A tracer's exit leaves the kernel work to do (its BPF programs and
        // buffers are freed after it is gone); a precaution, so that the next
        // child does not start measuring while it happens.
        std::thread::sleep(Duration::from_millis(250));
    }
    let line = line.context("the obs child printed no result")?;
    let res: ObsResult = serde_json::from_str(&line)
        .with_context(|| format!("parsing the obs child's output {line:?}"))?;
    let median = |xs: &[f64]| Summary::of(xs).map_or(f64::NAN, |s| s.median);
    eprintln!(
        "    obs child ({}): attach {:.1} s, run {:.1} s, detach {:.1} s; \
         {:.2} ns/op wall, {:.2} cpu, preempted {}, loop at +{} in its line, {} kB huge text",
        mode.label,
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        t2.elapsed().as_secs_f64(),
        median(&res.samples),
        median(&res.cpu_samples),
        res.preempted,
        res.loop_offset,
        res.file_pmd_kb,
    );
    Ok((res, evidence))
}

#[cfg(test)]
mod tests {
    use super::{ObsRow, Paired, binomial_half_cdf, run_order};
    use crate::measure::Summary;

    fn row(per_run: &[Option<f64>]) -> ObsRow {
        let all: Vec<f64> = per_run.iter().flatten().copied().collect();
        ObsRow {
            label: "test",
            result: Summary::of(&all).ok_or_else(|| "no samples".to_string()),
            cpu: Summary::of(&all),
            preempted: 0,
            loop_offsets: vec![0],
            per_run: per_run.to_vec(),
            evidence: None,
        }
    }

    /// A slow stretch that catches more of one mode's children moves the
    /// pooled medians apart; run by run it divides out.
    #[test]
    fn vs_compares_run_by_run() {
        let base = row(&[Some(2.4), Some(2.4), Some(2.4), Some(1.6), Some(1.6)]);
        let same = row(&[Some(2.4), Some(2.4), Some(1.6), Some(1.6), Some(1.6)]);
        let pooled = 100.0 * (same.cpu.unwrap().median / base.cpu.unwrap().median - 1.0);
        assert!(pooled < -30.0, "the pooled medians read {pooled:.1} %");
        // Runs where one of the two did not run are left out.
        let slower = row(&[Some(2.64), None, Some(2.64), Some(1.76), Some(1.76)]);
        let v = slower.vs(&base).expect("four runs in common");
        assert_eq!(v.runs, 4);
        assert!(
            (v.median - 10.0).abs() < 1e-9 && (v.low - 10.0).abs() < 1e-9,
            "10 % slower in every run, got {v:?}"
        );
        let none = row(&[None, None, None, None, None]);
        assert_eq!(none.vs(&base), None, "no run in common, no comparison");
    }

    #[test]
    fn every_run_runs_every_mode_once() {
        for run in 0..7 {
            let mut o = run_order(run, 4);
            o.sort_unstable();
            assert_eq!(o, vec![0, 1, 2, 3], "run {run}");
        }
    }

    /// With a plain rotation, mode 0 always ran right after mode 3 (the
    /// bpftrace child, whose tracer had just exited) or first.
    #[test]
    fn no_mode_always_follows_the_same_one() {
        let n = 4;
        for mode in 0..n {
            let mut before = std::collections::BTreeSet::new();
            for run in 0..5 {
                let o = run_order(run, n);
                let at = o.iter().position(|&m| m == mode).expect("every mode runs");
                if at > 0 {
                    before.insert(o[at - 1]);
                }
            }
            assert!(
                before.len() >= 2,
                "mode {mode} follows only {before:?} in five runs"
            );
        }
    }

    #[test]
    fn binomial_tail() {
        assert!((binomial_half_cdf(10, 0) - 1.0 / 1024.0).abs() < 1e-12);
        assert!((binomial_half_cdf(10, 2) - 56.0 / 1024.0).abs() < 1e-12);
        assert!((binomial_half_cdf(4, 4) - 1.0).abs() < 1e-12);
    }

    /// Ten runs: the 3rd and 8th smallest bound the median with 89 %, the
    /// 2nd and 9th with 97.9 %: the interval is the latter, the narrowest
    /// with at least 90 %.
    #[test]
    fn paired_interval_of_order_statistics() {
        let diffs: Vec<f64> = (1..=10).map(f64::from).collect();
        let p = Paired::of(&diffs).expect("ten runs");
        assert_eq!((p.low, p.high, p.runs), (2.0, 9.0, 10), "{p:?}");
        assert!((p.coverage - (1.0 - 22.0 / 1024.0)).abs() < 1e-12, "{p:?}");
        assert_eq!(p.median, 5.5);
        // One run: the interval is that run, and covers nothing for sure.
        let one = Paired::of(&[3.0]).expect("one run");
        assert_eq!((one.low, one.high), (3.0, 3.0));
        assert!(one.coverage <= 0.0, "{one:?}");
        assert_eq!(Paired::of(&[]), None);
    }
}
