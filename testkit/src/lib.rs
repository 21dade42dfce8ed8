//! Helpers shared by slabscope's integration tests across crates: one
//! definition of each, so a fix to how a test waits for bpftrace or reads a
//! child's abort reaches every test that does it.
//!
//! - [`child`]: running a scenario in a child process, for the ones that
//!   must abort (an abort cannot be caught in-process);
//! - [`trace`]: root checks that skip loudly, tracers (`sh -c` around
//!   bpftrace) attached to a target, and a child killed when the test ends;
//! - [`readme_sh_lines`] and [`cdylib`]: what the README prints, and a
//!   crate's shared library built for the tests.

pub mod child;
pub mod trace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Section `## {title}` of a Markdown `text`: from its title to the next
/// `## ` heading (its `### ` subsections included).
pub fn markdown_section<'a>(text: &'a str, title: &str) -> Option<&'a str> {
    text.split("\n## ").find(|s| s.starts_with(title))
}

/// The lines of the ```` ```sh ```` blocks of section `## {title}` of the
/// README at the repository's root (`workspace_root`), exactly as printed.
///
/// # Panics
/// When the README cannot be read or has no such section.
pub fn readme_sh_lines(workspace_root: &Path, title: &str) -> Vec<String> {
    let path = workspace_root.join("README.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let section = markdown_section(&text, title)
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

/// The profile directory of the running test binary (`target/<profile>`).
///
/// # Panics
/// When the test binary is not in `target/<profile>/deps`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("locating the test binary");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary is not in target/<profile>/deps")
        .to_path_buf()
}

/// Builds package `package`'s shared library `file` (default features, the
/// test's profile) and returns its path.
///
/// A crate's integration tests get its rlib, not its cdylib, and a crate
/// without an rlib (`slabscope-capi`, whose rlib would collide with the
/// allocator's, and `slabscope-malloc`, whose cdylib an rlib would keep
/// from link-time optimization) gets no library built at all; tests of
/// other crates never get one. So it is built here by cargo, in a target
/// directory of its own beside the test's (`target/collector-workload`,
/// shared by every test that asks), where the build is a no-op once it is
/// fresh. Cargo runs once per library and test process; later calls
/// return the path it gave.
///
/// # Panics
/// When cargo cannot build it.
pub fn cdylib(package: &str, file: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<(String, String), PathBuf>> = Mutex::new(BTreeMap::new());
    // Held across the build: a second thread asking for the same library
    // waits for it rather than running cargo again.
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    built
        .entry((package.to_owned(), file.to_owned()))
        .or_insert_with(|| build_cdylib(package, file))
        .clone()
}

/// [`cdylib`]'s build.
fn build_cdylib(package: &str, file: &str) -> PathBuf {
    let profile = profile_dir();
    let release = profile.file_name().is_some_and(|n| n == "release");
    let target_dir = profile
        .parent()
        .expect("target directory")
        .join("collector-workload");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "-p", package, "--lib"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap_or_else(|e| panic!("running cargo to build {file}: {e}"));
    assert!(status.success(), "building {file} failed");
    let path = target_dir
        .join(if release { "release" } else { "debug" })
        .join(file);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}
