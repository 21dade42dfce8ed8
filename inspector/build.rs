//! Builds the eBPF programs (`ebpf/`, package `slabscope-ebpf`) with aya-build
//! and leaves the object at `$OUT_DIR/slabscope`, which the collector embeds.
//!
//! The eBPF crate needs the nightly toolchain with `rust-src` (for
//! `-Z build-std=core`) and `bpf-linker`; `cargo xtask setup` installs both.
//! They are checked first so a missing tool fails with that next step rather
//! than with a linker error deep in a nested cargo run.
//!
//! The nested build's progress (`Compiling ...`), which aya-build forwards
//! as cargo warnings, is dropped; its real warnings and errors still show
//! (`build/quiet.rs`).
//!
//! `AYA_BUILD_SKIP=1` skips the eBPF build (for machines that only work on the
//! views); the collector then reports, at run time, that it was built without
//! its eBPF programs.

use std::{env, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};
use aya_build::{Package, Toolchain};

#[path = "build/quiet.rs"]
mod quiet;

const SETUP_HINT: &str = "run `cargo xtask setup` to install it (or set AYA_BUILD_SKIP=1 to \
                          build the inspector without its eBPF collector)";

fn main() -> anyhow::Result<()> {
    println!("cargo::rustc-check-cfg=cfg(slabscope_no_ebpf)");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        println!("cargo:rustc-cfg=slabscope_no_ebpf");
        println!("cargo:warning=AYA_BUILD_SKIP is set: the collector is built without eBPF");
        return Ok(());
    }

    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .join("../ebpf")
        .canonicalize()
        .context("locating the slabscope-ebpf crate next to the inspector")?;
    let probes_dir = manifest_dir
        .join("../probes")
        .canonicalize()
        .context("locating the slabscope-probes crate next to the inspector")?;
    // The eBPF object also depends on the shared contract types.
    println!("cargo:rerun-if-changed={}", probes_dir.display());

    check_toolchain()?;

    let root_dir = ebpf_dir
        .to_str()
        .context("the eBPF crate's path is not UTF-8")?;
    let out_dir = PathBuf::from(env::var("OUT_DIR").context("OUT_DIR")?);
    let (built, captured) = quiet::capture_stdout(&out_dir.join("aya-build.out"), || {
        aya_build::build_ebpf(
            [Package {
                name: "slabscope-ebpf",
                root_dir,
                ..Default::default()
            }],
            Toolchain::default(),
        )
    })
    .context("capturing the eBPF build's output")?;
    for line in quiet::forward(&captured) {
        println!("{line}");
    }
    built.context("building the eBPF programs (package slabscope-ebpf) with aya-build")
}

/// Fails with the next step when bpf-linker or nightly's rust-src is missing.
fn check_toolchain() -> anyhow::Result<()> {
    let linker = Command::new("bpf-linker").arg("--version").output();
    if !linker.is_ok_and(|o| o.status.success()) {
        bail!("bpf-linker was not found in PATH; it links the eBPF programs. {SETUP_HINT}");
    }
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output();
    let sysroot = match sysroot {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        _ => bail!(
            "the nightly Rust toolchain is not installed (the eBPF programs are built with \
             `-Z build-std`). {SETUP_HINT}"
        ),
    };
    let core_src = sysroot.join("lib/rustlib/src/rust/library/core");
    if !core_src.is_dir() {
        bail!(
            "the nightly toolchain lacks the rust-src component ({} is missing), needed to \
             build `core` for the BPF target. {SETUP_HINT}",
            core_src.display()
        );
    }
    Ok(())
}
