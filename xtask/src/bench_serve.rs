//! `cargo xtask bench`'s last section: what `slabscope serve` costs when it
//! traces 20 processes (issue 18): its CPU time and resident memory, and how
//! much slower the traced programs run.
//!
//! The programs are the allocator's `serve_target --churn N` (release),
//! two workloads ([`WORKLOADS`]): steady, where each round allocates and
//! frees 1000 objects that the magazines and slabs already hold, so the
//! probes fire only for the first round and for `cache_stats`; and reaping,
//! where each round also reaps, so every round grows and returns slabs and
//! fires some forty probes: a worst case for the probes.
//! Runs alternate between untraced and traced, [`RUNS`] of each; in a traced
//! run the exporter is started first and every program is released only
//! once the exporter lists all 20. The figure per run is the mean of the 20
//! programs' own timings; the report gives the median run.
//!
//! Numbers never gate anything; the section says what machine it ran on.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::run::{self, header, note};

/// Programs traced at once.
const PROGRAMS: usize = 20;
/// The workloads: name, `serve_target` arguments.
const WORKLOADS: [(&str, &[&str]); 2] = [
    ("steady (probes fire rarely)", &["--churn", "20000"]),
    (
        "reaping every round (some forty probes per round)",
        &["--churn", "5000", "--reap"],
    ),
];
/// Runs of each kind.
const RUNS: usize = 3;
/// Where the exporter listens during the bench.
const PORT: u16 = 19464;

/// A child killed when dropped.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
struct RunResult {
    /// Mean of the programs' own timings, in seconds.
    mean_secs: f64,
    /// Wall time from release to the last program's exit.
    wall_secs: f64,
    /// The exporter's CPU time over that wall time, in seconds.
    exporter_cpu_secs: f64,
    /// The exporter's resident memory at the end, in KiB.
    exporter_rss_kib: u64,
    /// Probe events the exporter counted, delivered and lost.
    events: u64,
    lost: u64,
}

