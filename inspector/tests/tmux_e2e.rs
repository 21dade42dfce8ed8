//! End to end: the real `slabscope` binary, in tmux, against the real demo
//! workload. Needs root (eBPF): without it the test says so on stderr and
//! checks nothing. As root, a missing tmux or demo binary is a failure.
//!
//! The demo is found through `SLABSCOPE_DEMO` (a path), else as `demo` among
//! the target directory's binaries and examples.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Says why the test checks nothing, straight to stderr: the test harness
/// captures `eprintln!` of passing tests, and a skip must not be silent.
fn skip(why: &str) {
    use std::io::Write as _;
    let line = format!("\n*** SKIPPED tmux end-to-end test: {why} ***\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn find_demo() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SLABSCOPE_DEMO") {
        return Some(PathBuf::from(p));
    }
    // The slabscope binary lives in <target>/<profile>/.
    let bin = Path::new(env!("CARGO_BIN_EXE_slabscope"));
    let profile_dir = bin.parent()?;
    let target_dir = profile_dir.parent()?;
    ["debug", "release"]
        .iter()
        .flat_map(|p| {
            [
                target_dir.join(p).join("demo"),
                target_dir.join(p).join("examples").join("demo"),
            ]
        })
        .find(|p| p.is_file())
}

/// Kills the demo and the tmux session on every way out of the test.
struct Cleanup {
    demo: Child,
    session: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .stderr(Stdio::null())
            .status();
        let _ = self.demo.kill();
        let _ = self.demo.wait();
    }
}

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .expect("running tmux");
    assert!(
        out.status.success(),
        "tmux {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn screen(session: &str) -> String {
    tmux(&["capture-pane", "-p", "-t", session])
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<String>) -> String {
    let start = Instant::now();
    loop {
        if let Some(s) = f() {
            return s;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        sleep(Duration::from_millis(200));
    }
}

/// The numbers in the cache table's rows.
fn table_numbers(screen: &str, names: &[String]) -> Vec<String> {
    screen
        .lines()
        .filter(|l| names.iter().any(|n| l.contains(n.as_str())))
        .flat_map(|l| {
            l.split_whitespace()
                .filter(|w| w.parse::<u64>().is_ok())
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn inspector_shows_the_demo_live() {
    if effective_uid() != Some(0) {
        return skip("not root (attaching eBPF programs needs CAP_BPF and CAP_PERFMON)");
    }
    // As root everything this test needs is there after `cargo xtask setup`
    // and a whole-workspace `cargo test` (which builds the demo example):
    // a missing piece is a failure, not a quiet skip.
    assert!(
        have("tmux"),
        "tmux is not installed: run `cargo xtask setup`"
    );
    let demo = find_demo().expect(
        "no demo binary under target/: run the whole `cargo test` (it builds \
         the allocator's examples), or set SLABSCOPE_DEMO to its path",
    );
    let slabscope = env!("CARGO_BIN_EXE_slabscope");

    let child = Command::new(&demo)
        .env("SLABSCOPE_STATS_INTERVAL_MS", "200")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", demo.display()));
    let pid = child.id();
    let session = format!("slabscope-e2e-{pid}");
    let _cleanup = Cleanup {
        demo: child,
        session: session.clone(),
    };

    // --once: the /proc/spl/kmem/slab text, with the demo's caches.
    let once = Command::new(slabscope)
        .args(["--pid", &pid.to_string(), "--once", "--timeout", "20"])
        .output()
        .expect("running slabscope --once");
    let text = String::from_utf8_lossy(&once.stdout).into_owned();
    assert!(
        once.status.success(),
        "slabscope --once failed: {}",
        String::from_utf8_lossy(&once.stderr)
    );
    assert!(
        text.starts_with(slabscope_probes::stats::PROC_SLAB_HEADER),
        "{text}"
    );
    let names: Vec<String> = text
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(!names.is_empty(), "--once printed no cache:\n{text}");

    // --json: one document naming the same caches.
    let json = Command::new(slabscope)
        .args(["--pid", &pid.to_string(), "--json", "--timeout", "20"])
        .output()
        .expect("running slabscope --json");
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("--json prints JSON");
    for n in &names {
        assert!(
            doc["caches"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == n.as_str()),
            "{n} missing from --json"
        );
    }

    // The live view.
    let cmd = format!("{slabscope} --pid {pid} -d 0.3");
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "45",
        &cmd,
    ]);
    let first = wait_for(
        "the demo's caches on screen",
        Duration::from_secs(20),
        || {
            // The names also appear in the event log, which may fill before
            // the first sample draws the table: wait for the table's header.
            let s = screen(&session);
            (s.contains("slabsize") && names.iter().all(|n| s.contains(n.as_str()))).then_some(s)
        },
    );
    for header in [
        "name", "flags", "size", "alloc", "slabsize", "objsize", "total", "max", "dlock", "objs",
    ] {
        assert!(
            first.contains(header),
            "column header {header} missing:\n{first}"
        );
    }
    assert!(first.contains(&format!("pid {pid}: running")), "{first}");
    let before = table_numbers(&first, &names);
    wait_for("the counts to change", Duration::from_secs(20), || {
        let now = table_numbers(&screen(&session), &names);
        (now != before).then_some(String::new())
    });

    // q quits and the pane's process ends.
    tmux(&["send-keys", "-t", &session, "q"]);
    wait_for("slabscope to quit on q", Duration::from_secs(5), || {
        let alive = Command::new("tmux")
            .args(["has-session", "-t", &session])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        (!alive).then_some(String::new())
    });
}
