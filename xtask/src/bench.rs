//! `cargo xtask bench [--quick] [--out FILE]`: build the benchmark crate
//! (`bench/`, `slabscope-bench`) and run it (issue 7).
//!
//! The bench binary is built twice from the same tree: once without
//! slabscope's `probes` feature, copied aside as `slabscope-bench-noprobes`,
//! and once with it, copied aside twice, as `slabscope-bench-probes` and
//! `slabscope-bench-probes-control`. The build with probes runs every
//! workload; for the observability workload it starts the three copies as
//! children: without probes, with them, and the control, a second file of
//! the same code whose difference from the first is what the run's noise
//! alone makes of two binaries (issue 15: in one full run two files of one
//! build read 28 % apart). No child runs the driver's own file, and both
//! builds get [`ALIGN_RUSTFLAGS`], so the code the two untraced children
//! share starts at the same offset of a cache line in both. Both builds
//! share one target directory, so the C peers (jemalloc, mimalloc) compile
//! once; only slabscope and the bench crate rebuild between the two.
//!
//! The C library `libslabscope.so` is built too (`-p slabscope-capi`), and
//! `libslabscope_malloc.so` when the tree has its crate (`malloc/`), for the
//! C path, where a C harness calls each through `dlopen` (section 7).
//!
//! In full mode the inspector (`slabscope`, the collector's front end) is
//! built too and attached as a tracer; `--quick` skips it and measures
//! nothing else that needs a long build.
//!
//! `--quick` is the CI smoke mode: tiny iteration counts, and the report goes
//! to a temporary file unless `--out` says otherwise, so the committed
//! `BENCHMARKS.md` is never overwritten by smoke numbers. Numbers never gate
//! anything: the command fails only when the bench cannot build or run.
//! On the reference machine (2 vCPU, idle) `--quick` takes about 65 s from a
//! clean target directory (≈ 50 s of it compiling the bench and its C peers)
//! and about 30 s warm; a full run takes about 2 minutes plus the
//! inspector's build.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::run::{self, header};

/// Arguments of `cargo xtask bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Smoke mode for CI: tiny iteration counts; writes to a temporary file
    /// unless --out is given.
    #[arg(long)]
    pub quick: bool,
    /// Where to write the report (default: BENCHMARKS.md at the repository
    /// root; with --quick, slabscope-BENCHMARKS.quick.md in the temp dir).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Interleaved runs per measurement (default 11; --quick: 3).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Do not build or attach the inspector for the observability workload.
    #[arg(long)]
    pub no_collector: bool,
    /// Only the cost of `slabscope serve` tracing 20 processes
    /// (bench_serve.rs), appended to the report file.
    #[arg(long, conflicts_with_all = ["quick", "no_collector"])]
    pub serve_only: bool,
}

/// Code generation flags of both builds of the bench binary: every function
/// starts on a 64-byte line (LLVM's default on x86-64 is 16 bytes), so a
/// function whose code is the same in both builds (the churn loop of the
/// observability children) sits at the same offset of its cache line in
/// both, whatever the probe sites elsewhere move. Without it the two builds
/// put that loop at +16 and +32. Cargo keeps these artifacts apart from
/// those built without the flag (the flags are part of their file names), so
/// the other release builds do not rebuild them.
pub const ALIGN_RUSTFLAGS: &str = "-C llvm-args=-align-all-functions=6";

/// The `RUSTFLAGS` of the bench's builds: the caller's, and
/// [`ALIGN_RUSTFLAGS`]. A `cargo` command on `slabscope-bench` in the release
/// profile with these reuses the bench build's dependencies.
pub fn bench_rustflags() -> String {
    match std::env::var("RUSTFLAGS") {
        Ok(own) if !own.trim().is_empty() => format!("{own} {ALIGN_RUSTFLAGS}"),
        _ => ALIGN_RUSTFLAGS.to_string(),
    }
}

/// The bench binary's build: `cargo build --release -p slabscope-bench`
/// with `extra` and [`ALIGN_RUSTFLAGS`] added to the caller's `RUSTFLAGS`.
fn build_bench(extra: &[&str]) -> Result<()> {
    let flags = bench_rustflags();
    let mut cmd = run::cargo();
    cmd.env("RUSTFLAGS", &flags)
        .args(["build", "--release", "-p", "slabscope-bench"])
        .args(extra);
    run::run(&mut cmd).with_context(|| {
        format!(
            "building the bench binary failed; fix the build error above and rerun `cargo xtask bench` \
             (the build was `RUSTFLAGS='{flags}' cargo build --release -p slabscope-bench {}`)",
            extra.join(" ")
        )
    })
}

/// Copy `from` to each of `to`.
fn copy_aside(from: &std::path::Path, to: &[&std::path::Path]) -> Result<()> {
    for dest in to {
        std::fs::copy(from, dest)
            .with_context(|| format!("copying {} to {}", from.display(), dest.display()))?;
    }
    Ok(())
}

/// `cargo build --release` with `args`, echoed like every xtask step.
fn build(args: &[&str]) -> Result<()> {
    run::run(run::cargo().args(["build", "--release"]).args(args)).with_context(|| {
        format!(
            "building for the benchmarks failed; fix the build error above and rerun `cargo xtask bench` \
             (the build was `cargo build --release {}`)",
            args.join(" ")
        )
    })
}

