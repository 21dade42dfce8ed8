//! Quiets the nested eBPF build. aya-build forwards every line the nested
//! cargo prints as a `cargo:warning`, so a normal build of the inspector
//! showed dozens of `warning: slabscope-inspector@0.1.0: Compiling ...`
//! lines. [`capture_stdout`] runs aya-build with this process's stdout (where
//! build scripts talk to cargo) redirected to a file, and [`forward`] passes
//! on every line but cargo's progress: real warnings and errors of the eBPF
//! build still reach the user, as do the `rerun-if` instructions.
//!
//! Shared by `build.rs` and the test that breaks a scratch copy of the
//! eBPF crate on purpose (`tests/ebpf_build_errors.rs`).

use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::Path;

/// Cargo's progress lines, which say nothing when the build succeeds.
const PROGRESS: [&str; 11] = [
    "Compiling ",
    "Checking ",
    "Fresh ",
    "Finished ",
    "Blocking waiting for file lock",
    "Updating ",
    "Locking ",
    "Adding ",
    "Downloading ",
    "Downloaded ",
    "Running ",
];

/// Whether `line` (a line a build script printed) is a forwarded progress
/// line of the nested cargo, or an empty forwarded line.
pub fn is_progress(line: &str) -> bool {
    let Some(text) = line
        .strip_prefix("cargo:warning=")
        .or_else(|| line.strip_prefix("cargo::warning="))
    else {
        return false;
    };
    let text = text.trim();
    text.is_empty() || PROGRESS.iter().any(|p| text.starts_with(p))
}

/// The lines of `captured` to pass on to cargo.
pub fn forward(captured: &str) -> Vec<&str> {
    captured.lines().filter(|l| !is_progress(l)).collect()
}

/// Runs `f` with file descriptor 1 redirected to `path`; returns what `f`
/// returned and what was written to stdout meanwhile.
pub fn capture_stdout<T>(path: &Path, f: impl FnOnce() -> T) -> io::Result<(T, String)> {
    let file = File::create(path)?;
    io::stdout().flush()?;
    // SAFETY: dup has no memory-safety preconditions; fd 1 is open (cargo
    // reads a build script's stdout).
    let saved = unsafe { libc::dup(1) };
    if saved < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are open; dup2 only replaces fd 1, which
    // `saved` keeps a copy of.
    if unsafe { libc::dup2(file.as_raw_fd(), 1) } < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: `saved` is a descriptor this function opened.
        unsafe { libc::close(saved) };
        return Err(e);
    }
    let result = f();
    let flushed = io::stdout().flush();
    // SAFETY: `saved` is the original stdout, open until closed below.
    let restored = unsafe { libc::dup2(saved, 1) };
    // SAFETY: `saved` is a descriptor this function opened, not used again.
    unsafe { libc::close(saved) };
    if restored < 0 {
        return Err(io::Error::last_os_error());
    }
    flushed?;
    drop(file);
    Ok((result, std::fs::read_to_string(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_progress_keeps_diagnostics() {
        let captured = "cargo:rerun-if-changed=/src/ebpf\n\
                        cargo:warning=   Compiling core v0.0.0 (/rust/library/core)\n\
                        cargo:warning=    Finished `release` profile [optimized] target(s) in 41.08s\n\
                        cargo:warning=\n\
                        cargo:warning=error: deliberate\n\
                        cargo:warning= --> src/main.rs:1:1\n\
                        cargo:warning=warning: unused variable: `x`\n";
        assert_eq!(
            forward(captured),
            [
                "cargo:rerun-if-changed=/src/ebpf",
                "cargo:warning=error: deliberate",
                "cargo:warning= --> src/main.rs:1:1",
                "cargo:warning=warning: unused variable: `x`",
            ]
        );
    }
}
