//! Runs every bpftrace one-liner of the README, exactly as printed, against
//! the deterministic `workload` example, and checks what each prints against
//! the workload's own report.
//!
//! The one-liners are read from the README's "bpftrace one-liners" section,
//! not kept here a second time: a line the checks below do not recognise
//! fails the test, so a new one-liner cannot go untested.
//!
//! The worked example of docs/PROBES.md that reads the snapshot struct
//! through `#include <slabscope.h>` runs the same way.
//!
//! Needs root and bpftrace (`cargo xtask setup` installs it); without root it
//! says so loudly and checks nothing.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use slabscope_testkit::readme_sh_lines;
use slabscope_testkit::trace::{is_root, lines_of, skip_loudly, wait_attached};

/// The workload's JSON report: `final` holds the published statistics of
/// the caches still alive, `expected` the probe hits each cache's operations
/// caused (named like `slabscope_probes::CacheCounters`).
struct Report {
    final_stats: Vec<Value>,
    expected: Vec<Value>,
}

impl Report {
    /// Names of every cache the workload created.
    fn names(&self) -> Vec<String> {
        self.expected
            .iter()
            .map(|c| c["name"].as_str().expect("names are strings").to_string())
            .collect()
    }

    /// Probe hits (or sums) `counter` of cache `name`.
    fn count(&self, name: &str, counter: &str) -> u64 {
        self.expected
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("workload reported no cache {name}"))["counters"][counter]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}.counters.{counter} is not a number"))
    }

    /// Final statistic `field` of cache `name`, if it is still alive.
    fn stat(&self, name: &str, field: &str) -> Option<u64> {
        let c = self.final_stats.iter().find(|c| c["name"] == name)?;
        Some(
            c[field]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}.{field} is not a number")),
        )
    }
}

fn readme_oneliners() -> Vec<String> {
    // Every line of the section's ```sh blocks.
    let lines = readme_sh_lines(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
        "bpftrace one-liners",
    );
    assert!(
        lines.len() >= 6,
        "the README should print at least six one-liners, found {}",
        lines.len()
    );
    lines
}

fn example(name: &str) -> PathBuf {
    // Integration tests live in target/<profile>/deps; examples beside it.
    let mut p = std::env::current_exe().expect("test binary path");
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("examples").join(name)
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `oneliner` against a fresh workload; returns bpftrace's stdout and
/// the workload's report.
fn trace(oneliner: &str) -> (String, Report) {
    let mut workload = Command::new(example("workload"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {} ({e}): cargo test builds the examples unless --test narrows it; add --examples", example("workload").display()));
    let wl_out = lines_of(workload.stdout.take().expect("piped"));
    let ready = wl_out
        .recv_timeout(Duration::from_secs(20))
        .expect("the workload prints 'ready <pid>'");
    let pid: u32 = ready
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected workload line {ready:?}"));

    let mut tracer = Command::new("sh")
        .arg("-c")
        .arg(oneliner)
        .env("PID", pid.to_string())
        // From the repository's root, as the docs say (`-I include`).
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting sh");
    let out = lines_of(tracer.stdout.take().expect("piped"));
    let tracer_err = lines_of(tracer.stderr.take().expect("piped"));
    let mut collected = String::new();
    loop {
        match out.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.starts_with("Attaching ") => break,
            Ok(line) => {
                collected.push_str(&line);
                collected.push('\n');
            }
            Err(_) => {
                kill(&mut tracer);
                kill(&mut workload);
                let errs: Vec<String> = tracer_err.try_iter().collect();
                panic!(
                    "bpftrace did not attach within 30 s:\n{oneliner}\nstdout: {collected}\nstderr: {}",
                    errs.join("\n")
                );
            }
        }
    }

    // bpftrace prints "Attaching" before it attaches: wait for its perf
    // event descriptors (one per attached probe) to stop appearing.
    wait_attached(&mut tracer);

    let mut stdin = workload.stdin.take().expect("piped");
    stdin.write_all(b"go\n").expect("releasing the workload");
    drop(stdin);
    let status = workload.wait().expect("waiting for the workload");
    let json: String = wl_out.iter().collect();
    assert!(status.success(), "workload failed: {status}");

    // bpftrace exits once its target has, printing its maps.
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        while let Ok(line) = out.recv() {
            text.push_str(&line);
            text.push('\n');
        }
        let _ = done_tx.send(text);
    });
    let rest = done_rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            kill(&mut tracer);
            panic!("bpftrace did not exit after its target did:\n{oneliner}")
        });
    let status = tracer.wait().expect("waiting for bpftrace");
    collected.push_str(&rest);
    assert!(
        status.success(),
        "bpftrace failed ({status}) on\n{oneliner}\nstdout:\n{collected}\nstderr:\n{}",
        tracer_err.try_iter().collect::<Vec<_>>().join("\n")
    );

    let v: Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("workload report is not JSON ({e}): {json}"));
    let list = |k: &str| {
        v[k].as_array()
            .unwrap_or_else(|| panic!("report.{k}"))
            .clone()
    };
    let report = Report {
        final_stats: list("final"),
        expected: list("expected"),
    };
    (collected, report)
}