/// Builds what it needs, measures, and appends the section to `out`.
pub fn run(inspector: &Path, out: &Path) -> Result<()> {
    header("bench: slabscope serve tracing 20 processes");
    let target_dir = run::target_dir().join("serve-bench");
    run::run(
        run::cargo()
            .args([
                "build",
                "--release",
                "-p",
                "slabscope",
                "--example",
                "serve_target",
            ])
            .arg("--target-dir")
            .arg(&target_dir),
    )
    .context("building the serve_target example for the exporter's bench")?;
    let program = target_dir.join("release/examples/serve_target");

    let mut section = format!(
        "\n## Cost of `slabscope serve` tracing {PROGRAMS} processes\n\n\
         {PROGRAMS} copies of the allocator's `serve_target` example (release) run at \
         once, untraced and traced by the exporter, {RUNS} runs of each, alternating; a \
         run's time is the mean of the programs' own timings, each figure the median \
         run's. Not gated: on a shared machine the spread between runs can exceed the \
         difference measured.\n"
    );
    for (name, args) in WORKLOADS {
        let mut untraced = Vec::new();
        let mut traced = Vec::new();
        for i in 0..RUNS {
            note(format!("{name}: run {} of {RUNS}, untraced", i + 1));
            untraced.push(one_run(&program, args, None)?);
            note(format!("{name}: run {} of {RUNS}, traced", i + 1));
            traced.push(one_run(&program, args, Some(inspector))?);
        }
        section.push_str(&report(name, args, &untraced, &traced));
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(out)
        .with_context(|| format!("opening {} to add the exporter's section", out.display()))?;
    f.write_all(section.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

fn one_run(program: &Path, args: &[&str], inspector: Option<&Path>) -> Result<RunResult> {
    let exporter = match inspector {
        Some(bin) => {
            let kid = Kid(Command::new(bin)
                .args(["serve", "--listen", &format!("127.0.0.1:{PORT}")])
                .args(["--comm", "serve_target"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting slabscope serve")?);
            wait(Duration::from_secs(20), "slabscope serve to answer", || {
                metrics().is_some()
            })?;
            Some(kid)
        }
        None => None,
    };
    let mut kids = Vec::new();
    for _ in 0..PROGRAMS {
        let mut child = Command::new(program)
            .args(args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut out = BufReader::new(child.stdout.take().context("piped stdout")?);
        let mut line = String::new();
        out.read_line(&mut line).context("reading `ready`")?;
        if !line.starts_with("ready ") {
            bail!("serve_target said {line:?} instead of `ready PID`");
        }
        kids.push((Kid(child), out));
    }
    if exporter.is_some() {
        wait(
            Duration::from_mins(1),
            "slabscope serve to list every program",
            || {
                metrics().and_then(|m| sample(&m, "slabscope_exporter_attached_processes"))
                    == Some(PROGRAMS as f64)
            },
        )?;
    }
    let cpu_before = exporter.as_ref().map(|k| cpu_secs(k.0.id())).transpose()?;
    let start = Instant::now();
    for (kid, _) in &mut kids {
        kid.0
            .stdin
            .take()
            .context("piped stdin")?
            .write_all(b"go\n")
            .context("releasing a program")?;
    }
    let mut total = 0.0;
    for (kid, out) in &mut kids {
        let mut line = String::new();
        out.read_line(&mut line)
            .context("reading a program's time")?;
        let ns: f64 = line
            .trim()
            .parse()
            .with_context(|| format!("serve_target printed {line:?}, not nanoseconds"))?;
        total += ns / 1e9;
        kid.0.wait().context("waiting for a program")?;
    }
    let wall_secs = start.elapsed().as_secs_f64();
    let (exporter_cpu_secs, exporter_rss_kib, events, lost) = match &exporter {
        Some(k) => {
            let page = metrics().context("the exporter stopped answering")?;
            (
                cpu_secs(k.0.id())? - cpu_before.unwrap_or(0.0),
                rss_kib(k.0.id())?,
                sample(&page, "slabscope_exporter_events_total").unwrap_or(0.0) as u64,
                sample(&page, "slabscope_exporter_lost_events_total").unwrap_or(0.0) as u64,
            )
        }
        None => (0.0, 0, 0, 0),
    };
    drop(exporter);
    Ok(RunResult {
        mean_secs: total / PROGRAMS as f64,
        wall_secs,
        exporter_cpu_secs,
        exporter_rss_kib,
        events,
        lost,
    })
}

fn wait(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The exporter's /metrics page, if it answers.
fn metrics() -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", PORT)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

/// User plus system CPU seconds of `pid`, from /proc/PID/stat.
fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name, utime and stime are fields 14 and 15: indices 11, 12.
    let ticks: f64 = f
        .get(11..13)
        .context("short /proc/PID/stat")?
        .iter()
        .map(|v| v.parse::<f64>().unwrap_or(0.0))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks / hz)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(name: &str, args: &[&str], untraced: &[RunResult], traced: &[RunResult]) -> String {
    let base = median(untraced.iter().map(|r| r.mean_secs).collect());
    let with = median(traced.iter().map(|r| r.mean_secs).collect());
    let slowdown = (with / base - 1.0) * 100.0;
    let cpu = median(
        traced
            .iter()
            .map(|r| r.exporter_cpu_secs / r.wall_secs * 100.0)
            .collect(),
    );
    let rss = median(traced.iter().map(|r| r.exporter_rss_kib as f64).collect()) / 1024.0;
    let hits = median(traced.iter().map(|r| (r.events + r.lost) as f64).collect());
    let lost = median(traced.iter().map(|r| r.lost as f64).collect());
    let wall = median(traced.iter().map(|r| r.wall_secs).collect());
    let mut md = String::new();
    let _ = writeln!(md, "\n### {name}: `serve_target {}`\n", args.join(" "));
    let _ = writeln!(md, "| measure | value |\n|---|---|");
    let _ = writeln!(md, "| program time, untraced | {base:.3} s |");
    let _ = writeln!(md, "| program time, traced | {with:.3} s |");
    let _ = writeln!(md, "| traced programs' slowdown | {slowdown:+.1} % |");
    let _ = writeln!(
        md,
        "| probe hits while traced | {hits:.0} ({:.0}/s; {lost:.0} events not delivered, \
         counts exact) |",
        hits / wall
    );
    let _ = writeln!(
        md,
        "| exporter CPU while the programs run | {cpu:.1} % of one CPU |"
    );
    let _ = writeln!(md, "| exporter resident memory | {rss:.1} MiB |");
    let _ = write!(md, "\nEvery run (program time untraced / traced, s):");
    for (u, t) in untraced.iter().zip(traced) {
        let _ = write!(md, " {:.3} / {:.3};", u.mean_secs, t.mean_secs);
    }
    md.push('\n');
    md
}
