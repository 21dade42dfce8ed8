//! Workload 5: what being observable costs. The same slabscope churn (64 B,
//! 1000 live, LIFO) runs in child processes of four kinds, interleaved
//! (the same runner measures the magazine fast path's variants, which are
//! per process too):
//!
//! 1. a binary built without slabscope's `probes` feature (sites compiled out);
//! 2. this binary, sites compiled in, nothing attached;
//! 3. this binary with the slabscope collector attached (the inspector's
//!    `--json` view);
//! 4. this binary with a bpftrace one-liner attached.
//!
//! Each child prints `ready <pid>`; the driver attaches the tracer, waits
//! until it reports that it is attached, says `go`, and reads the child's
//! figures. A mode that cannot run here is reported as not measured, with why.

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
    pub result: Result<Summary, String>,
    /// A word from the tracer, e.g. what the bpftrace map held at the end.
    pub evidence: Option<String>,
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
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut errors: Vec<Option<String>> = modes
        .iter()
        .map(|m| m.binary.as_ref().err().cloned())
        .collect();
    let mut evidence: Vec<Option<String>> = vec![None; modes.len()];
    for run in 0..runs {
        for j in 0..modes.len() {
            let i = (j + run) % modes.len();
            if errors[i].is_some() {
                continue;
            }
            let Ok(bin) = &modes[i].binary else { continue };
            match run_once(&modes[i], bin, rounds, reps, cpu, live) {
                Ok((res, ev)) => {
                    samples[i].extend(res.samples);
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
    let evidence = attached.map(detach);
    eprintln!(
        "    obs child: attach {:.1} s, run {:.1} s, detach {:.1} s",
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        t2.elapsed().as_secs_f64()
    );
    let _ = child.wait();
    let line = line.context("the obs child printed no result")?;
    let res: ObsResult = serde_json::from_str(&line)
        .with_context(|| format!("parsing the obs child's output {line:?}"))?;
    Ok((res, evidence))
}
