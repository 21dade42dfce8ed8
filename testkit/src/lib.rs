//! Helpers shared by slabscope's integration tests across crates: one
//! definition of each, so a fix to how a test waits for bpftrace or reads a
//! child's abort reaches every test that does it.
//!
//! - [`child`]: running a scenario in a child process, for the ones that
//!   must abort (an abort cannot be caught in-process);
//! - [`trace`]: root checks that skip loudly, tracers (`sh -c` around
//!   bpftrace) attached to a target, and a child killed when the test ends;
//! - [`readme_sh_lines`] and [`cdylib_dir`]: what the README prints, and
//!   where cargo put a shared library.

pub mod child;
pub mod trace;

use std::path::{Path, PathBuf};

/// The lines of the ```` ```sh ```` blocks of section `## {title}` of the
/// README at the repository's root (`workspace_root`), exactly as printed.
///
/// # Panics
/// When the README cannot be read or has no such section.
pub fn readme_sh_lines(workspace_root: &Path, title: &str) -> Vec<String> {
    let path = workspace_root.join("README.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with(title))
        .unwrap_or_else(|| panic!("README has no '## {title}' section"));
    let mut lines = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = !in_block && line == "```sh";
        } else if in_block {
            lines.push(line.to_owned());
        }
    }
    lines
}

/// The directory holding the shared library `file` that cargo built for
/// this test run: the test executable's `deps/` or the profile directory
/// above it.
///
/// # Panics
/// When neither holds it, saying to build `package`.
pub fn cdylib_dir(file: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps directory").to_path_buf();
    let profile = deps.parent().expect("profile directory").to_path_buf();
    for dir in [deps, profile] {
        if dir.join(file).exists() {
            return dir;
        }
    }
    panic!(
        "{file} not found next to {}: build it with `cargo build -p {package}`",
        exe.display()
    );
}
