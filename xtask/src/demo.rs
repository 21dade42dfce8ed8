//! `cargo xtask demo`: the demo workload under the live inspector.
//!
//! Builds the inspector (`slabscope`) and the allocator's `demo` example in
//! release, starts the workload with its output going to a log file (the
//! inspector owns the terminal), runs `slabscope --pid <demo>` in the
//! foreground (through sudo when not root), and stops the workload when the
//! inspector exits, whatever the reason: a normal quit, an error, or Ctrl-C.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::run::{self, header, note};
use crate::setup;

/// Set by the SIGINT handler while the inspector runs.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Keeps xtask alive through Ctrl-C so it can stop the workload. A handler
/// (unlike SIG_IGN) is reset to the default in exec'd children, so the
/// inspector still reacts to Ctrl-C as it would on its own.
fn catch_sigint() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe;
    // replacing SIGINT's disposition affects no other code of this process.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

/// The running workload; dropping it stops it.
#[derive(Debug)]
struct Workload {
    child: Child,
    log: PathBuf,
}

impl Workload {
    /// SIGTERM, a grace period, then SIGKILL; always reaped.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill has no memory-safety preconditions; the pid is our
            // child, not yet reaped, so it cannot have been reused.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the demo.
pub fn run(seconds: Option<u64>, faults: bool) -> Result<()> {
    setup::run(setup::Mode::Quick)?;
    let problems = setup::kernel_problems();
    if !problems.is_empty() {
        bail!(
            "this kernel cannot run the inspector: {}. Use a kernel with BPF and uprobes",
            problems.join("; ")
        );
    }
    let sudo = if run::is_root() {
        None
    } else {
        Some(run::find_on_path("sudo").context(
            "the inspector needs root (CAP_BPF and CAP_PERFMON) and sudo is not installed: \
             run `cargo xtask demo` as root",
        )?)
    };

    header("demo: building the inspector and the demo workload (release)");
    run::run(run::cargo().args([
        "build",
        "--release",
        "-p",
        "slabscope-inspector",
        "--bin",
        "slabscope",
    ]))
    .context("building the inspector failed")?;
    run::run(run::cargo().args(["build", "--release", "-p", "slabscope", "--example", "demo"]))
        .context("building the demo workload failed")?;
    let release = run::target_dir().join("release");
    let inspector = release.join("slabscope");
    let demo = release.join("examples/demo");

    let mut workload = start_workload(&demo, seconds, faults)?;
    let pid = workload.child.id();
    header("demo: starting the inspector");
    note(format!(
        "demo workload: pid {pid}, {}; its output goes to {}",
        if faults {
            "with slow grows injected (deadlocks, emergency objects)"
        } else {
            "no fault injection"
        },
        workload.log.display()
    ));
    note("Quit the inspector with q; the workload stops with it.");

    catch_sigint();
    let mut cmd = match &sudo {
        Some(sudo) => {
            let mut c = Command::new(sudo);
            c.arg(&inspector);
            c
        }
        None => Command::new(&inspector),
    };
    cmd.args(["--pid", &pid.to_string()]);
    println!("$ {}", run::display(&cmd));
    let status = cmd.status();

    let demo_status = workload.stop();
    header("demo: stopped");
    note(format!(
        "workload pid {pid} {} (output: {})",
        match demo_status {
            Some(s) if s.success() => "finished".to_string(),
            Some(s) => format!("stopped ({s})"),
            None => "could not be reaped".to_string(),
        },
        workload.log.display()
    ));
    if INTERRUPTED.load(Ordering::SeqCst) {
        note("interrupted by Ctrl-C");
    }
    let status = status.with_context(|| format!("could not start {}", inspector.display()))?;
    if !status.success() && !INTERRUPTED.load(Ordering::SeqCst) {
        bail!("the inspector exited with {status}; its message above says why");
    }
    Ok(())
}

fn start_workload(demo: &Path, seconds: Option<u64>, faults: bool) -> Result<Workload> {
    let log = run::target_dir().join("slabscope-demo.log");
    let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let err = file
        .try_clone()
        .with_context(|| format!("opening {} twice", log.display()))?;
    let mut cmd = Command::new(demo);
    if let Some(s) = seconds {
        cmd.args(["--seconds", &s.to_string()]);
    }
    cmd.arg(if faults { "--faults" } else { "--no-faults" });
    header("demo: starting the workload");
    println!("$ {} > {} 2>&1", run::display(&cmd), log.display());
    // Its own process group: Ctrl-C in the terminal reaches the inspector,
    // and xtask stops the workload itself afterwards.
    use std::os::unix::process::CommandExt as _;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", demo.display()))?;
    let mut workload = Workload { child, log };
    // A workload that dies at once (bad tunables, say) would leave the
    // inspector waiting for a process that is gone: check first.
    std::thread::sleep(Duration::from_millis(500));
    if let Ok(Some(status)) = workload.child.try_wait() {
        let text = std::fs::read_to_string(&workload.log).unwrap_or_default();
        bail!(
            "the demo workload exited at once ({status}); it printed:\n{}",
            text.trim_end()
        );
    }
    Ok(workload)
}