/// `@map[key]: value` lines, summed per (map, key) over the whole output.
fn map_sums(out: &str) -> BTreeMap<(String, String), u64> {
    let mut sums = BTreeMap::new();
    for (map, key, value) in map_lines(out) {
        *sums.entry((map, key)).or_default() += value;
    }
    sums
}

/// Every `@map[key]: value` line of bpftrace's output, in order.
fn map_lines(out: &str) -> impl Iterator<Item = (String, String, u64)> + '_ {
    out.lines().filter_map(|line| {
        let (map, rest) = line.strip_prefix('@')?.split_once('[')?;
        let (key, value) = rest.split_once("]: ")?;
        let value = value.trim().parse::<u64>().ok()?;
        Some((map.to_string(), key.to_string(), value))
    })
}

/// Per map and key, the last value printed (for maps of running totals).
fn map_lasts(out: &str) -> BTreeMap<(String, String), u64> {
    let mut lasts = BTreeMap::new();
    for (map, key, value) in map_lines(out) {
        lasts.insert((map, key), value);
    }
    lasts
}

/// Per key of histogram `map`, the sum of its bucket counts.
fn hist_counts(out: &str, map: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix(&format!("@{map}[")) {
            current = rest.split_once("]:").map(|(k, _)| k.to_string());
            continue;
        }
        if let (Some(key), true) = (&current, line.starts_with('[')) {
            let n: u64 = line
                .split(')')
                .nth(1)
                .and_then(|r| r.split('|').next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("unparsable histogram line {line:?}"));
            *counts.entry(key.clone()).or_default() += n;
        } else if !line.trim().is_empty() {
            current = None;
        }
    }
    counts
}

fn get(sums: &BTreeMap<(String, String), u64>, map: &str, key: &str) -> u64 {
    sums.get(&(map.to_string(), key.to_string()))
        .copied()
        .unwrap_or(0)
}

