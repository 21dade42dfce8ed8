//! Helpers shared by the collector's integration tests: finding (building) the
//! probe fixture, root checks, and parsing the fixture's report.
#![allow(dead_code, reason = "each test crate uses a different subset")]

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::OnceLock,
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use slabscope_inspector::{
    collector::CollectorOptions,
    sample::{Sample, Update},
};
use slabscope_probes::Event;
use slabscope_testkit::profile_dir;

/// Path of the built `probe_fixture` example, building it if needed.
pub fn fixture() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // Same package, same features as this test build: the build shares
        // the test's target directory and is a no-op after `cargo test`.
        let profile = profile_dir();
        let target_dir = profile.parent().expect("target directory").to_path_buf();
        example("slabscope-inspector", "probe_fixture", &target_dir)
    })
    .clone()
}

/// Path of the `recreate` example (a cache recreated at a destroyed one's
/// address), building it if needed.
pub fn recreate() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let target_dir = profile_dir()
            .parent()
            .expect("target directory")
            .to_path_buf();
        example("slabscope-inspector", "recreate", &target_dir)
    })
    .clone()
}

/// Path of the allocator's `workload` example, building it if needed.
pub fn workload() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // Built with the allocator's default features, which differ from the
        // inspector's: a separate target directory keeps that second
        // `slabscope` library away from this build's dependencies (rustdoc
        // would find both and refuse to choose).
        let profile = profile_dir();
        let target_dir = profile
            .parent()
            .expect("target directory")
            .join("collector-workload");
        example("slabscope", "workload", &target_dir)
    })
    .clone()
}

/// Path of `libslabscope.so` (the `slabscope-capi` crate, probes on),
/// building it if needed; in the workload's target directory, for the same
/// reason as [`workload`].
pub fn shared_library() -> PathBuf {
    cdylib("slabscope-capi", "libslabscope.so")
}

/// Builds package `package`'s shared library `file` for the tests.
pub fn cdylib(package: &str, file: &str) -> PathBuf {
    slabscope_testkit::cdylib(package, file)
}

/// Builds example `name` of `package` in `target_dir` with this test's
/// profile. `cargo test` builds the package's own examples, but `cargo test
/// --test <name>` does not, and never another package's; the build is a
/// no-op when the example is fresh.
fn example(package: &str, name: &str, target_dir: &Path) -> PathBuf {
    let profile = profile_dir();
    let release = profile.file_name().is_some_and(|n| n == "release");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "-p", package, "--example", name]);
    if release {
        cmd.arg("--release");
    }
    cmd.arg("--target-dir").arg(target_dir);
    let status = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap_or_else(|e| panic!("running cargo to build example {name}: {e}"));
    assert!(
        status.success(),
        "building example {name} of {package} failed"
    );
    let path = target_dir
        .join(if release { "release" } else { "debug" })
        .join("examples")
        .join(name);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// True when running as root; otherwise prints why the test is skipped.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    // Straight to the stderr handle: the test harness captures `eprintln!`
    // of passing tests, and a skip must be seen.
    let banner = format!(
        "\n==================================================================\n\
         SKIPPED {test}: loading eBPF programs and attaching uprobes needs\n\
         root (CAP_BPF + CAP_PERFMON). Run the collector tests with sudo.\n\
         ==================================================================\n"
    );
    let _ = std::io::stderr().lock().write_all(banner.as_bytes());
    false
}

/// A fixture process waiting for its go line.
pub struct Fixture {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Fixture {
    /// Starts `probe_fixture args...` and waits until it is ready.
    pub fn start(args: &[&str]) -> Fixture {
        Fixture::start_program(fixture(), args)
    }

