//! The README's "Observe any program" one-liner, run exactly as printed
//! against a C program on the preloaded library: the size classes its
//! allocations grow are the ones it prints. Needs root and bpftrace
//! (`cargo xtask setup` installs it); skips loudly without root.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

fn readme_oneliners() -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Observe any program"))
        .expect("README has a '## Observe any program' section");
    let mut lines = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = !in_block && line == "```sh";
        } else if in_block && line.starts_with("bpftrace ") {
            lines.push(line.to_string());
        }
    }
    assert_eq!(lines.len(), 1, "one bpftrace one-liner in the section");
    lines
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Perf event descriptors `pid` and its children hold.
fn perf_fds(pid: u32) -> usize {
    let mut pids = vec![pid];
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for e in procs.flatten() {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
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

/// Kills the child when the test ends, passing or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_one_liner_shows_which_size_classes_grow() {
    let oneliners = readme_oneliners();
    if !is_root() {
        let _ = std::io::stderr().lock().write_all(
            b"\n==================================================================\n\
              SKIPPED the_readme_one_liner_shows_which_size_classes_grow: bpftrace\n\
              needs root. Run the malloc tests with sudo.\n\
              ==================================================================\n",
        );
        return;
    }
    let exe = common::compile("tests/c/grow.c", "malloc_grow", &[]);
    let mut program = Killed(
        common::preloaded(&exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start grow"),
    );
    let mut out = BufReader::new(program.0.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read ready");
    assert_eq!(line, "ready\n");
    let mut tracer = Killed(
        Command::new("sh")
            .arg("-c")
            .arg(&oneliners[0])
            .env("PID", program.0.id().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sh"),
    );
    // Attached once its perf events stop changing for half a second.
    let t0 = Instant::now();
    let (mut last, mut since) = (0, Instant::now());
    loop {
        let n = perf_fds(tracer.0.id());
        if n != last {
            (last, since) = (n, Instant::now());
        } else if n > 0 && since.elapsed() > Duration::from_millis(500) {
            break;
        }
        if let Ok(Some(status)) = tracer.0.try_wait() {
            let mut err = String::new();
            let _ = tracer
                .0
                .stderr
                .take()
                .expect("piped")
                .read_to_string(&mut err);
            panic!("bpftrace ended before attaching ({status}): {err}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "bpftrace did not attach: {n} perf events"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    program
        .0
        .stdin
        .take()
        .expect("piped")
        .write_all(b"go\n")
        .expect("start the program");
    line.clear();
    out.read_line(&mut line).expect("read done");
    assert_eq!(line, "done\n");
    assert!(program.0.wait().expect("wait").success());
    // bpftrace prints its map and exits with the traced process.
    let mut printed = String::new();
    tracer
        .0
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut printed)
        .expect("bpftrace output");
    let grown = |class: &str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(&format!("@slabs_added[{class}]: ")))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    // 20000 objects of 104 bytes need more than 100 slabs of 4 KiB; 2000
    // of 3072 more than 100 slabs of any size the class uses.
    assert!(grown("kmem_alloc_104") >= 20, "kmem_alloc_104:\n{printed}");
    assert!(
        grown("kmem_alloc_3072") >= 20,
        "kmem_alloc_3072:\n{printed}"
    );
}
