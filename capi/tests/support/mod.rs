//! Helpers shared by the C library's integration tests.

use std::path::PathBuf;

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
        "libslabscope.so not found next to {}: build it with `cargo build -p slabscope-capi`",
        exe.display()
    );
}