/// Build `libslabscope_malloc.so` when the tree has its crate (`malloc/`),
/// or say why it is not measured.
fn malloc_library(root: &std::path::Path, release: &std::path::Path) -> Result<PathBuf, String> {
    let manifest = root.join("malloc").join("Cargo.toml");
    if !manifest.exists() {
        return Err(
            "libslabscope_malloc.so is not built: this tree has no malloc crate (malloc/) yet"
                .to_string(),
        );
    }
    header("bench: build libslabscope_malloc.so for the C path and the real programs");
    let manifest = manifest.display().to_string();
    build(&["--manifest-path", &manifest])
        .map_err(|e| format!("libslabscope_malloc.so did not build: {e:#}"))?;
    let lib = release.join("libslabscope_malloc.so");
    if lib.exists() {
        Ok(lib)
    } else {
        Err(format!(
            "building malloc/ made no {}: the crate must build a cdylib named slabscope_malloc",
            lib.display()
        ))
    }
}

/// The command line as the user typed it, for the report.
fn command_line(args: &BenchArgs) -> String {
    let mut cmd = String::from("cargo xtask bench");
    if args.quick {
        cmd.push_str(" --quick");
    }
    if let Some(runs) = args.runs {
        cmd.push_str(&format!(" --runs {runs}"));
    }
    if args.no_collector {
        cmd.push_str(" --no-collector");
    }
    if let Some(out) = &args.out {
        cmd.push_str(&format!(" --out {}", out.display()));
    }
    cmd
}

/// Build and run the benchmarks, then write the report.
pub fn run(args: BenchArgs) -> Result<()> {
    let root = run::workspace_root();
    let release = run::target_dir().join("release");
    if args.serve_only {
        build(&["-p", "slabscope-inspector", "--bin", "slabscope"])?;
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| root.join("BENCHMARKS.md"));
        crate::bench_serve::run(&release.join("slabscope"), &out)?;
        run::note(format!(
            "the exporter's section was added to {}",
            out.display()
        ));
        return Ok(());
    }
    let bench = release.join("slabscope-bench");
    let noprobes = release.join("slabscope-bench-noprobes");
    let probes = release.join("slabscope-bench-probes");
    let control = release.join("slabscope-bench-probes-control");

    header("bench: build slabscope-bench without slabscope's probes");
    build_bench(&["--no-default-features"])?;
    copy_aside(&bench, &[&noprobes])?;
    header("bench: build slabscope-bench with the probes");
    build_bench(&[])?;
    copy_aside(&bench, &[&probes, &control])?;
    header("bench: build libslabscope.so, the C library, for the C path");
    build(&["-p", "slabscope-capi"])?;
    let malloc_lib = malloc_library(&root, &release);

    let inspector = if args.quick {
        Err("not measured in --quick mode (building the inspector and its eBPF program takes minutes)".to_string())
    } else if args.no_collector {
        Err("not measured: --no-collector was given".to_string())
    } else {
        header("bench: build the inspector (slabscope) to attach as the collector");
        match build(&["-p", "slabscope-inspector", "--bin", "slabscope"]) {
            Ok(()) => Ok(release.join("slabscope")),
            Err(e) => Err(format!("not measured: the inspector did not build: {e:#}")),
        }
    };

    let out = match &args.out {
        Some(p) => p.clone(),
        None if args.quick => std::env::temp_dir().join("slabscope-BENCHMARKS.quick.md"),
        None => root.join("BENCHMARKS.md"),
    };
    let out = if out.is_relative() {
        std::env::current_dir()
            .context("finding the current directory")?
            .join(out)
    } else {
        out
    };

    let mut cmd = Command::new(&bench);
    cmd.current_dir(&root)
        .arg("report")
        .arg("--out")
        .arg(&out)
        .arg("--noprobes-bin")
        .arg(&noprobes)
        .arg("--probes-bin")
        .arg(&probes)
        .arg("--control-bin")
        .arg(&control)
        .arg("--command")
        .arg(command_line(&args));
    if args.quick {
        cmd.arg("--quick");
    }
    if let Some(runs) = args.runs {
        cmd.arg("--runs").arg(runs.to_string());
    }
    cmd.arg("--slabscope-lib")
        .arg(release.join("libslabscope.so"));
    match &malloc_lib {
        Ok(lib) => {
            cmd.arg("--malloc-lib").arg(lib);
        }
        Err(why) => {
            cmd.arg("--no-malloc-lib-reason").arg(why);
        }
    }
    match &inspector {
        Ok(bin) => {
            cmd.arg("--inspector-bin").arg(bin);
        }
        Err(why) => {
            cmd.arg("--no-inspector-reason").arg(why);
        }
    }
    let analysis = root.join("bench").join("ANALYSIS.md");
    if !args.quick && analysis.exists() {
        cmd.arg("--analysis").arg(&analysis);
    }
    header("bench: run every workload");
    run::run(&mut cmd).context("the benchmark run failed; its messages are above")?;
    if let Ok(bin) = &inspector {
        crate::bench_serve::run(bin, &out)?;
    }
    run::note(format!("report written to {}", out.display()));
    Ok(())
}
