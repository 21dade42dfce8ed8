//! Helpers shared by the collector's integration tests: finding (building) the
//! probe fixture, root checks, and parsing the fixture's report.
#![allow(dead_code, reason = "each test crate uses a different subset")]

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::OnceLock,
};

/// The profile directory of this test binary (`target/<profile>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("locating the test binary");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary is not in target/<profile>/deps")
        .to_path_buf()
}

/// Path of the built `probe_fixture` example, building it if needed.
/// `cargo test` builds examples, but `cargo test --test <name>` does not, so
/// this runs `cargo build --example probe_fixture` (a no-op when it is fresh).
pub fn fixture() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let profile = profile_dir();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "slabscope-inspector",
            "--example",
            "probe_fixture",
        ]);
        if profile.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if let Some(target_dir) = profile.parent() {
            cmd.arg("--target-dir").arg(target_dir);
        }
        let status = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo to build the probe fixture");
        assert!(
            status.success(),
            "building the probe_fixture example failed"
        );
        let path = profile.join("examples/probe_fixture");
        assert!(path.is_file(), "{} was not built", path.display());
        path
    })
    .clone()
}

/// True when running as root; otherwise prints why the test is skipped.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!();
    eprintln!("==================================================================");
    eprintln!("SKIPPED {test}: loading eBPF programs and attaching uprobes needs");
    eprintln!("root (CAP_BPF + CAP_PERFMON). Run the root tests with sudo.");
    eprintln!("==================================================================");
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
        let mut child = Command::new(fixture())
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

    /// Lets the fixture fire, waits for it to exit, and returns its report.
    pub fn go(mut self) -> Report {
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
        Report::parse(&text)
    }
}

/// What the fixture says it fired, per cache id.
#[derive(Debug, Default)]
pub struct Report {
    pub snapshots: BTreeMap<u64, String>,
    pub counters: BTreeMap<u64, String>,
    pub destroyed: BTreeMap<u64, bool>,
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
                _ => panic!("unexpected fixture line {line:?}"),
            }
        }
        assert!(r.fired > 0, "the fixture reported no hits:\n{text}");
        r
    }
}
