//! `slabscope --once` and `--json` against the real allocator: the deterministic
//! workload (`allocator/examples/workload.rs`) publishes its final statistics
//! and prints them; what the binary printed about the same process must be
//! the same statistics — the `/proc/spl/kmem/slab` text byte for byte, and
//! every field of every cache in the JSON. Needs root; skips loudly without.

mod collector_support;
mod schema_support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use collector_support::{Fixture, root_or_skip};
use serde::Deserialize;
use serde_json::Value;
use slabscope_inspector::order::natural;
use slabscope_probes::stats::{CacheStats, proc_slab_text};

const SLABSCOPE: &str = env!("CARGO_BIN_EXE_slabscope");

#[derive(Deserialize)]
struct Report {
    #[serde(rename = "final")]
    final_stats: Vec<CacheStats>,
}

/// Starts `slabscope args...` and returns once it says it is tracing.
fn attach(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(SLABSCOPE)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting slabscope");
    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = stderr.read_line(&mut line).expect("reading stderr");
        assert!(n > 0, "slabscope ended before attaching:\n{seen}");
        seen.push_str(&line);
        if line.starts_with("slabscope: tracing ") {
            break;
        }
    }
    // Keep draining stderr so slabscope never blocks on it.
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
    });
    (child, seen)
}

/// Runs the workload under `slabscope --pid N extra...`; returns the
/// workload's final statistics, sorted by name as `--once` sorts them
/// (naturally: `a_104` before `a_1024`), and what slabscope printed.
fn run(extra: &[&str]) -> (Vec<CacheStats>, String) {
    let workload = Fixture::start_program(collector_support::workload(), &[]);
    let pid = workload.pid().to_string();
    let mut args = vec!["--pid", pid.as_str()];
    args.extend_from_slice(extra);
    let (mut slabscope, _) = attach(&args);
    let output = workload.go_raw();
    let report: Report = serde_json::from_str(output.trim())
        .unwrap_or_else(|e| panic!("workload output is not its JSON report ({e}):\n{output}"));
    let mut stdout = String::new();
    slabscope
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout)
        .expect("reading slabscope's output");
    let status = slabscope.wait().expect("waiting for slabscope");
    assert!(status.success(), "slabscope {args:?} failed: {status}");
    let mut caches = report.final_stats;
    caches.sort_by(|a, b| natural(&a.name, &b.name));
    assert!(caches.len() >= 2, "the workload keeps several caches alive");
    (caches, stdout)
}

#[test]
fn once_prints_exactly_the_workloads_own_proc_text() {
    if !root_or_skip("once_prints_exactly_the_workloads_own_proc_text") {
        return;
    }
    let (caches, out) = run(&["--once", "--timeout", "20"]);
    // --once orders caches by name: it cannot know their creation order.
    // (`run` sorts the workload's in the same natural order.)
    assert_eq!(out, proc_slab_text(&caches));
}

#[test]
fn json_carries_exactly_the_workloads_own_statistics() {
    if !root_or_skip("json_carries_exactly_the_workloads_own_statistics") {
        return;
    }
    let (caches, out) = run(&["--json", "--timeout", "20"]);
    let doc: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{out}"));
    schema_support::assert_matches_schema(&doc);
    let docs = doc["caches"].as_array().expect("a caches array");
    for want in &caches {
        let got = docs
            .iter()
            .find(|c| c["id"] == want.id)
            .unwrap_or_else(|| panic!("--json has no cache {}:\n{out}", want.name));
        let got: CacheStats = serde_json::from_value(got.clone()).expect("CacheStats fields");
        assert_eq!(&got, want, "statistics of {}", want.name);
    }
}
