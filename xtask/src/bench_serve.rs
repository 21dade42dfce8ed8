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
//!
//! Each workload runs in three ways ([`Tracer`]), interleaved, [`RUNS`] of
//! each: untraced; under the *floor*, a bpftrace script on the same probe
//! sites whose only action is a per-CPU count ([`FLOOR_SCRIPT`]), which
//! says what a uprobe costs whatever its program does (the trap into the
//! kernel and back); and under the exporter. In a traced run the tracer is
//! started first and every program is released only once the tracer is
//! attached. The figure per run is the mean of the 20 programs' own
//! timings; the report gives the median run, and the CPU time per probe hit:
//! the programs' user + system CPU time (from `/proc`) over untraced, per
//! hit, which the kernel charges to the process that hit the probe.
//!
//! During traced runs `kernel.bpf_stats_enabled` is 1 (and restored after),
//! so the kernel times every eBPF program run; the report gives each
//! tracer's program time per hit, the part of the cost that is the
//! program's and not the trap's.
//!
//! Numbers never gate anything; the section says what machine it ran on.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
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
/// The floor's bpftrace script, `{}` standing for the program's path: every
/// slabscope probe site, with the cheapest action that still proves the
/// probes fired (a per-CPU count).
const FLOOR_SCRIPT: &str = "usdt:{}:slabscope:* { @hits = count(); }";
/// Fewer probe hits than this in a run, and the programs' extra CPU per
/// hit is not reported: the spread of their CPU time between runs is larger.
const MIN_HITS_PER_HIT_COST: f64 = 100_000.0;
/// The sysctl that makes the kernel time every eBPF program run.
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// A child killed when dropped.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How a run is traced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracer {
    /// Nothing attached.
    Untraced,
    /// bpftrace's [`FLOOR_SCRIPT`] on the same sites: the cost of a uprobe.
    Floor,
    /// `slabscope serve`.
    Exporter,
}

impl Tracer {
    const ALL: [Tracer; 3] = [Tracer::Untraced, Tracer::Floor, Tracer::Exporter];

    fn label(self) -> &'static str {
        match self {
            Tracer::Untraced => "untraced",
            Tracer::Floor => "floor (bpftrace, a count per hit)",
            Tracer::Exporter => "slabscope serve",
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Copy, Default)]
struct RunResult {
    /// Mean of the programs' own timings, in seconds.
    mean_secs: f64,
    /// Wall time from release to the last program's exit.
    wall_secs: f64,
    /// User + system CPU time of all programs, in seconds.
    programs_cpu_secs: f64,
    /// The tracer's CPU time over that wall time, in seconds.
    tracer_cpu_secs: f64,
    /// The tracer's resident memory at the end, in KiB.
    tracer_rss_kib: u64,
    /// Probe hits the tracer counted (for the exporter: events delivered
    /// plus lost), if it says.
    hits: Option<u64>,
    /// Events the exporter could not deliver through its ring buffer.
    lost: u64,
    /// The tracer's eBPF programs: total run time (ns) and runs, from
    /// their fdinfo, when `kernel.bpf_stats_enabled` was on.
    bpf: Option<(u64, u64)>,
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
    let floor_ok = which("bpftrace");
    let _stats = BpfStats::enable();