    /// Starts `program args...` (which speaks the fixture's ready/go
    /// protocol) and waits until it is ready.
    pub fn start_program(program: PathBuf, args: &[&str]) -> Fixture {
        let mut cmd = Command::new(program);
        // The allocator's tunables come from the workload itself, not from
        // whatever SLABSCOPE_* variables the test runs with.
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("SLABSCOPE_") {
                cmd.env_remove(var);
            }
        }
        // cargo's LD_LIBRARY_PATH names its own build directories: a C
        // program must load the libslabscope.so its rpath names.
        cmd.env_remove("LD_LIBRARY_PATH");
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the probe fixture");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("fixture stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("reading the fixture's ready line");
        assert!(line.starts_with("ready "), "unexpected first line {line:?}");
        Fixture {
            child,
            stdin,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the program run, without waiting for it.
    pub fn release(&mut self) {
        let mut stdin = self.stdin.take().expect("released twice");
        stdin.write_all(b"go\n").expect("releasing the fixture");
    }

    /// Kills the program (SIGKILL) and reaps it.
    pub fn kill(mut self) {
        self.child.kill().expect("killing the fixture");
        self.child.wait().expect("reaping the fixture");
    }

    /// Lets the fixture fire, waits for it to exit, and returns its report.
    pub fn go(self) -> Report {
        Report::parse(&self.go_raw())
    }

    /// Lets the program run, waits for it to exit, and returns its output
    /// after the ready line.
    pub fn go_raw(mut self) -> String {
        let mut stdin = self.stdin.take().expect("go() called twice");
        stdin.write_all(b"go\n").expect("releasing the fixture");
        drop(stdin);
        let mut text = String::new();
        for line in (&mut self.stdout).lines() {
            text.push_str(&line.expect("reading the fixture report"));
            text.push('\n');
        }
        let status = self.child.wait().expect("waiting for the fixture");
        assert!(status.success(), "fixture failed: {status}");
        text
    }
}

/// What the fixture says it fired, per cache id.
#[derive(Debug, Default)]
pub struct Report {
    pub snapshots: BTreeMap<u64, String>,
    pub counters: BTreeMap<u64, String>,
    pub destroyed: BTreeMap<u64, bool>,
    /// (kind, values as `{:?}`) of every hit, in firing order.
    pub hits: BTreeMap<u64, Vec<(u32, String)>>,
    /// Hits fired with a snapshot pointer that cannot be read.
    pub unreadable: u64,
    pub fired: u64,
}

impl Report {
    fn parse(text: &str) -> Report {
        let mut r = Report::default();
        for line in text.lines() {
            if let Some(n) = line.strip_prefix("fired ") {
                r.fired = n.parse().expect("fired count");
                continue;
            }
            if let Some(n) = line.strip_prefix("unreadable ") {
                r.unreadable = n.parse().expect("unreadable count");
                continue;
            }
            let mut parts = line.splitn(4, ' ');
            let (Some("cache"), Some(id), Some(what), Some(value)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                panic!("unexpected fixture line {line:?}");
            };
            let id = u64::from_str_radix(id.trim_start_matches("0x"), 16).expect("cache id");
            match what {
                "snapshot" => drop(r.snapshots.insert(id, value.to_owned())),
                "counters" => drop(r.counters.insert(id, value.to_owned())),
                "destroyed" => drop(r.destroyed.insert(id, value == "true")),
                "hit" => {
                    let (kind, values) = value.split_once(' ').expect("hit line");
                    let kind = kind.parse().expect("hit kind");
                    r.hits
                        .entry(id)
                        .or_default()
                        .push((kind, values.to_owned()));
                }
                _ => panic!("unexpected fixture line {line:?}"),
            }
        }
        assert!(r.fired > 0, "the fixture reported no hits:\n{text}");
        r
    }
}

/// The live view of `state` as text, rendered into a `w`x`h` buffer.
pub fn screen(state: &slabscope_inspector::app::State, w: u16, h: u16) -> String {
    use ratatui::{buffer::Buffer, layout::Rect};
    let area = Rect::new(0, 0, w, h);
    let mut buf = Buffer::empty(area);
    slabscope_inspector::ui::render(state, area, &mut buf);
    (0..h)
        .map(|y| {
            let mut line: String = (0..w).map(|x| buf[(x, y)].symbol()).collect();
            line.push('\n');
            line
        })
        .collect()
}

/// How long a collector test waits for an update before failing.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Every update until the collector closes the channel.
pub fn until_closed(rx: &Receiver<Update>) -> Vec<Update> {
    let start = Instant::now();
    let mut out = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(u) => out.push(u),
            Err(RecvTimeoutError::Disconnected) => return out,
            Err(RecvTimeoutError::Timeout) => assert!(
                start.elapsed() < DEADLINE,
                "the collector did not finish in time"
            ),
        }
    }
}

/// Updates until `pred` matches one (returned last).
pub fn until(rx: &Receiver<Update>, mut pred: impl FnMut(&Update) -> bool) -> Vec<Update> {
    let start = Instant::now();
    let mut out = Vec::new();
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        let u = rx.recv_timeout(left).unwrap_or_else(|e| {
            panic!(
                "waiting for an update: {e:?}; got {} updates, last {:?}",
                out.len(),
                out.last()
            )
        });
        let done = pred(&u);
        out.push(u);
        if done {
            return out;
        }
    }
}

/// Collector options of the tests: a 100 ms sample interval.
pub fn opts(ring_bytes: Option<u32>) -> CollectorOptions {
    CollectorOptions {
        interval: Duration::from_millis(100),
        ring_bytes,
    }
}

/// The events among `updates`, in order.
pub fn events(updates: &[Update]) -> Vec<Event> {
    updates
        .iter()
        .filter_map(|u| match u {
            Update::Event(e) => Some(*e),
            _ => None,
        })
        .collect()
}

/// The last sample among `updates`.
pub fn last_sample(updates: &[Update]) -> Sample {
    updates
        .iter()
        .rev()
        .find_map(|u| match u {
            Update::Sample(s) => Some(s.clone()),
            _ => None,
        })
        .expect("the collector sent no sample")
}

/// Waits until `pid` maps a file whose path contains `needle` as code.
///
/// `spawn` returns while the kernel is still mapping the program and its
/// loader, and the loader maps each shared object's first segment
/// read-only before its code; the collector searches only files mapped
/// executable, so waiting for the name alone in `/proc/N/maps` races.
pub fn wait_for_code_of(pid: u32, needle: &str, within: Duration) {
    let t0 = Instant::now();
    while !slabscope_inspector::collector::target::exec_mappings(pid)
        .is_ok_and(|maps| maps.iter().any(|m| m.path.contains(needle)))
    {
        assert!(
            t0.elapsed() < within,
            "pid {pid} mapped no code of a file named like {needle:?} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
