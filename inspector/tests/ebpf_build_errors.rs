//! The inspector's build script quiets the nested eBPF build without
//! hiding its failures. A scratch workspace holds copies of the eBPF and
//! contract crates, with a deliberate compile error added to the eBPF
//! program, and a package whose build script is the inspector's own
//! `build.rs` (and `build/quiet.rs`); `cargo build` of it must fail, show
//! the deliberate error, and show none of the nested cargo's `Compiling`
//! lines.
//!
//! Building the eBPF crate needs the toolchain `cargo xtask setup` installs
//! (nightly with rust-src, bpf-linker); without it the build script fails
//! for that reason instead, so the test skips and says so loudly.

use std::path::{Path, PathBuf};
use std::process::Command;

// Its unit test runs here; the capture itself runs in the scratch build.
#[allow(dead_code, reason = "this test runs the filter's unit test only")]
#[path = "../build/quiet.rs"]
mod quiet;

const DELIBERATE: &str = "deliberate error planted by ebpf_build_errors.rs";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("read directory") {
        let entry = entry.expect("directory entry");
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", path.display()));
        }
    }
}

fn toolchain_present() -> bool {
    let linker = Command::new("bpf-linker").arg("--version").output();
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output();
    linker.is_ok_and(|o| o.status.success()) && nightly.is_ok_and(|o| o.status.success())
}

#[test]
fn a_broken_ebpf_program_still_reaches_the_user_without_the_progress_lines() {
    if !toolchain_present() {
        eprintln!(
            "\n*** SKIPPED a_broken_ebpf_program_still_reaches_the_user_without_the_progress_lines: \
             bpf-linker or the nightly toolchain is missing; run `cargo xtask setup`\n"
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    // Kept between runs (only the sources are replaced) so the nested
    // build's `core` is compiled once.
    let scratch = tmp.join("ebpf-build-errors");
    let ws = scratch.join("ws");
    let _ = std::fs::remove_dir_all(&ws);

    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("root Cargo.toml");
    let manifest: String = manifest
        .lines()
        .map(|l| {
            if l.starts_with("members = ") {
                "members = [\"ebpf\", \"probes\", \"buildcheck\"]"
            } else if l.starts_with("default-members = ") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::create_dir_all(&ws).expect("create scratch workspace");
    std::fs::write(ws.join("Cargo.toml"), manifest + "\n").expect("write Cargo.toml");
    std::fs::copy(root.join("Cargo.lock"), ws.join("Cargo.lock")).expect("copy Cargo.lock");
    copy_dir(&root.join("ebpf"), &ws.join("ebpf"));
    copy_dir(&root.join("probes"), &ws.join("probes"));
    let main = ws.join("ebpf/src/main.rs");
    let mut src = std::fs::read_to_string(&main).expect("read the eBPF program");
    src.push_str(&format!("\ncompile_error!(\"{DELIBERATE}\");\n"));
    std::fs::write(&main, src).expect("plant the error");

    let check = ws.join("buildcheck");
    std::fs::create_dir_all(check.join("src")).expect("create buildcheck");
    std::fs::create_dir_all(check.join("build")).expect("create buildcheck/build");
    std::fs::write(
        check.join("Cargo.toml"),
        "[package]\nname = \"buildcheck\"\nversion.workspace = true\nedition.workspace = true\n\
         publish = false\n\n[build-dependencies]\nanyhow = { workspace = true }\n\
         aya-build = { workspace = true }\nlibc = { workspace = true }\n",
    )
    .expect("write buildcheck/Cargo.toml");
    std::fs::write(check.join("src/lib.rs"), "").expect("write lib.rs");
    let inspector = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(inspector.join("build.rs"), check.join("build.rs")).expect("copy build.rs");
    std::fs::copy(
        inspector.join("build/quiet.rs"),
        check.join("build/quiet.rs"),
    )
    .expect("copy quiet.rs");

    let out = Command::new(env!("CARGO"))
        .args(["build", "-p", "buildcheck"])
        .arg("--target-dir")
        .arg(scratch.join("target"))
        .current_dir(&ws)
        .env_remove("AYA_BUILD_SKIP")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run cargo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the build succeeded despite the planted error:\n{stderr}"
    );
    assert!(
        stderr.contains(DELIBERATE),
        "the eBPF build's error did not reach the user:\n{stderr}"
    );
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning: buildcheck@") && l.contains("Compiling "))
        .collect();
    assert!(
        progress.is_empty(),
        "the nested build's progress was forwarded:\n{}",
        progress.join("\n")
    );
}