    let mut section = format!(
        "\n## Cost of `slabscope serve` tracing {PROGRAMS} processes\n\n\
         {PROGRAMS} copies of the allocator's `serve_target` example (release) run at \
         once, untraced, under the floor (bpftrace with only a per-CPU count on the same \
         probe sites: what a uprobe costs whatever its program does) and under the \
         exporter, {RUNS} runs of each, interleaved; a run's time is the mean of the \
         programs' own timings, each figure the median run's. CPU per hit is the \
         programs' user + system CPU time over the untraced runs', per probe \
         hit: the kernel charges the trap and the eBPF program to the process that \
         hit the probe. eBPF program time per hit is the kernel's own count \
         (`kernel.bpf_stats_enabled`, on during traced runs). Not gated: on a shared \
         machine the spread between runs can exceed the difference measured.\n"
    );
    if !floor_ok {
        section.push_str(
            "\nThe floor is not measured: `bpftrace` is not installed (`cargo xtask setup` \
             installs it).\n",
        );
    }
    for (name, args) in WORKLOADS {
        let mut runs: [Vec<RunResult>; 3] = Default::default();
        for i in 0..RUNS {
            for j in 0..Tracer::ALL.len() {
                // Each run starts with another tracer, so none always runs
                // right after a build or on a cold cache.
                let t = Tracer::ALL[(j + i) % Tracer::ALL.len()];
                if t == Tracer::Floor && !floor_ok {
                    continue;
                }
                note(format!("{name}: run {} of {RUNS}, {}", i + 1, t.label()));
                let r = one_run(&program, args, t, inspector)?;
                runs[t as usize].push(r);
            }
        }
        section.push_str(&report(name, args, &runs));
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

/// `kernel.bpf_stats_enabled` set to 1 while it lives, then put back.
struct BpfStats(Option<String>);

impl BpfStats {
    fn enable() -> BpfStats {
        let before = std::fs::read_to_string(BPF_STATS).ok();
        if std::fs::write(BPF_STATS, "1").is_err() {
            note("cannot set kernel.bpf_stats_enabled: eBPF program time is not measured");
            return BpfStats(None);
        }
        BpfStats(before)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(before) = &self.0 {
            let _ = std::fs::write(BPF_STATS, before.trim());
        }
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// A started tracer.
struct Attached {
    kid: Kid,
    /// bpftrace's stdout, line by line (its count is printed there at exit).
    lines: Option<mpsc::Receiver<String>>,
}

fn start_tracer(tracer: Tracer, program: &Path, inspector: &Path) -> Result<Option<Attached>> {
    match tracer {
        Tracer::Untraced => Ok(None),
        Tracer::Exporter => {
            let kid = Kid(Command::new(inspector)
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
            Ok(Some(Attached { kid, lines: None }))
        }
        Tracer::Floor => {
            let script = FLOOR_SCRIPT.replace("{}", &program.display().to_string());
            let mut child = Command::new("bpftrace")
                .args(["-e", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting bpftrace for the floor")?;
            let lines = lines_of(child.stdout.take().context("bpftrace's stdout")?);
            let kid = Kid(child);
            // "Attaching N probes..." comes once the uprobes are in place.
            match lines.recv_timeout(Duration::from_mins(1)) {
                Ok(l) if l.starts_with("Attaching") => {}
                Ok(l) => bail!("bpftrace said {l:?} instead of attaching"),
                Err(_) => bail!("bpftrace did not attach within 60 s"),
            }
            Ok(Some(Attached {
                kid,
                lines: Some(lines),
            }))
        }
    }
}

fn lines_of(out: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn one_run(program: &Path, args: &[&str], tracer: Tracer, inspector: &Path) -> Result<RunResult> {
    let attached = start_tracer(tracer, program, inspector)?;
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
    if tracer == Tracer::Exporter {
        wait(
            Duration::from_mins(1),
            "slabscope serve to list every program",
            || {
                metrics().and_then(|m| sample(&m, "slabscope_exporter_attached_processes"))
                    == Some(PROGRAMS as f64)
            },
        )?;
    }
    let tracer_pid = attached.as_ref().map(|a| a.kid.0.id());
    let cpu_before = tracer_pid.map(cpu_secs).transpose()?;
    let bpf_before = tracer_pid.and_then(bpf_run_time);
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
    let mut programs_cpu_secs = 0.0;
    for (kid, out) in &mut kids {
        let mut line = String::new();
        out.read_line(&mut line)
            .context("reading a program's time")?;
        let ns: f64 = line
            .trim()
            .parse()
            .with_context(|| format!("serve_target printed {line:?}, not nanoseconds"))?;
        total += ns / 1e9;
        programs_cpu_secs += reap_cpu_secs(&mut kid.0)?;
    }
    let wall_secs = start.elapsed().as_secs_f64();
    let mut r = RunResult {
        mean_secs: total / PROGRAMS as f64,
        wall_secs,
        programs_cpu_secs,
        ..RunResult::default()
    };
    if let (Some(a), Some(pid)) = (&attached, tracer_pid) {
        r.tracer_cpu_secs = cpu_secs(pid)? - cpu_before.unwrap_or(0.0);
        r.tracer_rss_kib = rss_kib(pid)?;
        r.bpf = bpf_before
            .zip(bpf_run_time(pid))
            .map(|((t0, n0), (t1, n1))| (t1.saturating_sub(t0), n1.saturating_sub(n0)));
        if a.lines.is_none() {
            // The exporter reads its maps every second: wait until two
            // reads a sample apart agree, so the last hits are in.
            let counts = || -> Result<(u64, u64)> {
                let page = metrics().context("the exporter stopped answering")?;
                let get = |name| sample(&page, name).unwrap_or(0.0) as u64;
                Ok((
                    get("slabscope_exporter_events_total"),
                    get("slabscope_exporter_lost_events_total"),
                ))
            };
            let mut last = counts()?;
            for _ in 0..10 {
                std::thread::sleep(Duration::from_millis(1200));
                let now = counts()?;
                if now == last {
                    break;
                }
                last = now;
            }
            r.lost = last.1;
            r.hits = Some(last.0 + last.1);
        }
    }
    if let Some(mut a) = attached
        && let Some(lines) = a.lines.take()
    {
        r.hits = Some(bpftrace_count(&mut a.kid, &lines)?);
    }
    Ok(r)
}

/// Stops bpftrace with SIGINT and reads the `@hits: N` it prints then.
fn bpftrace_count(kid: &mut Kid, lines: &mpsc::Receiver<String>) -> Result<u64> {
    if let Ok(pid) = i32::try_from(kid.0.id()) {
        // SAFETY: kill has no memory-safety preconditions; pid is our child.
        unsafe { libc::kill(pid, libc::SIGINT) };
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(n) = line.strip_prefix("@hits: ") {
            return n
                .trim()
                .parse()
                .with_context(|| format!("bpftrace printed {line:?}"));
        }
    }
    bail!("bpftrace printed no @hits count when stopped")
}

/// Waits for `child` to exit and returns its user + system CPU time, read
/// from `/proc/PID/stat` while it is a zombie (`waitid` with `WNOWAIT`),
/// before it is reaped.
fn reap_cpu_secs(child: &mut Child) -> Result<f64> {
    let pid = child.id();
    // SAFETY: an all-zero siginfo_t is a valid value to be overwritten.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is valid for writes; pid is our child, not yet reaped;
    // WNOWAIT leaves it to be reaped by `child.wait()` below.
    let rc = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("waiting for a program to exit");
    }
    let cpu = cpu_secs(pid);
    child.wait().context("reaping a program")?;
    cpu
}

/// Total run time (ns) and run count of the eBPF programs `pid` holds open,
/// from `/proc/PID/fdinfo`; `None` when the kernel does not count them
/// (`kernel.bpf_stats_enabled` off) or none is found.
fn bpf_run_time(pid: u32) -> Option<(u64, u64)> {
    let mut total = (0u64, 0u64);
    let mut found = false;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let Ok(link) = std::fs::read_link(fd.path()) else {
            continue;
        };
        if link.as_os_str() != "anon_inode:bpf-prog" {
            continue;
        }
        let Ok(info) = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        )) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(t), Some(n)) = (field("run_time_ns:"), field("run_cnt:")) {
            total.0 += t;
            total.1 += n;
            found = true;
        }
    }
    found.then_some(total)
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

fn report(name: &str, args: &[&str], runs: &[Vec<RunResult>; 3]) -> String {
    let med = |rs: &[RunResult], f: &dyn Fn(&RunResult) -> f64| {
        (!rs.is_empty()).then(|| median(rs.iter().map(f).collect()))
    };
    let untraced = &runs[Tracer::Untraced as usize];
    let base = med(untraced, &|r| r.mean_secs).unwrap_or(f64::NAN);
    let base_cpu = med(untraced, &|r| r.programs_cpu_secs).unwrap_or(f64::NAN);
    let mut md = String::new();
    let _ = writeln!(md, "\n### {name}: `serve_target {}`\n", args.join(" "));
    let _ = writeln!(
        md,
        "| measure | untraced | floor (bpftrace count) | slabscope serve |\n|---|---|---|---|"
    );
    let cells = |f: &dyn Fn(Tracer, &[RunResult]) -> Option<String>| -> String {
        Tracer::ALL
            .iter()
            .map(|t| f(*t, &runs[*t as usize]).unwrap_or_else(|| "–".into()))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let _ = writeln!(
        md,
        "| program time | {} |",
        cells(&|_, rs| med(rs, &|r| r.mean_secs).map(|t| format!("{t:.3} s")))
    );
    let _ = writeln!(
        md,
        "| slowdown | {} |",
        cells(&|_, rs| med(rs, &|r| r.mean_secs)
            .map(|t| format!("{:+.1} %", (t / base - 1.0) * 100.0)))
    );
    let _ = writeln!(
        md,
        "| probe hits (per s of the run) | {} |",
        cells(&|_, rs| {
            let hits = med(rs, &|r| r.hits.map_or(f64::NAN, |h| h as f64))?;
            let wall = med(rs, &|r| r.wall_secs)?;
            (!hits.is_nan()).then(|| format!("{hits:.0} ({:.0}/s)", hits / wall))
        })
    );
    let per_hit = |rs: &[RunResult]| {
        let hits = med(rs, &|r| r.hits.map_or(f64::NAN, |h| h as f64))?;
        let cpu = med(rs, &|r| r.programs_cpu_secs)?;
        // A few thousand hits cost less than the runs' spread in CPU time.
        (hits >= MIN_HITS_PER_HIT_COST).then(|| (cpu - base_cpu) / hits * 1e6)
    };
    let _ = writeln!(
        md,
        "| programs' extra CPU per hit | {} |",
        cells(&|_, rs| per_hit(rs).map(|us| format!("{us:.2} µs")))
    );
    let _ = writeln!(
        md,
        "| of which the eBPF program | {} |",
        cells(&|_, rs| {
            let ns = med(rs, &|r| {
                r.bpf
                    .filter(|(_, n)| *n > 0)
                    .map_or(f64::NAN, |(t, n)| t as f64 / n as f64)
            })?;
            (!ns.is_nan()).then(|| format!("{:.2} µs", ns / 1e3))
        })
    );
    let _ = writeln!(
        md,
        "| events not delivered (counts exact) | {} |",
        cells(&|t, rs| {
            (t == Tracer::Exporter)
                .then(|| med(rs, &|r| r.lost as f64).map(|l| format!("{l:.0}")))
                .flatten()
        })
    );
    let _ = writeln!(
        md,
        "| tracer CPU while the programs run | {} |",
        cells(&|t, rs| {
            (t != Tracer::Untraced && !rs.is_empty()).then(|| {
                let cpu = med(rs, &|r| r.tracer_cpu_secs / r.wall_secs * 100.0).unwrap_or(0.0);
                format!("{cpu:.1} % of one CPU")
            })
        })
    );
    let _ = writeln!(
        md,
        "| tracer resident memory | {} |",
        cells(&|t, rs| {
            (t != Tracer::Untraced && !rs.is_empty()).then(|| {
                let rss = med(rs, &|r| r.tracer_rss_kib as f64).unwrap_or(0.0) / 1024.0;
                format!("{rss:.1} MiB")
            })
        })
    );
    let _ = write!(
        md,
        "\nEvery run (program time untraced / floor / serve, s):"
    );
    for i in 0..RUNS {
        let t = |k: Tracer| {
            runs[k as usize]
                .get(i)
                .map_or("–".to_string(), |r| format!("{:.3}", r.mean_secs))
        };
        let _ = write!(
            md,
            " {} / {} / {};",
            t(Tracer::Untraced),
            t(Tracer::Floor),
            t(Tracer::Exporter)
        );
    }
    md.push('\n');
    md
}
