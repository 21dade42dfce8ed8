//! Real programs (issue 15): the programs of `workloads/` run with each
//! allocator preloaded (`LD_PRELOAD`), interleaved run by run, timed, and
//! their peak resident memory read: `wait4`'s `ru_maxrss` of the program,
//! taken by a small launcher (`bench/c/rusage.c`) that forks it, and
//! redis-server's `VmHWM` (which `workloads/redis.sh` reports).
//!
//! glibc is "preloaded" too, as `libc.so.6`: Debian's redis-server is
//! linked with jemalloc, and preloading the C library puts glibc's `malloc`
//! first in the lookup order; for the other programs it changes nothing.
//! Each run's stdout is compared with glibc's first run: an allocator whose
//! program printed something else is marked, since its numbers measure a
//! different run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::measure::Summary;
use crate::text::num;

/// The preloaded allocators: name in the report and what goes in `LD_PRELOAD`.
pub const PEERS: [(&str, &str); 4] = [
    ("glibc", "libc.so.6"),
    ("jemalloc", "libjemalloc.so.2"),
    ("mimalloc", "libmimalloc.so.2"),
    ("tcmalloc", "libtcmalloc_minimal.so.4"),
];
/// slabscope's malloc, when `libslabscope_malloc.so` is built.
pub const SLABSCOPE: &str = "slabscope_malloc";
/// The peers whose fastest sets the time target.
const FAST_PEERS: [&str; 3] = ["jemalloc", "mimalloc", "tcmalloc"];

