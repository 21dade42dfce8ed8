//! Root-only tests and the tracers they start.

use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Whether this process runs as root (loading eBPF programs, and so
/// bpftrace, needs it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Says loudly on stderr that `test` checked nothing, and why: a skip must
/// never pass for a pass.
pub fn skip_loudly(test: &str, why: &str) {
    let bar = "=".repeat(72);
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("\n{bar}\n*** SKIPPED {test}: {why}\n{bar}\n").as_bytes());
}

/// Lines of a child's stream, delivered on a channel by a reader thread.
pub fn lines_of(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Perf event descriptors `pid` and its children hold (a shell may or may
/// not exec bpftrace in its own place).
pub fn perf_fds(pid: u32) -> usize {
    let mut pids = vec![pid];
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for e in procs.flatten() {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // "pid (comm) state ppid ...": the comm may hold spaces.
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, r)| r.split(' ').nth(1));
            if ppid == Some(&pid.to_string()) {
                pids.extend(e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()));
            }
        }
    }
    pids.iter()
        .filter_map(|p| std::fs::read_dir(format!("/proc/{p}/fd")).ok())
        .flat_map(|dir| dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok()))
        .filter(|l| l.to_string_lossy().contains("perf_event"))
        .count()
}

/// Waits until `tracer` (and its children) hold perf event descriptors and
/// their number has not changed for half a second: its probes are attached.
///
/// # Panics
/// When the tracer exits first (with its stderr, if it was piped and not
/// taken) or does not settle within 30 s.
pub fn wait_attached(tracer: &mut Child) {
    let t0 = Instant::now();
    let (mut last, mut since) = (0, Instant::now());
    loop {
        let n = perf_fds(tracer.id());
        if n != last {
            (last, since) = (n, Instant::now());
        } else if n > 0 && since.elapsed() > Duration::from_millis(500) {
            return;
        }
        if let Ok(Some(status)) = tracer.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = tracer.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the tracer ended before attaching ({status}); its stderr:\n{err}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the tracer (pid {}) did not finish attaching: {n} perf events",
            tracer.id()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child killed and reaped when the test ends, passing or not.
#[derive(Debug)]
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
