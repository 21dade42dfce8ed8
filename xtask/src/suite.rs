//! `cargo xtask test`: the whole suite, exactly what CI runs (`.ci/run`).
//!
//! Steps, each under its own header: the setup check (installs what is
//! missing), `cargo fmt --check`, clippy with warnings denied on the default
//! members, clippy on the eBPF crate for the BPF target, `cargo doc` with
//! rustdoc's warnings (missing docs, broken links) denied, the layering check
//! (no import cycle between the allocator's or the bench's modules,
//! [`crate::modgraph`]), then `cargo test` on the default members, the
//! quick bench (smoke), and the bench crate's clippy and unit tests on the
//! smoke run's release build. A failing step does not stop the later ones
//! (one run shows every problem), except setup, without which nothing
//! builds. The
//! summary lists every step and ends with the totals of cargo's
//! `test result:` lines, as `tests: N passed, N failed, N skipped`
//! (skipped = `#[ignore]`d); the exit code is non-zero when any step failed.
//!
//! Tests run in the dev profile: the workspace compiles once for clippy
//! (check) and once for tests, and a release build would cost more compile
//! time than the tests save. Tests that need root (eBPF, bpftrace, tmux)
//! are ordinary tests that skip loudly when not root; CI runs as root.
//! `--long` sets `SLABSCOPE_LONG=1`, which the long-running tests read.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::modgraph;
use crate::run::{self, header, note};
use crate::setup;

/// The environment variable the long-running tests read.
pub const LONG_ENV: &str = "SLABSCOPE_LONG";

#[derive(Debug)]
enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

#[derive(Debug)]
struct Step {
    name: &'static str,
    outcome: Outcome,
    took: Duration,
}

/// Totals of cargo test's `test result:` lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// `test result:` lines seen (one per test binary and doc-test run).
    pub suites: u64,
}

impl Totals {
    /// Adds one line if it is a `test result:` line.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        // "ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"
        let Some((_, counts)) = rest.split_once(". ") else {
            return;
        };
        let mut found = false;
        for part in counts.split(';') {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => continue,
            }
            found = true;
        }
        if found {
            self.suites += 1;
        }
    }
}