/// One program and how to run it.
#[derive(Clone, Debug)]
struct Program {
    name: &'static str,
    /// What the report says was run.
    command: String,
    argv: Vec<String>,
    env: Vec<(&'static str, String)>,
    stdin: Option<PathBuf>,
    /// The preload goes in this variable instead of `LD_PRELOAD` (redis.sh
    /// gives it to the server only).
    preload_var: &'static str,
    /// `argv[0]` was built for the run (`workloads/*.c`), and is removed
    /// after it.
    built: bool,
}

/// One run of one program with one allocator.
#[derive(Clone, Debug, Default)]
struct Run {
    secs: f64,
    /// kB, from `wait4`, or redis-server's `VmHWM`.
    peak_kib: f64,
    /// Named measurements the program printed (`measure NAME VALUE`, or
    /// larson's replacements/s).
    extra: BTreeMap<String, f64>,
    stdout: String,
}

/// A program's figures per allocator.
#[derive(Clone, Debug)]
pub struct ProgramRow {
    pub name: &'static str,
    pub command: String,
    /// allocator → metric → summary. Metrics: `time_s`, `peak_mib` and
    /// the program's own (`set_rps`, `get_rps`, `ops_per_s`).
    pub cells: BTreeMap<String, BTreeMap<String, Summary>>,
    /// Allocators whose program printed something else than on glibc.
    pub differs: Vec<String>,
    /// Allocators whose program failed, with why.
    pub failed: BTreeMap<String, String>,
}

/// What the real-program section measured.
#[derive(Clone, Debug)]
pub struct Programs {
    pub runs: usize,
    pub rows: Vec<ProgramRow>,
    /// Why slabscope's malloc is absent, when it is.
    pub no_slabscope: Option<String>,
    /// Programs that could not run at all (tool missing), with why.
    pub skipped: Vec<String>,
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Debian's own python3 when present: a version manager's shim on PATH
/// would be a shell script, and the preload would time the shell too.
fn python() -> Option<PathBuf> {
    let system = PathBuf::from("/usr/bin/python3");
    if system.is_file() {
        Some(system)
    } else {
        which("python3")
    }
}

/// `workloads/NAME.c` compiled into `dir`.
fn c_workload(workloads: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    let bin = dir.join(format!("slabscope-{name}-{}", std::process::id()));
    let out = Command::new("gcc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&bin)
        .arg(workloads.join(format!("{name}.c")))
        .output()
        .with_context(|| {
            format!("running gcc to build workloads/{name}.c: install gcc (`cargo xtask setup`)")
        })?;
    if !out.status.success() {
        bail!(
            "gcc could not build workloads/{name}.c: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(bin)
}

fn larson_binary(workloads: &Path, dir: &Path) -> Result<PathBuf> {
    c_workload(workloads, dir, "larson")
}

/// The programs, sized for `quick` (a second or less each) or a full run
/// (one to three seconds each).
fn programs(workloads: &Path, quick: bool, skipped: &mut Vec<String>) -> Vec<Program> {
    let mut v = Vec::new();
    let w = |f: &str| workloads.join(f).display().to_string();
    match python() {
        Some(py) => {
            let rounds = if quick { "1" } else { "8" };
            v.push(Program {
                name: "python heap.py",
                command: format!("PYTHONMALLOC=malloc python3 workloads/heap.py {rounds}"),
                argv: vec![py.display().to_string(), w("heap.py"), rounds.into()],
                env: vec![("PYTHONMALLOC", "malloc".into())],
                stdin: None,
                preload_var: "LD_PRELOAD",
                built: false,
            });
        }
        None => skipped.push("python heap.py: python3 is not installed".into()),
    }
    match which("sqlite3") {
        Some(sq) => {
            let (script, command) = if quick {
                // A tenth of the rows, through the script's @rows parameter.
                let sql = std::env::temp_dir()
                    .join(format!("slabscope-sqlite-quick-{}.sql", std::process::id()));
                let text = std::fs::read_to_string(workloads.join("sqlite.sql"))
                    .map(|s| format!(".parameter set @rows 20000\n{s}"));
                match text.map(|t| std::fs::write(&sql, t)) {
                    Ok(Ok(())) => (
                        sql,
                        "sqlite3 :memory: < workloads/sqlite.sql (@rows 20000)".to_string(),
                    ),
                    _ => (
                        workloads.join("sqlite.sql"),
                        "sqlite3 :memory: < workloads/sqlite.sql".into(),
                    ),
                }
            } else {
                (
                    workloads.join("sqlite.sql"),
                    "sqlite3 :memory: < workloads/sqlite.sql".into(),
                )
            };
            v.push(Program {
                name: "sqlite3 sqlite.sql",
                command,
                argv: vec![sq.display().to_string(), ":memory:".into()],
                env: Vec::new(),
                stdin: Some(script),
                preload_var: "LD_PRELOAD",
                built: false,
            });
        }
        None => skipped.push("sqlite3: not installed (Debian package sqlite3)".into()),
    }
    match larson_binary(workloads, &std::env::temp_dir()) {
        Ok(bin) => {
            let args: &[&str] = if quick {
                &["2", "4", "20000"]
            } else {
                &["2", "20", "400000"]
            };
            // The same work with each array kept by its thread (`MOVE` 0):
            // what the frees on other threads cost, apart from the calls.
            let kept = [args, &["1000", "8", "4096", "1", "0"]].concat();
            for (name, args) in [("larson", args), ("larson, arrays kept", &kept[..])] {
                v.push(built(name, "larson", &bin, args));
            }
        }
        Err(e) => skipped.push(format!("larson: {e:#}")),
    }
    // A producer and a consumer: every block freed on another thread.
    match c_workload(workloads, &std::env::temp_dir(), "queue") {
        Ok(bin) => {
            let blocks = if quick { "200000" } else { "5000000" };
            v.push(built("queue", "queue", &bin, &[blocks, "100"]));
        }
        Err(e) => skipped.push(format!("queue: {e:#}")),
    }
    // Buffers above the size classes, of varied sizes, allocated and freed
    // over and over.
    match c_workload(workloads, &std::env::temp_dir(), "buffers") {
        Ok(bin) => {
            let rounds = if quick { "500" } else { "10000" };
            v.push(built("buffers", "buffers", &bin, &[rounds]));
        }
        Err(e) => skipped.push(format!("buffers: {e:#}")),
    }
    if which("redis-server").is_some() && which("redis-benchmark").is_some() {
        let requests = if quick { "20000" } else { "500000" };
        v.push(Program {
            name: "redis",
            command: format!("sh workloads/redis.sh {requests}"),
            argv: vec!["sh".into(), w("redis.sh"), requests.into()],
            env: Vec::new(),
            stdin: None,
            preload_var: "SERVER_PRELOAD",
            built: false,
        });
    } else {
        skipped.push(
            "redis: redis-server or redis-benchmark is not installed (Debian packages redis-server, redis-tools)"
                .into(),
        );
    }
    v
}

/// A program of `workloads/` built for the run (`bin`, from `workload`.c),
/// run as `bin args`, preloaded as the other programs are.
fn built(name: &'static str, workload: &str, bin: &Path, args: &[&str]) -> Program {
    let mut argv = vec![bin.display().to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    Program {
        name,
        command: format!("{workload} {}", args.join(" ")),
        argv,
        env: Vec::new(),
        stdin: None,
        preload_var: "LD_PRELOAD",
        built: true,
    }
}

/// `measure NAME VALUE` lines and larson's `N replacements/s`.
fn measurements(stderr: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for line in stderr.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let ["measure", name, value] = f[..] {
            if let Ok(v) = value.parse() {
                m.insert(name.to_string(), v);
            }
        } else if let Some(i) = f.iter().position(|w| *w == "replacements/s")
            && i > 0
            && let Ok(v) = f[i - 1].parse()
        {
            m.insert("ops_per_s".into(), v);
        }
    }
    m
}

/// The CPU set of `cpus`, for the programs: the bench's own thread is
/// pinned to one CPU, and a child would inherit that.
fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: c is below CPU_SETSIZE, so the bit is inside `set`.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// The launcher (`bench/c/rusage.c`) that runs each program and reports its
/// own peak RSS and wall time, compiled at run time like the C harness.
const LAUNCHER: &str = include_str!("../c/rusage.c");

/// Compile [`LAUNCHER`] into `dir`.
fn launcher(dir: &Path) -> Result<PathBuf> {
    let src = dir.join(format!("slabscope-rusage-{}.c", std::process::id()));
    let bin = dir.join(format!("slabscope-rusage-{}", std::process::id()));
    std::fs::write(&src, LAUNCHER).with_context(|| format!("writing {}", src.display()))?;
    let out = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .context("running gcc to build the launcher: install gcc (`cargo xtask setup`)")?;
    let _ = std::fs::remove_file(&src);
    if !out.status.success() {
        bail!(
            "gcc could not build the launcher: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(bin)
}

/// The launcher's report: `maxrss_kib N` and `wall_ns N`.
fn launcher_report(text: &str) -> Option<(f64, f64)> {
    let mut kib = None;
    let mut ns = None;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("maxrss_kib", v)) => kib = v.trim().parse().ok(),
            Some(("wall_ns", v)) => ns = v.trim().parse().ok(),
            _ => {}
        }
    }
    Some((kib?, ns?))
}

/// Run `p` once with `preload` on `cpus`, through `launcher`.
///
/// The program's peak RSS comes from the launcher's `wait4`, not ours: a
/// process's `ru_maxrss` keeps the peak it had before `exec`, and a child
/// forked from this process starts as a copy of it (36 MiB late in a full
/// run, which every larson run then reported whatever its allocator).
fn run_once(p: &Program, preload: &str, cpus: &[usize], launcher: &Path) -> Result<Run> {
    let dir = std::env::temp_dir();
    let tag = format!("{}-{}", std::process::id(), p.name.replace([' ', ','], "_"));
    let out_path = dir.join(format!("slabscope-prog-{tag}.out"));
    let err_path = dir.join(format!("slabscope-prog-{tag}.err"));
    let ru_path = dir.join(format!("slabscope-prog-{tag}.rusage"));
    let _ = std::fs::remove_file(&ru_path);
    // The preload and the program's variables reach the program only,
    // through the launcher's NAME=VALUE arguments: the allocator under test
    // runs the program, not the launcher's fork.
    let mut cmd = Command::new(launcher);
    cmd.arg(&ru_path)
        .arg(format!("{}={preload}", p.preload_var))
        .args(p.env.iter().map(|(k, v)| format!("{k}={v}")))
        .arg("--")
        .args(&p.argv)
        .stdout(File::create(&out_path).context("creating the program's stdout file")?)
        .stderr(File::create(&err_path).context("creating the program's stderr file")?);
    if p.preload_var != "LD_PRELOAD" {
        cmd.env_remove("LD_PRELOAD");
    }
    let set = cpu_set(cpus);
    let unpin = move || {
        // SAFETY: pid 0 is the child itself; set is a valid cpu_set_t.
        if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure only makes one system call, which is
    // async-signal-safe, and touches no memory of the parent but `set`, a
    // plain copy.
    unsafe { cmd.pre_exec(unpin) };
    match &p.stdin {
        Some(f) => cmd.stdin(File::open(f).with_context(|| format!("opening {}", f.display()))?),
        None => cmd.stdin(Stdio::null()),
    };
    let status = cmd
        .status()
        .with_context(|| format!("starting {} through the launcher", p.argv[0]))?;
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let report = std::fs::read_to_string(&ru_path).unwrap_or_default();
    for f in [&out_path, &err_path, &ru_path] {
        let _ = std::fs::remove_file(f);
    }
    if !status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        bail!(
            "exited with {status}: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        );
    }
    let Some((maxrss_kib, wall_ns)) = launcher_report(&report) else {
        bail!("the launcher wrote no report (got {report:?})");
    };
    let mut extra = measurements(&stderr);
    let peak_kib = extra.remove("server_vmhwm_kib").unwrap_or(maxrss_kib);
    Ok(Run {
        secs: wall_ns / 1e9,
        peak_kib,
        extra,
        stdout,
    })
}

/// Run every program with every allocator, `runs` times, interleaved.
pub fn run(
    workloads: &Path,
    malloc_lib: Result<PathBuf, String>,
    quick: bool,
    runs: usize,
    cpus: &[usize],
) -> Programs {
    let mut skipped = Vec::new();
    let launcher = match launcher(&std::env::temp_dir()) {
        Ok(l) => l,
        Err(e) => {
            return Programs {
                runs,
                rows: Vec::new(),
                no_slabscope: malloc_lib.err(),
                skipped: vec![format!("every program: {e:#}")],
            };
        }
    };
    let progs = programs(workloads, quick, &mut skipped);
    let mut allocs: Vec<(String, String)> = PEERS
        .iter()
        .map(|(n, l)| (n.to_string(), l.to_string()))
        .collect();
    let no_slabscope = match &malloc_lib {
        Ok(p) => {
            allocs.push((SLABSCOPE.into(), p.display().to_string()));
            None
        }
        Err(why) => Some(why.clone()),
    };
    let mut rows = Vec::new();
    for p in &progs {
        let mut samples: BTreeMap<String, Vec<Run>> = BTreeMap::new();
        let mut failed = BTreeMap::new();
        for r in 0..runs {
            for j in 0..allocs.len() {
                let (name, lib) = &allocs[(j + r) % allocs.len()];
                if failed.contains_key(name) {
                    continue;
                }
                match run_once(p, lib, cpus, &launcher) {
                    Ok(run) => samples.entry(name.clone()).or_default().push(run),
                    Err(e) => {
                        failed.insert(name.clone(), format!("{e:#}"));
                    }
                }
            }
        }
        let reference = samples
            .get("glibc")
            .and_then(|v| v.first())
            .map(|r| r.stdout.clone());
        let mut differs = Vec::new();
        let mut cells = BTreeMap::new();
        for (name, rs) in &samples {
            if reference
                .as_ref()
                .is_some_and(|want| rs.iter().any(|r| &r.stdout != want))
            {
                differs.push(name.clone());
            }
            let mut metrics: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for run in rs {
                metrics.entry("time_s".into()).or_default().push(run.secs);
                metrics
                    .entry("peak_mib".into())
                    .or_default()
                    .push(run.peak_kib / 1024.0);
                for (k, v) in &run.extra {
                    metrics.entry(k.clone()).or_default().push(*v);
                }
            }
            let m: BTreeMap<String, Summary> = metrics
                .into_iter()
                .filter_map(|(k, v)| Summary::of(&v).map(|s| (k, s)))
                .collect();
            cells.insert(name.clone(), m);
        }
        eprintln!("  real program {}: done", p.name);
        rows.push(ProgramRow {
            name: p.name,
            command: p.command.clone(),
            cells,
            differs,
            failed,
        });
    }
    let _ = std::fs::remove_file(&launcher);
    for p in &progs {
        if p.built {
            let _ = std::fs::remove_file(&p.argv[0]);
        }
        if let Some(s) = &p.stdin
            && s.starts_with(std::env::temp_dir())
        {
            let _ = std::fs::remove_file(s);
        }
    }
    Programs {
        runs,
        rows,
        no_slabscope,
        skipped,
    }
}

/// Metrics of a row, in table order, with whether higher is better.
pub fn metrics(row: &ProgramRow) -> Vec<(&'static str, &'static str, bool)> {
    let mut v = Vec::new();
    let has = |m: &str| row.cells.values().any(|c| c.contains_key(m));
    if has("set_rps") {
        v.push(("set_rps", "SET requests/s", true));
        v.push(("get_rps", "GET requests/s", true));
    } else if has("ops_per_s") {
        v.push(("ops_per_s", "replacements/s", true));
    } else {
        v.push(("time_s", "time (s)", false));
    }
    v.push(("peak_mib", "peak RSS (MiB)", false));
    v
}

/// One of slabscope_malloc's figures next to the peer it is held against
/// ([`ProgramRow::against_target`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Against {
    pub peer: &'static str,
    /// The peer's median.
    pub theirs: f64,
    /// slabscope_malloc's median, when measured.
    pub mine: Option<f64>,
    /// slabscope's over the peer's (the peer's over slabscope's for a
    /// throughput): at most `limit` meets the target.
    pub ratio: Option<f64>,
    pub limit: f64,
}

impl ProgramRow {
    fn median(&self, alloc: &str, metric: &str) -> Option<f64> {
        Some(self.cells.get(alloc)?.get(metric)?.median)
    }

    /// What slabscope_malloc's `metric` is held against: peak RSS
    /// against mimalloc's (target ≤ 1.1×), a time against the fastest of
    /// jemalloc, mimalloc and tcmalloc, and a throughput (`higher`) as
    /// that peer's over slabscope's (target ≤ 1.0× both). `None` when
    /// there is no peer figure to compare with.
    pub fn against_target(&self, metric: &str, higher: bool) -> Option<Against> {
        let (peer, theirs) = if metric == "peak_mib" {
            ("mimalloc", self.median("mimalloc", metric)?)
        } else {
            self.best_fast_peer(metric, higher)?
        };
        let mine = self.median(SLABSCOPE, metric);
        Some(Against {
            peer,
            theirs,
            mine,
            ratio: mine.map(|m| if higher { theirs / m } else { m / theirs }),
            limit: if metric == "peak_mib" { 1.1 } else { 1.0 },
        })
    }

    /// The fastest of jemalloc, mimalloc and tcmalloc on `metric`.
    pub fn best_fast_peer(&self, metric: &str, higher: bool) -> Option<(&'static str, f64)> {
        FAST_PEERS
            .iter()
            .filter_map(|p| self.median(p, metric).map(|m| (*p, m)))
            .reduce(|a, b| if (b.1 > a.1) == higher { b } else { a })
    }
}

/// A throughput (`higher`) in millions or thousands, a time or a size as
/// [`num`] writes it.
pub fn figure(x: f64, higher: bool) -> String {
    if higher { big(x) } else { num(x) }
}

fn big(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.0} k", x / 1e3)
    } else {
        num(x)
    }
}

impl Programs {
    pub fn markdown(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "The programs of `workloads/` (see its README), each run with every allocator \
             preloaded (`LD_PRELOAD`; for redis only redis-server gets it), interleaved, median \
             of {} runs (min in parentheses for times and memory). Time is the program's wall \
             time; larson's throughput is its own replacements/s; redis is redis-benchmark's \
             requests/s. Peak RSS is `wait4`'s `ru_maxrss` of the program, redis-server's \
             `VmHWM` for redis. glibc is preloaded as `libc.so.6`, which puts its `malloc` ahead \
             of the jemalloc Debian's redis-server links. Ratios: slabscope_malloc's time over \
             the fastest of jemalloc, mimalloc and tcmalloc (target ≤ 1.0×; for throughput, \
             the best peer's over slabscope's), and its peak RSS over mimalloc's (target \
             ≤ 1.1×).\n",
            self.runs
        );
        if let Some(why) = &self.no_slabscope {
            let _ = writeln!(
                md,
                "**slabscope_malloc is not measured**: {why}. The peers' figures below are \
                 real; the slabscope column and the ratios are absent until the library is \
                 built.\n"
            );
        }
        let mut allocs: Vec<&str> = PEERS.iter().map(|(n, _)| *n).collect();
        allocs.push(SLABSCOPE);
        let _ = write!(md, "| program | figure |");
        for a in &allocs {
            let _ = write!(md, " {a} |");
        }
        let _ = writeln!(
            md,
            " best of jemalloc/mimalloc/tcmalloc | slabscope_malloc ratio |"
        );
        let _ = write!(md, "|---|---|");
        for _ in &allocs {
            let _ = write!(md, "---:|");
        }
        let _ = writeln!(md, "---|---:|");
        for row in &self.rows {
            for (metric, label, higher) in metrics(row) {
                let _ = write!(md, "| {} | {label} |", row.name);
                for a in &allocs {
                    match row.cells.get(*a).and_then(|c| c.get(metric)) {
                        Some(s) if higher => {
                            let _ = write!(md, " {} |", big(s.median));
                        }
                        Some(s) => {
                            let _ = write!(md, " {} ({}) |", num(s.median), num(s.min));
                        }
                        None => {
                            let _ = write!(md, " — |");
                        }
                    }
                }
                let (best, ratio) = match row.against_target(metric, higher) {
                    Some(a) if metric == "peak_mib" => {
                        (format!("({} {})", a.peer, num(a.theirs)), a.ratio)
                    }
                    Some(a) => (format!("{} {}", a.peer, figure(a.theirs, higher)), a.ratio),
                    None => ("—".into(), None),
                };
                let _ = writeln!(
                    md,
                    " {best} | {} |",
                    ratio.map_or("—".into(), |r| format!("**{r:.2}×**"))
                );
            }
        }
        let _ = writeln!(md);
        for row in &self.rows {
            let _ = writeln!(md, "- {}: `{}`", row.name, row.command);
            for d in &row.differs {
                let _ = writeln!(
                    md,
                    "  - **{d}: the program printed something else than on glibc**"
                );
            }
            for (a, why) in &row.failed {
                let _ = writeln!(md, "  - {a} failed: {why}");
            }
        }
        for s in &self.skipped {
            let _ = writeln!(md, "- not run: {s}");
        }
        let _ = writeln!(md);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_reports_are_parsed() {
        assert_eq!(
            launcher_report("maxrss_kib 13412\nwall_ns 56688368\n"),
            Some((13412.0, 56688368.0))
        );
        assert_eq!(
            launcher_report("maxrss_kib 1\n"),
            None,
            "both figures are needed"
        );
        assert_eq!(launcher_report(""), None);
    }

