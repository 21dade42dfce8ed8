//! `slabscope --pid N --json` carries the eBPF program's timing histograms
//! of each cache: here of a target whose every grow is slowed to 60 ms.
//! Needs root; skipped loudly otherwise.

mod schema_support;
mod serve_support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serve_support::*;

#[test]
fn json_carries_grow_deadlock_and_emergency_histograms() {
    let _serial = serial();
    if !root_or_skip("json_carries_grow_deadlock_and_emergency_histograms") {
        return;
    }
    let mut target = Target::start_with(&["--faults"]);
    let pid = target.pid().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_slabscope"));
    cmd.args(["--pid", &pid, "--json", "-d", "200ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut inspector = Guard::spawn(&mut cmd, "slabscope --json");
    // It says on stderr when every probe is attached.
    let mut stderr = BufReader::new(inspector.child.stderr.take().expect("piped"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("reading stderr");
    assert!(line.contains("tracing pid"), "{line}");
    let stats = target.go();
    let emergency = target.json_line()["emergency_allocs"].as_u64().unwrap();
    target.close_stdin();

    // JSON lines until the target exits; the last one is its final state.
    let stdout = BufReader::new(inspector.child.stdout.take().expect("piped"));
    let start = Instant::now();
    let mut last = None;
    for l in stdout.lines() {
        last = Some(l.expect("a line"));
        assert!(start.elapsed() < Duration::from_mins(1), "no end in sight");
    }
    let last: serde_json::Value =
        serde_json::from_str(&last.expect("one JSON line at least")).expect("JSON");
    // Histograms and all: the real output is what the schema says.
    schema_support::assert_matches_schema(&last);

    let mut lifetimes = 0;
    for c in stats.as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let cache = last["caches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == c["id"])
            .unwrap_or_else(|| panic!("{name} is missing from {last}"));
        let hist = |kind: &str| {
            cache["histograms"]
                .as_array()
                .and_then(|hs| hs.iter().find(|h| h["kind"] == kind))
                .cloned()
        };
        let grows = c["slab_create"].as_u64().unwrap() + c["slab_fail"].as_u64().unwrap();
        let grow = hist("grow").unwrap_or_else(|| panic!("{name}: no grow histogram"));
        assert_eq!(grow["count"].as_u64(), Some(grows), "{name}: {grow}");
        // Every grow took the injected 60 ms at least.
        let shortest = grow["buckets"][0]["lt_seconds"].as_f64().unwrap();
        assert!(shortest > 0.06, "{name}: a grow under 60 ms: {grow}");
        assert!(grow["p99_lt_seconds"].as_f64().unwrap() >= shortest);
        let spells = hist("deadlocked").map_or(0, |h| h["count"].as_u64().unwrap());
        assert!(spells >= 1, "{name}: no DEADLOCKED spell timed");
        lifetimes += hist("emergency_lifetime").map_or(0, |h| h["count"].as_u64().unwrap());
    }
    assert_eq!(lifetimes, emergency, "one lifetime per emergency object");
}