fn check(oneliner: &str, out: &str, r: &Report) {
    let sums = map_sums(out);
    let names = r.names();
    let probe = |p: &str| {
        oneliner.contains(&format!("slabscope:{p} "))
            || oneliner.contains(&format!("slabscope:{p},"))
    };
    if probe("grow_start") && probe("grow_done") {
        let counts = hist_counts(out, "grow_us");
        for n in &names {
            assert_eq!(
                counts.get(n).copied().unwrap_or(0),
                r.count(n, "grows"),
                "grow latency samples of {n}:\n{out}"
            );
        }
    } else if probe("grow_start") {
        // Running totals, printed every second and at exit: the last
        // printed value is the total.
        let lasts = map_lasts(out);
        for n in &names {
            assert_eq!(
                get(&lasts, "grows", n),
                r.count(n, "grows"),
                "grows of {n}:\n{out}"
            );
        }
    } else if probe("deadlock") {
        for n in &names {
            let lines: Vec<&str> = out
                .lines()
                .filter(|l| l.ends_with(&format!(" in {n}")))
                .collect();
            let expected = r.count(n, "deadlocks");
            assert_eq!(
                lines.len() as u64,
                expected,
                "deadlock lines of {n}:\n{out}"
            );
            if expected > 0 {
                assert!(
                    lines
                        .last()
                        .unwrap()
                        .contains(&format!("deadlock #{expected} in")),
                    "the last deadlock of {n} is #{expected}:\n{out}"
                );
            }
        }
    } else if probe("emergency_alloc") && probe("emergency_free") {
        for n in &names {
            let allocs = r.count(n, "emergency_allocs");
            let key = ("live_emergency".to_string(), n.clone());
            if allocs > 0 {
                let live = allocs - r.count(n, "emergency_frees");
                assert_eq!(
                    sums.get(&key).copied(),
                    Some(live),
                    "live emergency objects of {n}:\n{out}"
                );
                if let Some(final_live) = r.stat(n, "obj_emergency") {
                    assert_eq!(live, final_live, "{n}: the report disagrees with itself");
                }
            } else {
                assert!(
                    !sums.contains_key(&key),
                    "{n} had no emergency objects:\n{out}"
                );
            }
        }
    } else if probe("reap") {
        for n in &names {
            assert_eq!(
                get(&sums, "reaps", n),
                r.count(n, "reaps"),
                "reaps of {n}:\n{out}"
            );
            assert_eq!(
                get(&sums, "slabs_released", n),
                r.count(n, "reap_slabs_released"),
                "slabs released by reaps of {n}:\n{out}"
            );
        }
    } else if probe("slab_reclaim") {
        for n in &names {
            assert_eq!(
                get(&sums, "slabs_unmapped", n),
                r.count(n, "slabs_released"),
                "slabs unmapped by {n}:\n{out}"
            );
        }
    } else if probe("cache_stats") {
        for n in &names {
            let lines: Vec<&str> = out
                .lines()
                .filter(|l| l.split_whitespace().nth(1) == Some(n))
                .collect();
            assert_eq!(
                lines.len() as u64,
                r.count(n, "stats"),
                "cache_stats lines of {n}:\n{out}"
            );
            let (Some(slabs), Some(alloc), Some(total)) = (
                r.stat(n, "slab_total"),
                r.stat(n, "obj_alloc"),
                r.stat(n, "obj_total"),
            ) else {
                continue; // destroyed: nothing published at the end
            };
            let expected = format!("slabs {slabs:>5}  objects {alloc:>7}/{total:<7}");
            let last = lines
                .last()
                .unwrap_or_else(|| panic!("no cache_stats line for {n}:\n{out}"));
            assert!(
                last.ends_with(&expected),
                "{n}: expected {expected:?} at the end of {last:?}"
            );
        }
    } else {
        panic!("no check knows this README one-liner; add one:\n{oneliner}");
    }
}

#[test]
fn readme_bpftrace_oneliners_report_the_workloads_counts() {
    let lines = readme_oneliners();
    if !is_root() {
        skip_loudly(
            "readme_bpftrace_oneliners_report_the_workloads_counts",
            &format!(
                "the README's {} bpftrace one-liners need root (run the tests as root, \
                 as `cargo xtask test` does in CI)",
                lines.len()
            ),
        );
        return;
    }
    let bpftrace = Command::new("bpftrace").arg("--version").output();
    assert!(
        bpftrace.is_ok_and(|o| o.status.success()),
        "bpftrace is not installed: run `cargo xtask setup`"
    );
    for line in &lines {
        let (out, report) = trace(line);
        check(line, &out, &report);
        eprintln!("ok: {line}");
    }
}

/// The ```sh block of docs/PROBES.md's "Reading the snapshot struct": one
/// bpftrace invocation over several lines.
fn probes_md_snapshot_example() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/PROBES.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Reading the snapshot struct"))
        .expect("docs/PROBES.md has a '## Reading the snapshot struct' section");
    let body = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .map(|(body, _)| body.to_string())
        .expect("the section has a ```sh block");
    assert!(
        body.contains("#include <slabscope.h>")
            && body.contains("((struct slabscope_cache_snapshot *)arg"),
        "the example should include the header and cast an argument:\n{body}"
    );
    body
}

#[test]
fn probes_md_snapshot_struct_example_reports_the_workloads_magazines() {
    let script = probes_md_snapshot_example();
    if !is_root() {
        skip_loudly(
            "probes_md_snapshot_struct_example_reports_the_workloads_magazines",
            "docs/PROBES.md's snapshot-struct bpftrace example needs root (run the tests \
             as root, as `cargo xtask test` does in CI)",
        );
        return;
    }
    let (out, r) = trace(&script);
    let mut checked = 0;
    for name in r.names() {
        let (Some(alloc), Some(mags), Some(depot)) = (
            r.stat(&name, "obj_alloc"),
            r.stat(&name, "mag_objs"),
            r.stat(&name, "depot_objs"),
        ) else {
            continue; // destroyed: nothing published at the end
        };
        let last = out
            .lines()
            .rfind(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("no line for {name}:\n{out}"));
        let expected = format!(
            "{name} in_use={} magazines={mags} depot={depot}",
            alloc - mags
        );
        assert_eq!(last, expected, "last snapshot line of {name}:\n{out}");
        checked += 1;
    }
    assert!(checked > 0, "no live cache to check:\n{out}");
}
