//! `cargo xtask`: the chores of the slabscope workspace.
//!
//! - `setup` installs what building and testing slabscope needs (Debian
//!   packages, the nightly toolchain's `rust-src`, `bpf-linker`) and checks the
//!   kernel, saying why each piece is needed.
//! - `test` is the whole test suite, exactly what CI runs (`.ci/run`).
//! - `demo` runs the demo workload under the live inspector.
//! - `docs` regenerates the probe reference from `slabscope_probes::PROBES`.
//! - `install` builds and installs the C libraries, headers and pkg-config
//!   files (`--prefix`, `--destdir`).
//! - `layers` prints the module graph the test suite checks for cycles.
//! - `hot-text` regenerates `malloc/hot-text.ld`, the malloc library's
//!   layout of the code programs run (root and bpftrace).
//! - `bench` builds and runs the benchmark crate (`bench/`) and writes
//!   `BENCHMARKS.md`.
//!
//! Builds themselves are plain cargo: the inspector's `build.rs` builds the
//! eBPF crate with aya-build, so xtask never drives the BPF target directly.
//! xtask depends only on std, anyhow, clap and libc, so `cargo xtask` compiles
//! in seconds on a fresh clone.

mod bench;
mod bench_serve;
mod demo;
mod docs;
mod hot_text;
mod install;
mod modgraph;
mod run;
mod services;
mod setup;
mod suite;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Chores of the slabscope workspace")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Check and install everything slabscope needs (idempotent; needs root
    /// only when Debian packages are missing).
    Setup,
    /// Run the whole test suite: setup check, rustfmt, clippy, every test.
    Test {
        /// Also run the long-running tests (sets SLABSCOPE_LONG=1).
        #[arg(long)]
        long: bool,
    },
    /// Run the demo workload and watch it live in the inspector.
    Demo {
        /// Stop the workload after this many seconds (default: when the
        /// inspector exits).
        #[arg(long, value_name = "N")]
        seconds: Option<u64>,
        /// Do not inject slow grows (no deadlocks, no emergency objects).
        #[arg(long)]
        no_faults: bool,
    },
    /// Regenerate docs/PROBES.md and the README's probe table from
    /// slabscope_probes::PROBES.
    Docs {
        /// Only check that the committed files are current.
        #[arg(long)]
        check: bool,
    },
    /// Benchmark slabscope against glibc, jemalloc, mimalloc, tcmalloc and an
    /// object pool; writes BENCHMARKS.md (--quick: a smoke run to a temp file).
    Bench(bench::BenchArgs),
    /// Build and install the C libraries (libslabscope.so with its SONAME
    /// links, libslabscope.a), their headers and pkg-config files under
    /// DESTDIR/PREFIX, in the layout cargo-c's `cargo cinstall` makes.
    Install(install::InstallArgs),
    /// Print the module graph of the allocator and the bench crate (what
    /// `test` checks for cycles): each top-level module and those it imports.
    Layers,
    /// Regenerate malloc/hot-text.ld: trace which of the malloc library's
    /// functions the workloads run (root, bpftrace) and gather them at the
    /// start of its code.
    HotText,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup::run(setup::Mode::Full),
        Cmd::Test { long } => suite::run(long),
        Cmd::Demo { seconds, no_faults } => demo::run(seconds, !no_faults),
        Cmd::Docs { check } => docs::run(check),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Install(args) => install::run(&args),
        Cmd::Layers => modgraph::print(),
        Cmd::HotText => hot_text::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