    #[test]
    fn measurements_are_read_from_stderr() {
        let m = measurements(
            "measure set_rps 800000.00\nnoise\nmeasure get_rps 9.5\n\
             larson: 0.817 s, 4896653 replacements/s\nmeasure bad x\n",
        );
        assert_eq!(m.get("set_rps"), Some(&800000.0));
        assert_eq!(m.get("get_rps"), Some(&9.5));
        assert_eq!(m.get("ops_per_s"), Some(&4896653.0));
        assert_eq!(m.len(), 3, "unparsable values are dropped: {m:?}");
    }

    #[test]
    fn best_fast_peer_follows_the_direction_and_ignores_glibc() {
        let s = |median| Summary {
            min: median,
            median,
            n: 1,
        };
        let cell = |m: &str, v| BTreeMap::from([(m.to_string(), s(v))]);
        let row = ProgramRow {
            name: "t",
            command: String::new(),
            cells: BTreeMap::from([
                ("glibc".to_string(), cell("time_s", 0.5)),
                ("jemalloc".to_string(), cell("time_s", 2.0)),
                ("mimalloc".to_string(), cell("time_s", 1.0)),
            ]),
            differs: Vec::new(),
            failed: BTreeMap::new(),
        };
        assert_eq!(row.best_fast_peer("time_s", false), Some(("mimalloc", 1.0)));
        assert_eq!(row.best_fast_peer("time_s", true), Some(("jemalloc", 2.0)));
        assert_eq!(row.best_fast_peer("peak_mib", false), None);
    }

