//! Helpers shared by the allocator's integration tests.
#![allow(dead_code, reason = "each test crate uses a different subset")]

use std::ptr::NonNull;
use std::time::{Duration, Instant};

use slabscope::{Cache, os};

/// A pointer that may cross threads (the test owns the object it names).
pub struct Sendable(pub NonNull<u8>);
// SAFETY: the object is owned by whichever thread holds the Sendable.
unsafe impl Send for Sendable {}

/// Frees every object of `objs` into `c`.
pub fn free_all(c: &Cache, objs: Vec<NonNull<u8>>) {
    for p in objs {
        // SAFETY: each object came from `c` and is freed once.
        unsafe { c.free(p) };
    }
}

/// Destroys `c` (waiting for any in-flight grow) and checks that every byte
/// the seam mapped since `base` was returned.
pub fn destroy_and_check_unmapped(c: Cache, base: usize) {
    c.validate().unwrap();
    c.destroy().expect("every object was freed");
    assert_eq!(
        os::mapped_bytes(),
        base,
        "cache {:?} left slab memory mapped after destroy",
        c.name()
    );
}

/// Runs `tests` of this test binary again in a child process with `var`
/// set to `value` (tunables are fixed per process, so a second setting
/// needs a process of its own); checks that every one passed and returns
/// the child's output (`--nocapture`).
pub fn rerun_with_env(var: &str, value: &str, tests: &[&str]) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--exact")
        .args(tests)
        .args(["--nocapture", "--test-threads=1"])
        .env(var, value)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{tests:?} with {var}={value} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = format!("{} passed", tests.len());
    assert!(stdout.contains(&passed), "{stdout}");
    stdout
}

/// Threads of this process whose name starts with `prefix`.
pub fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("reading /proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with(prefix))
        .count()
}

/// Polls `cond` every 2 ms until it holds; fails after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}
