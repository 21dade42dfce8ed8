//! `slabscope-bench`: slabscope against the allocators people use instead,
//! and the cost of being observable (issue 7). Run it through
//! `cargo xtask bench [--quick] [--out FILE]`, which builds this binary twice
//! (with and without slabscope's probes) and calls `slabscope-bench report`.
//!
//! The other subcommands are the children `report` spawns: `ramp` (one cold
//! ramp in a fresh process), `hit` (the loop counted under valgrind) and
//! `obs-child` (the loop a tracer attaches to).

mod child;
mod contender;
mod contenders;
mod cpath;
mod fresh;
mod global;
mod machine;
mod measure;
mod native;
mod obs;
mod profile;
mod programs;
mod report;
mod slab;
mod suite;
mod tcmalloc;
mod text;
mod workloads;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use contenders::Kind;

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of slabscope against its peers (run it through `cargo xtask bench`)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run every workload and write the report.
    Report(Box<ReportArgs>),
    /// Child: cold ramp of one allocator, prints JSON.
    Ramp {
        #[arg(long)]
        alloc: String,
        #[arg(long, default_value_t = 1_000_000)]
        count: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 0)]
        cpu: usize,
    },
    /// Child: the churn loop for instruction counting (`--alloc harness` runs
    /// the loop without an allocator).
    Hit {
        #[arg(long)]
        alloc: String,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 1)]
        live: usize,
        #[arg(long)]
        rounds: u64,
    },
    /// Child: slabscope churn that waits for `go` on stdin, for tracers.
    ObsChild {
        #[arg(long)]
        rounds: u64,
        #[arg(long, default_value_t = 5)]
        reps: usize,
        #[arg(long, default_value_t = 0)]
        cpu: usize,
        /// Objects live per round.
        #[arg(long, default_value_t = 1000)]
        live: usize,
        /// Create the cache with `KMC_NODEBUG`.
        #[arg(long)]
        nodebug: bool,
    },
    /// Print the hit paths of `malloc` and `free` in a build of
    /// `libslabscope_malloc.so` (instructions from the entry to a `ret`,
    /// as section 7 counts them), for comparing builds.
    Count {
        /// The library to disassemble.
        lib: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct ReportArgs {
    /// Smoke mode: tiny iteration counts.
    #[arg(long)]
    quick: bool,
    /// Where to write the Markdown report.
    #[arg(long)]
    out: PathBuf,
    /// This binary built without slabscope's probes (workload 5).
    #[arg(long)]
    noprobes_bin: Option<PathBuf>,
    /// This binary built with the probes, for workload 5's other children
    /// (default: this very file). `cargo xtask bench` passes a copy made
    /// beside the one without, so both children run files made alike.
    #[arg(long)]
    probes_bin: Option<PathBuf>,
    /// A second copy of the build with probes, run untraced as workload 5's
    /// control: its difference from the first copy is the run's noise.
    #[arg(long)]
    control_bin: Option<PathBuf>,
    /// The slabscope inspector binary, attached with `--pid N` plus `--inspector-args`.
    #[arg(long)]
    inspector_bin: Option<PathBuf>,
    /// Arguments after `--pid N` for the inspector (space separated).
    #[arg(long, default_value = "--json -d 1")]
    inspector_args: String,
    /// Why the collector is not measured, when no inspector binary is given.
    #[arg(long)]
    no_inspector_reason: Option<String>,
    /// Interleaved runs per cell (default 11, quick 3).
    #[arg(long)]
    runs: Option<usize>,
    /// The command line to print in the report.
    #[arg(long, default_value = "cargo xtask bench")]
    command: String,
    /// Run only these workloads (comma separated: churn, fastpath, prodcons,
    /// ramp, obs, instr); the others are reported as skipped. For iterating
    /// on one part.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Hand-written analysis appended to the report.
    #[arg(long)]
    analysis: Option<PathBuf>,
    /// `libslabscope.so`, for the C path (section 7).
    #[arg(long)]
    slabscope_lib: Option<PathBuf>,
    /// `libslabscope_malloc.so`, for the C path and the real programs.
    #[arg(long)]
    malloc_lib: Option<PathBuf>,
    /// Why there is no `--malloc-lib`, for the report.
    #[arg(long)]
    no_malloc_lib_reason: Option<String>,
    /// The real programs (section 8).
    #[arg(long, default_value = "workloads")]
    workloads: PathBuf,
}

/// Names accepted by `--only`.
const WORKLOADS: [&str; 9] = [
    "churn", "fastpath", "prodcons", "ramp", "obs", "instr", "cpath", "programs", "global",
];

fn kind_arg(s: &str) -> Result<Kind> {
    Kind::from_key(s).with_context(|| {
        let keys: Vec<&str> = Kind::ALL.iter().map(|k| k.key()).collect();
        format!("unknown allocator {s:?}: use one of {}", keys.join(", "))
    })
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Report(a) => report(*a),
        Cmd::Ramp {
            alloc,
            count,
            size,
            cpu,
        } => child::ramp(kind_arg(&alloc)?, count, size, cpu),
        Cmd::Hit {
            alloc,
            size,
            live,
            rounds,
        } => {
            let kind = if alloc == "harness" {
                None
            } else {
                Some(kind_arg(&alloc)?)
            };
            child::hit(kind, size, live, rounds)
        }
        Cmd::ObsChild {
            rounds,
            reps,
            cpu,
            live,
            nodebug,
        } => child::obs(rounds, reps, cpu, live, nodebug),
        Cmd::Count { lib } => {
            let (malloc, free) = native::malloc_abi(&lib)
                .with_context(|| format!("counting the hit paths of {}", lib.display()))?;
            for (name, p) in [("malloc", malloc), ("free", free)] {
                println!(
                    "{name}: {} to {} instructions",
                    p.shortest.instructions, p.longest.instructions
                );
                for l in &p.shortest.listing {
                    println!("  {l}");
                }
            }
            Ok(())
        }
    }
}

fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn report(a: ReportArgs) -> Result<()> {
    let start = Instant::now();
    let exe = std::env::current_exe().context("finding the bench binary's own path")?;
    let load_before = machine::loadavg();
    let cpus = measure::allowed_cpus();
    let Some(&cpu) = cpus.last() else {
        bail!("this process may run on no CPU at all");
    };
    let pair = (cpus[0], cpu);
    measure::pin_to(cpu)?;
    let quick = a.quick;
    let runs = a.runs.unwrap_or(if quick { 3 } else { 11 });
    let plan = suite::Plan {
        runs,
        target: if quick {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(40)
        },
        prodcons_objects: if quick { 20_000 } else { 1_000_000 },
        pair,
    };
    let kinds = Kind::ALL.to_vec();
    let mut notes = Vec::new();
    eprintln!(
        "slabscope-bench: {} mode, {runs} runs, pinned to CPU {cpu}",
        if quick { "quick" } else { "full" }
    );

    for w in &a.only {
        if !WORKLOADS.contains(&w.as_str()) {
            bail!(
                "--only {w}: no such workload; use some of {}",
                WORKLOADS.join(",")
            );
        }
    }
    let wanted = |w: &str| {
        let yes = a.only.is_empty() || a.only.iter().any(|o| o == w);
        if !yes {
            eprintln!("  {w}: skipped (--only)");
        }
        yes
    };
    let churn = if wanted("churn") {
        suite::churn(&plan, &kinds, &mut notes)?
    } else {
        Vec::new()
    };
    let fastpath = if wanted("fastpath") {
        let modes = fastpath_modes(&exe);
        // 250 objects fit in a 64 B cache's 256-slot magazine; 1000 do not.
        [1usize, 250, 1000]
            .into_iter()
            .map(|live| {
                // About 50 ms per child repetition (quick: 5 ms) at ~5 ns/op.
                let ops = if quick { 1e6 } else { 1e7 };
                let rounds = ((ops / (2.0 * live as f64)) as u64).max(1);
                (
                    live,
                    obs::run(
                        &modes,
                        if quick { 1 } else { 5 },
                        rounds,
                        if quick { 2 } else { 5 },
                        cpu,
                        live,
                    ),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let prodcons = if wanted("prodcons") {
        suite::prodcons(&plan, &kinds, &mut notes)?
    } else {
        Vec::new()
    };
    let ramp = if wanted("ramp") {
        fresh::ramp(
            &exe,
            &kinds,
            if quick { 1 } else { 5 },
            1_000_000,
            cpu,
            &mut notes,
        )
    } else {
        Vec::new()
    };

    // Workload 5: each child repetition lasts about 50 ms (quick: 5 ms).
    let slab_ns = churn
        .iter()
        .find(|r| r.size == 64 && r.live == 1000 && !r.random)
        .and_then(|r| r.cells.get(&Kind::Slabscope))
        .map_or(10.0, |s| s.median);
    let rep_ns = if quick { 5e6 } else { 50e6 };
    let obs_rounds = ((rep_ns / (slab_ns * 2000.0)) as u64).max(1);
    let modes = obs_modes(&a, &exe);
    let obs = if wanted("obs") {
        // Ten short children per mode rather than five long ones: a child's
        // speed varies more from child to child than from repetition to
        // repetition.
        obs::run(
            &modes,
            if quick { 1 } else { 10 },
            obs_rounds,
            if quick { 2 } else { 4 },
            cpu,
            1000,
        )
    } else {
        Vec::new()
    };

    let (instr, profiles) = if !wanted("instr") {
        (Vec::new(), Vec::new())
    } else if fresh::valgrind_available() {
        let configs: &[(usize, usize)] = if quick {
            &[(64, 1)]
        } else {
            &[(64, 1), (64, 1000), (4096, 1), (4096, 1000)]
        };
        let instr = fresh::instr(
            &exe,
            &kinds,
            configs,
            if quick { 20_000 } else { 400_000 },
            &mut notes,
        );
        let mut profiles = Vec::new();
        if !quick {
            for (size, live, rounds) in [(64, 1, 200_000), (64, 1000, 200)] {
                match profile::run(&exe, size, live, rounds, &std::env::temp_dir()) {
                    Ok(p) => profiles.push(p),
                    Err(e) => notes.push(format!("callgrind profile: {e:#}")),
                }
            }
        }
        (instr, profiles)
    } else {
        notes.push("instructions/op: valgrind is not installed (Debian package valgrind)".into());
        (Vec::new(), Vec::new())
    };

    let native = if wanted("instr") {
        match native::count(&exe) {
            Ok(n) => Some(n),
            Err(e) => {
                notes.push(format!("native instruction count: {e:#}"));
                None
            }
        }
    } else {
        None
    };

    let cpath = if wanted("cpath") {
        Some(c_path(&a, cpu, runs, plan.target))
    } else {
        None
    };

    // Each program runs for one to three seconds per allocator (quick: well
    // under one), so a full run takes at most 5 interleaved runs.
    let programs = if wanted("programs") {
        Some(programs::run(
            &a.workloads,
            library(
                a.malloc_lib.as_ref(),
                "--malloc-lib",
                a.no_malloc_lib_reason.as_ref(),
            ),
            quick,
            if quick { 1 } else { runs.min(5) },
            &cpus,
        ))
    } else {
        None
    };

    // Last: it builds slabscope's size classes in this process.
    let global = if wanted("global") {
        global::run(runs, plan.target)
    } else {
        None
    };

    let analysis = match &a.analysis {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let mut versions = vec![
        (
            "slabscope".to_string(),
            format!("{} (this tree)", env!("CARGO_PKG_VERSION")),
        ),
        (
            "jemalloc".to_string(),
            format!("{} (tikv-jemalloc-sys)", contenders::jemalloc_version()),
        ),
        (
            "mimalloc".to_string(),
            format!(
                "{} (libmimalloc-sys, the mimalloc crate's C layer)",
                contenders::mimalloc_version()
            ),
        ),
    ];
    match tcmalloc::Tcmalloc::get() {
        Ok(tc) => versions.push((
            "tcmalloc".into(),
            format!("{} ({} via dlopen)", tc.version, tc.soname),
        )),
        Err(e) => versions.push(("tcmalloc".into(), format!("left out: {e:#}"))),
    }
    versions.push((
        "object pool".into(),
        "lockfree-object-pool 0.1 `LinearObjectPool<Box<[u8]>>`".into(),
    ));
    let results = report::Results {
        machine: machine::Machine::describe(),
        date: utc_now(),
        load_before,
        load_after: machine::loadavg(),
        command: a.command.clone(),
        quick,
        runs,
        seconds: start.elapsed().as_secs_f64(),
        kinds,
        versions,
        notes,
        churn,
        fastpath,
        prodcons,
        ramp,
        instr,
        obs,
        profiles,
        native,
        cpath,
        programs,
        global,
        analysis,
    };
    std::fs::write(&a.out, results.markdown())
        .with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "slabscope-bench: wrote {} in {:.0} s",
        a.out.display(),
        results.seconds
    );
    Ok(())
}

/// A library given on the command line, or why it is absent.
fn library(path: Option<&PathBuf>, flag: &str, absent: Option<&String>) -> Result<PathBuf, String> {
    match path {
        Some(p) if p.exists() => Ok(p.clone()),
        Some(p) => Err(format!("{} does not exist", p.display())),
        None => Err(absent.cloned().unwrap_or_else(|| {
            format!("no library was given ({flag}); cargo xtask bench builds it")
        })),
    }
}

/// Section 7: compile the C harness and run it.
fn c_path(a: &ReportArgs, cpu: usize, runs: usize, target: Duration) -> cpath::CPath {
    let libs = cpath::Libraries {
        slabscope: library(a.slabscope_lib.as_ref(), "--slabscope-lib", None),
        malloc: library(
            a.malloc_lib.as_ref(),
            "--malloc-lib",
            a.no_malloc_lib_reason.as_ref(),
        ),
        references: cpath::compile_references(&std::env::temp_dir()),
    };
    let references = libs.references.clone();
    let c = match cpath::compile(&std::env::temp_dir()) {
        Ok(bin) => {
            let c = cpath::run(&bin, libs, cpu, runs, target.as_nanos() as u64);
            let _ = std::fs::remove_file(&bin);
            c
        }
        Err(e) => cpath::CPath {
            libs,
            rows: Vec::new(),
            missing: Default::default(),
            failed: Some(format!("{e:#}")),
            abi: None,
            malloc_abi: None,
        },
    };
    cpath::remove_references(&references);
    c
}

/// The magazine fast path with and without restartable sequences and
/// debug checks, each in a child process (the protocol is per process).
fn fastpath_modes(exe: &std::path::Path) -> Vec<obs::Mode> {
    let mode = |label, rseq: &'static str, nodebug: bool| obs::Mode {
        label,
        binary: Ok(exe.to_path_buf()),
        tracer: None,
        env: vec![("SLABSCOPE_MAGAZINE_RSEQ", rseq)],
        nodebug,
    };
    vec![
        mode("restartable sequences, debug checks (default)", "1", false),
        mode("restartable sequences, `KMC_NODEBUG`", "1", true),
        mode("locked magazines, debug checks", "0", false),
        mode("locked magazines, `KMC_NODEBUG`", "0", true),
    ]
}

fn obs_modes(a: &ReportArgs, exe: &std::path::Path) -> Vec<obs::Mode> {
    let root = {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        euid == 0
    };
    let noprobes = match &a.noprobes_bin {
        Some(p) if p.exists() => Ok(p.clone()),
        Some(p) => Err(format!("{} does not exist", p.display())),
        None => Err(
            "no binary without probes was given (--noprobes-bin); cargo xtask bench builds one"
                .into(),
        ),
    };
    let probes = match &a.probes_bin {
        Some(p) if p.exists() => Ok(p.clone()),
        Some(p) => Err(format!("{} does not exist", p.display())),
        None => Ok(exe.to_path_buf()),
    };
    let control = match &a.control_bin {
        Some(p) if p.exists() => Ok(p.clone()),
        Some(p) => Err(format!("{} does not exist", p.display())),
        None => Err(
            "no second copy of the build with probes was given (--control-bin); \
             cargo xtask bench makes one"
                .into(),
        ),
    };
    let traced = |ok: Result<(), String>| ok.and_then(|()| probes.clone());
    let needs_root = if root {
        Ok(())
    } else {
        Err("tracing needs root (CAP_BPF, CAP_PERFMON): run with sudo".to_string())
    };
    let collector = match &a.inspector_bin {
        Some(p) if p.exists() => needs_root.clone(),
        Some(p) => Err(format!("the inspector {} does not exist", p.display())),
        None => Err(a
            .no_inspector_reason
            .clone()
            .unwrap_or_else(|| "no inspector binary was given (--inspector-bin)".into())),
    };
    let bpftrace = if std::process::Command::new("bpftrace")
        .arg("--version")
        .output()
        .is_ok()
    {
        needs_root
    } else {
        Err("bpftrace is not installed (Debian package bpftrace)".into())
    };
    vec![
        obs::Mode {
            label: "probes compiled out",
            binary: noprobes,
            tracer: None,
            env: Vec::new(),
            nodebug: false,
        },
        obs::Mode {
            label: "probes compiled in, untraced",
            binary: probes.clone(),
            tracer: None,
            env: Vec::new(),
            nodebug: false,
        },
        obs::Mode {
            label: obs::CONTROL,
            binary: control,
            tracer: None,
            env: Vec::new(),
            nodebug: false,
        },
        obs::Mode {
            label: "traced by the slabscope collector",
            binary: traced(collector),
            tracer: a.inspector_bin.clone().map(|bin| obs::Tracer::Collector {
                bin,
                args: a
                    .inspector_args
                    .split_whitespace()
                    .map(String::from)
                    .collect(),
            }),
            env: Vec::new(),
            nodebug: false,
        },
        obs::Mode {
            label: "traced by bpftrace",
            binary: traced(bpftrace),
            tracer: Some(obs::Tracer::Bpftrace),
            env: Vec::new(),
            nodebug: false,
        },
    ]
}