/// Runs the suite.
pub fn run(long: bool) -> Result<()> {
    let started = Instant::now();
    setup::run(setup::Mode::Quick)
        .context("the setup step failed, so nothing can be built; fix what it reports and rerun")?;

    let mut steps = Vec::new();
    let mut totals = Totals::default();

    steps.push(step("rustfmt", || {
        run::run(run::cargo().args(["fmt", "--all", "--check"]))
            .context("formatting differs: run `cargo fmt --all`")
    }));
    steps.push(step("clippy", || {
        run::run(run::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))
    }));
    steps.push(ebpf_clippy());
    steps.push(step("rustdoc", || {
        // Every public item documented (the workspace's missing_docs lint)
        // and every intra-doc link resolving, on the default members,
        // private items' docs included: the module docs that explain the
        // design link to private functions.
        run::run(
            run::cargo()
                .args(["doc", "--no-deps", "--document-private-items"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )
        .context("rustdoc warned: document the item or fix the link it names")
    }));
    steps.push(step("layering", layering));
    steps.push(step("cargo test", || cargo_test(&mut totals)));
    steps.push(step("bench smoke", bench_smoke));
    steps.push(step("bench tests", || bench_tests(&mut totals)));
    if long {
        long_steps(&mut steps, &mut totals);
    }

    header("summary");
    let mut failed = 0;
    for s in &steps {
        let (state, detail) = match &s.outcome {
            Outcome::Passed => ("passed", String::new()),
            Outcome::Failed(why) => {
                failed += 1;
                ("FAILED", format!(": {why}"))
            }
            Outcome::Skipped(why) => ("skipped", format!(": {why}")),
        };
        note(format!(
            "{:<8} {:<12} {:>6.1}s{detail}",
            state,
            s.name,
            s.took.as_secs_f64()
        ));
    }
    note(format!(
        "{} test binaries and doc-test runs; total {:.0}s{}",
        totals.suites,
        started.elapsed().as_secs_f64(),
        if long { " (long tests included)" } else { "" }
    ));
    // The closing line CI reads.
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    if failed > 0 {
        bail!("{failed} step(s) failed; see the summary above");
    }
    Ok(())
}

/// Runs one step under a header and records how it went.
fn step(name: &'static str, f: impl FnOnce() -> Result<()>) -> Step {
    header(name);
    let t = Instant::now();
    let outcome = match f() {
        Ok(()) => Outcome::Passed,
        Err(e) => {
            eprintln!("xtask: {name} failed: {e:#}");
            Outcome::Failed(format!("{e:#}"))
        }
    };
    Step {
        name,
        outcome,
        took: t.elapsed(),
    }
}

/// Clippy on the eBPF crate, which the default members leave out (it only
/// builds for the BPF target, with nightly).
fn ebpf_clippy() -> Step {
    let name = "ebpf clippy";
    let has_clippy =
        setup::nightly_components().is_some_and(|c| setup::has_component(&c, "clippy"));
    if !has_clippy {
        header(name);
        let why = "the nightly toolchain has no clippy \
                   (`rustup component add clippy --toolchain nightly` enables this step)";
        note(format!("skipped: {why}"));
        return Step {
            name,
            outcome: Outcome::Skipped(why.into()),
            took: Duration::ZERO,
        };
    }
    step(name, || {
        let mut cmd = nightly_cargo();
        cmd.args(["clippy", "-p", "slabscope-ebpf"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .args(["--", "-D", "warnings"]);
        run::run(&mut cmd)
    })
}

/// `cargo xtask bench --quick`: the benchmarks still build, run and write
/// their report (to target/, never over BENCHMARKS.md). Numbers never gate.
fn bench_smoke() -> Result<()> {
    let out = run::workspace_root().join("target/BENCHMARKS.smoke.md");
    let _ = std::fs::remove_file(&out);
    crate::bench::run(crate::bench::BenchArgs {
        quick: true,
        out: Some(out.clone()),
        runs: None,
        no_collector: false,
        serve_only: false,
    })?;
    let report = std::fs::read_to_string(&out)
        .with_context(|| format!("the quick bench wrote no report at {}", out.display()))?;
    if !report.contains("## 1. Fixed-size churn") {
        bail!("{} has no churn table", out.display());
    }
    Ok(())
}

/// The bench crate's clippy and unit tests (its report, its C harness and
/// references), which the default members' steps leave out with the crate;
/// after the smoke run, whose build they reuse.
fn bench_tests(totals: &mut Totals) -> Result<()> {
    let flags = crate::bench::bench_rustflags();
    let mut clippy = run::cargo();
    clippy.env("RUSTFLAGS", &flags).args([
        "clippy",
        "--release",
        "-p",
        "slabscope-bench",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run::run(&mut clippy)?;
    let mut test = run::cargo();
    test.env("RUSTFLAGS", &flags)
        .args(["test", "--release", "-p", "slabscope-bench"])
        .env_remove(LONG_ENV);
    counted(test, totals)
}

/// No import cycle between the top-level modules of the allocator and of
/// the bench crate ([`crate::modgraph`]).
fn layering() -> Result<()> {
    for krate in ["allocator", "bench"] {
        let src = run::workspace_root().join(krate).join("src");
        let graph = modgraph::check(&src)?;
        let edges: usize = graph.values().map(|to| to.len()).sum();
        note(format!(
            "{krate}: {} modules, {edges} imports between them, no cycle",
            graph.len()
        ));
    }
    Ok(())
}

/// `cargo` of the nightly toolchain, run through rustup from the workspace
/// root.
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.current_dir(run::workspace_root())
        .args(["run", "nightly", "cargo"]);
    // The outer `cargo run` pins its own toolchain for children; nightly
    // must pick its own cargo and rustc.
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "RUSTC_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// The long run (`--long`): the model and thread stress tests at full size
/// in release, the loom models, Miri on the allocator's unit tests and
/// ThreadSanitizer on the thread and fault tests. Each tool gets its own
/// target directory so their flags do not rebuild each other's artifacts.
fn long_steps(steps: &mut Vec<Step>, totals: &mut Totals) {
    steps.push(step("long stress", || {
        let mut cmd = run::cargo();
        cmd.args(["test", "--release", "-p", "slabscope"])
            .args(["--test", "model", "--test", "threads"])
            .env(LONG_ENV, "1");
        counted(cmd, totals)
    }));
    steps.push(step("loom", || {
        let mut cmd = run::cargo();
        cmd.args(["test", "--release", "-p", "slabscope", "--lib", "loom"])
            .env("RUSTFLAGS", "--cfg loom")
            .env(
                "CARGO_TARGET_DIR",
                run::workspace_root().join("target/loom"),
            );
        counted(cmd, totals)
    }));
    steps.push(step("miri", || {
        setup::ensure_nightly_component("miri")?;
        let mut cmd = nightly_cargo();
        // The USDT sites are inline assembly, which Miri cannot run; the
        // grow workers live until exit, which Miri would call a leak.
        cmd.args([
            "miri",
            "test",
            "-p",
            "slabscope",
            "--no-default-features",
            "--lib",
        ])
        .env("MIRIFLAGS", "-Zmiri-ignore-leaks")
        .env(
            "CARGO_TARGET_DIR",
            run::workspace_root().join("target/miri"),
        );
        counted(cmd, totals)
    }));
    steps.push(step("thread sanitizer", || {
        let mut cmd = nightly_cargo();
        cmd.args([
            "test",
            "-Zbuild-std",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .args(["-p", "slabscope", "--test", "threads", "--test", "faults"])
        // The default sizes: TSan slows the threads test ~50x, and races
        // show in thousands of operations as well as in millions.
        .env_remove(LONG_ENV)
        // ThreadSanitizer cannot see the ordering the kernel gives
        // restartable sequences (two threads on one CPU are separated by a
        // context switch), so it would report every object that crosses an
        // rseq magazine; run the locked magazines, whose atomics it sees.
        // The rseq protocol has its own tests (tests/preemption.rs, rseq).
        .env("SLABSCOPE_MAGAZINE_RSEQ", "0")
        .env("RUSTFLAGS", "-Zsanitizer=thread")
        .env(
            "CARGO_TARGET_DIR",
            run::workspace_root().join("target/tsan"),
        );
        counted(cmd, totals)
    }));
}

/// `cargo test` on the default members, every test binary even after one
/// fails, so one CI run shows every failure.
fn cargo_test(totals: &mut Totals) -> Result<()> {
    let mut cmd = run::cargo();
    cmd.args(["test", "--no-fail-fast"]).env_remove(LONG_ENV);
    counted(cmd, totals)
}

/// Runs a test command with its stdout streamed through, counting its
/// `test result:` lines into `totals`.
fn counted(mut cmd: Command, totals: &mut Totals) -> Result<()> {
    println!("$ {}", run::display(&cmd));
    let before = *totals;
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", run::display(&cmd)))?;
    let stdout = child.stdout.take().expect("stdout was piped");
    let mut out = std::io::stdout();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the test output")?;
        totals.add_line(&line);
        // A closed stdout (e.g. `| head`) must not hide the result: keep
        // reading and counting.
        let _ = writeln!(out, "{line}");
    }
    let status = child.wait().context("waiting for the tests")?;
    if !status.success() {
        bail!(
            "tests failed ({status}): {} test(s) failed; see the output above",
            totals.failed - before.failed
        );
    }
    if totals.suites == before.suites {
        bail!("no `test result:` line was printed: no test ran");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_result_lines_and_ignore_the_rest() {
        let mut t = Totals::default();
        for line in [
            "running 3 tests",
            "test a ... ok",
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; \
             finished in 0.00s",
            "test result: FAILED. 7 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; \
             finished in 1.20s",
            "   Doc-tests slabscope",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; \
             finished in 0.00s",
            "test something named test result: ... ok",
        ] {
            t.add_line(line);
        }
        assert_eq!(
            t,
            Totals {
                passed: 10,
                failed: 2,
                ignored: 1,
                suites: 3
            }
        );
    }
}