    /// larson runs with glibc and jemalloc preloaded, prints the same line
    /// on both, and reports a peak RSS from wait4.
    #[test]
    fn larson_runs_preloaded() {
        let workloads = Path::new(env!("CARGO_MANIFEST_DIR")).join("../workloads");
        let bin = larson_binary(&workloads, &std::env::temp_dir()).expect("larson.c compiles");
        let p = built("larson", "larson", &bin, &["2", "2", "2000"]);
        let cpus = crate::measure::allowed_cpus();
        let dir =
            std::env::temp_dir().join(format!("slabscope-launcher-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let launcher = launcher(&dir).expect("the launcher compiles");
        // This process holds 96 MiB more than larson ever does: a peak read
        // from a child forked off it would include them.
        let ballast = vec![1u8; 96 << 20];
        let a = run_once(&p, "libc.so.6", &cpus, &launcher).expect("larson on glibc");
        let b = run_once(&p, "libjemalloc.so.2", &cpus, &launcher)
            .expect("larson on jemalloc (cargo xtask setup installs it)");
        assert!(ballast.iter().step_by(4096).all(|&x| x == 1));
        assert!(a.stdout.starts_with("larson ok: 2 threads"), "{}", a.stdout);
        assert_eq!(
            a.stdout, b.stdout,
            "the output does not depend on the allocator"
        );
        assert!(
            a.peak_kib > 1000.0 && a.peak_kib < 64.0 * 1024.0,
            "larson's own peak, in kB, without this process's 96 MiB: {}",
            a.peak_kib
        );
        assert!(a.secs > 0.0 && a.secs < 60.0, "{}", a.secs);
        assert!(a.extra.contains_key("ops_per_s"), "{:?}", a.extra);
        let bad = run_once(
            &Program {
                argv: vec![p.argv[0].clone(), "x".into(), "1".into(), "1".into()],
                ..p.clone()
            },
            "libc.so.6",
            &cpus,
            &launcher,
        );
        let _ = std::fs::remove_file(&bin);
        let _ = std::fs::remove_dir_all(&dir);
        let err = format!("{:#}", bad.expect_err("a failing program is an error"));
        assert!(err.contains("THREADS must be a whole number"), "{err}");
    }
}
