//! Helpers shared by the allocator's integration tests.
#![allow(dead_code, reason = "each test crate uses a different subset")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The directory holding the `libslabscope.so` cargo built for this test run.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps directory").to_path_buf();
    for dir in [
        deps.clone(),
        deps.parent().expect("profile directory").to_path_buf(),
    ] {
        if dir.join("libslabscope.so").exists() {
            return dir;
        }
    }
    panic!(
        "libslabscope.so not found next to {}: build the cdylib with `cargo build -p slabscope`",
        exe.display()
    );
}

/// Polls `cond` every 2 ms until it holds; fails after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}
