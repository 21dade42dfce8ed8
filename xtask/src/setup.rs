//! `cargo xtask setup`: everything slabscope needs on a fresh Debian machine.
//!
//! Every prerequisite is checked first ([`survey`]), cheaply and without
//! root; only what is missing is installed ([`install`]), each step printed
//! with the reason it is needed. Run twice, the second run installs nothing.
//!
//! | what | why | checked with |
//! |---|---|---|
//! | `llvm-22-dev`, `libpolly-22-dev`, `libzstd-dev`, `zlib1g-dev` | `bpf-linker` links LLVM 22 | `dpkg-query` |
//! | `bpftrace` | the README's one-liners and their tests | `dpkg-query` |
//! | `tmux` | the inspector's end-to-end terminal test | `dpkg-query` |
//! | `valgrind` | `cargo xtask bench` counts instructions with callgrind | `dpkg-query` |
//! | `binutils` | `cargo xtask bench` counts the native hit path in `objdump -d` | `dpkg-query` |
//! | `libtcmalloc-minimal4` | `cargo xtask bench` compares with tcmalloc | `dpkg-query` |
//! | `gcc` | the C example test compiles a C user of `include/slabscope.h` | `dpkg-query` |
//! | `prometheus` | `slabscope serve`'s tests: a real Prometheus, and `promtool` (no service left running: `services.rs`) | `dpkg-query` |
//! | `sqlite3`, `redis-server`, `redis-tools` | the real programs of `workloads/`, run on slabscope's malloc by the tests and the bench | `dpkg-query` |
//! | `libjemalloc2`, `libmimalloc2.0` | `cargo xtask bench` preloads jemalloc and mimalloc into those programs | `dpkg-query` |
//! | `g++`, `pkg-config` | the header compiles alone as C++; the install test builds a C program with pkg-config | `dpkg-query` |
//! | `zsh`, `fish` | the inspector's completions are checked with `zsh -n` and `fish -n` | `dpkg-query` |
//! | nightly toolchain + `rust-src` | the eBPF crate builds with `-Z build-std=core` | `rustup` |
//! | `bpf-linker` | links the eBPF object | `bpf-linker --version` |
//!
//! Debian packages need root: `apt-get update` runs once, and only when a
//! package is missing, then `apt-get install -y` with
//! `DEBIAN_FRONTEND=noninteractive`, so CI (no stdin) works. Without root
//! the step stops and prints the `sudo apt-get install` line to run.
//!
//! The kernel is checked too ([`kernel_problems`]): the collector needs the
//! BPF syscall and the uprobe PMU. A kernel without them is reported, with
//! what is missing, but does not fail `setup`: building and the non-root
//! tests still work there.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use crate::run::{self, header, note};

/// How much `setup` says when nothing is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `cargo xtask setup`: every check, one line each.
    Full,
    /// Before `test` and `demo`: one line when everything is there.
    Quick,
}

/// One Debian package and why slabscope needs it.
#[derive(Debug)]
struct AptPackage {
    name: &'static str,
    why: &'static str,
}

const APT_PACKAGES: &[AptPackage] = &[
    AptPackage {
        name: "llvm-22-dev",
        why: "bpf-linker (which links the eBPF object) is built against LLVM 22",
    },
    AptPackage {
        name: "libpolly-22-dev",
        why: "LLVM 22's link line names Polly when bpf-linker links LLVM",
    },
    AptPackage {
        name: "libzstd-dev",
        why: "LLVM 22 links zstd",
    },
    AptPackage {
        name: "zlib1g-dev",
        why: "LLVM 22 links zlib",
    },
    AptPackage {
        name: "bpftrace",
        why: "the README's bpftrace one-liners, and the tests that run them",
    },
    AptPackage {
        name: "tmux",
        why: "the inspector's end-to-end test drives it in tmux",
    },
    AptPackage {
        name: "valgrind",
        why: "`cargo xtask bench` counts instructions per operation with callgrind",
    },
    AptPackage {
        name: "binutils",
        why: "`cargo xtask bench` counts the native hit path's instructions in `objdump -d`",
    },
    AptPackage {
        name: "libtcmalloc-minimal4",
        why: "`cargo xtask bench` compares slabscope with tcmalloc (loaded with dlopen)",
    },
    AptPackage {
        name: "gcc",
        why: "the C example test compiles a C program against include/slabscope.h",
    },
    AptPackage {
        name: "prometheus",
        why: "`slabscope serve`'s tests scrape it with a real Prometheus and lint it with \
              promtool (its system service is left stopped and disabled)",
    },
    AptPackage {
        name: "sqlite3",
        why: "workloads/sqlite.sql runs in sqlite3 on slabscope's malloc (tests and `cargo xtask bench`)",
    },
    AptPackage {
        name: "redis-server",
        why: "workloads/redis.sh runs redis-server on slabscope's malloc (tests and `cargo xtask bench`)",
    },
    AptPackage {
        name: "redis-tools",
        why: "workloads/redis.sh drives redis-server with redis-benchmark and reads back with redis-cli",
    },
    AptPackage {
        name: "libjemalloc2",
        why: "`cargo xtask bench` preloads jemalloc into the programs of workloads/",
    },
    AptPackage {
        name: "libmimalloc2.0",
        why: "`cargo xtask bench` preloads mimalloc into the programs of workloads/ and dlopens it",
    },
    AptPackage {
        name: "g++",
        why: "a test compiles include/slabscope.h alone as C++",
    },
    AptPackage {
        name: "pkg-config",
        why: "the install test builds the README's C program with `pkg-config --cflags --libs slabscope`",
    },
    AptPackage {
        name: "zsh",
        why: "a test checks that the inspector's zsh completion parses (`zsh -n`)",
    },
    AptPackage {
        name: "fish",
        why: "a test checks that the inspector's fish completion parses (`fish -n`)",
    },
];

/// The LLVM that `bpf-linker` is built against.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// `bpf-linker` release line known to build with LLVM 22 and this rustc.
const BPF_LINKER_VERSION: &str = "~0.13";

/// What is there and what is not.
#[derive(Debug)]
pub struct Survey {
    /// `None` when this is not a Debian-like system (no `dpkg-query`).
    apt_missing: Option<Vec<&'static AptPackage>>,
    rustup: bool,
    nightly: bool,
    nightly_rust_src: bool,
    /// `bpf-linker --version` output, if it runs.
    bpf_linker: Option<String>,
    /// `bpf-linker` exists in cargo's bin directory but is not on `PATH`.
    bpf_linker_off_path: Option<PathBuf>,
    kernel: Vec<String>,
}

impl Survey {
    fn complete(&self) -> bool {
        self.apt_missing.as_ref().is_none_or(Vec::is_empty)
            && self.rustup
            && self.nightly
            && self.nightly_rust_src
            && self.bpf_linker.is_some()
    }
}

/// Whether `dpkg-query` reports `package` as installed; `None` without dpkg.
fn dpkg_installed(package: &str) -> Option<bool> {
    if !run::on_path("dpkg-query") {
        return None;
    }
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", package])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    Some(out.status.success() && status_is_installed(&String::from_utf8_lossy(&out.stdout)))
}

/// `dpkg-query -f '${db:Status-Abbrev}'` prints `ii ` for an installed package
/// (desired "install", status "installed"); `hi ` is installed but held.
fn status_is_installed(abbrev: &str) -> bool {
    let b = abbrev.as_bytes();
    b.len() >= 2 && matches!(b[0], b'i' | b'h') && b[1] == b'i'
}

/// `rustup component list --installed` has a line for `component`: either
/// the bare name (`rust-src`) or the name and a target triple
/// (`clippy-x86_64-unknown-linux-gnu`).
pub fn has_component(listing: &str, component: &str) -> bool {
    const ARCHES: &[&str] = &[
        "x86_64",
        "aarch64",
        "i686",
        "i586",
        "arm",
        "thumb",
        "riscv",
        "powerpc",
        "s390x",
        "mips",
        "loongarch",
        "wasm32",
        "sparc",
    ];
    listing.lines().map(str::trim).any(|l| {
        l == component
            || l.strip_prefix(component)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|triple| ARCHES.iter().any(|a| triple.starts_with(a)))
    })
}

/// The installed components of the nightly toolchain, if it is installed.
pub fn nightly_components() -> Option<String> {
    run::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
}

/// Adds `component` to the nightly toolchain unless it is there (the long
/// test run needs `miri`).
pub fn ensure_nightly_component(component: &str) -> Result<()> {
    if nightly_components().is_some_and(|c| has_component(&c, component)) {
        return Ok(());
    }
    header(&format!(
        "setup: adding {component} to the nightly toolchain (the long test run uses it)"
    ));
    run::run(Command::new("rustup").args(["component", "add", component, "--toolchain", "nightly"]))
        .with_context(|| format!("adding {component} to the nightly toolchain"))
}

/// Cargo's bin directory (`$CARGO_HOME/bin`, by default `~/.cargo/bin`).
fn cargo_bin_dir() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    Some(home.join("bin"))
}

/// Checks everything; installs nothing, needs no root.
pub fn survey() -> Survey {
    let apt_missing = if run::on_path("dpkg-query") {
        Some(
            APT_PACKAGES
                .iter()
                .filter(|p| dpkg_installed(p.name) != Some(true))
                .collect(),
        )
    } else {
        None
    };
    let rustup = run::output(Command::new("rustup").arg("--version")).is_some();
    let toolchains = run::output(Command::new("rustup").args(["toolchain", "list"]));
    let nightly = toolchains
        .as_deref()
        .is_some_and(|t| t.lines().any(|l| l.starts_with("nightly-")));
    let nightly_rust_src =
        nightly && nightly_components().is_some_and(|c| has_component(&c, "rust-src"));
    let bpf_linker =
        run::output(Command::new("bpf-linker").arg("--version")).map(|v| v.trim().to_string());
    let bpf_linker_off_path = if bpf_linker.is_none() {
        cargo_bin_dir()
            .map(|d| d.join("bpf-linker"))
            .filter(|p| p.is_file())
    } else {
        None
    };
    Survey {
        apt_missing,
        rustup,
        nightly,
        nightly_rust_src,
        bpf_linker,
        bpf_linker_off_path,
        kernel: kernel_problems(),
    }
}

/// Kernel options the collector needs, and what fails without each.
const KERNEL_OPTIONS: &[(&str, &str)] = &[
    ("CONFIG_BPF_SYSCALL", "eBPF programs cannot be loaded"),
    ("CONFIG_UPROBES", "USDT probes cannot be attached"),
    (
        "CONFIG_UPROBE_EVENTS",
        "the uprobe PMU aya and bpftrace attach through is absent",
    ),
    (
        "CONFIG_BPF_EVENTS",
        "eBPF programs cannot be attached to uprobes",
    ),
];

/// What the kernel lacks for the collector and bpftrace, empty when nothing.
pub fn kernel_problems() -> Vec<String> {
    let config = kernel_config();
    let mut problems = check_kernel_config(config.as_deref());
    if !Path::new("/sys/bus/event_source/devices/uprobe").exists() {
        problems.push(
            "no uprobe PMU (/sys/bus/event_source/devices/uprobe): the kernel was built \
             without CONFIG_UPROBE_EVENTS, or /sys is not mounted; the collector and \
             bpftrace cannot attach to USDT probes"
                .into(),
        );
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        problems.push(
            "no kernel BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF): bpftrace \
             cannot resolve kernel types; boot a kernel built with BTF"
                .into(),
        );
    }
    problems
}

/// The running kernel's configuration, from `/proc/config.gz` or
/// `/boot/config-$(uname -r)`; `None` when neither is readable.
fn kernel_config() -> Option<String> {
    if Path::new("/proc/config.gz").exists()
        && let Some(text) = run::output(Command::new("gzip").args(["-dc", "/proc/config.gz"]))
    {
        return Some(text);
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()
}

/// Problems found in a kernel config text (none when it is unknown: the
/// `/sys` checks still run).
fn check_kernel_config(config: Option<&str>) -> Vec<String> {
    let Some(config) = config else {
        return Vec::new();
    };
    KERNEL_OPTIONS
        .iter()
        .filter(|(option, _)| {
            !config
                .lines()
                .any(|l| l.strip_prefix(option).is_some_and(|rest| rest == "=y"))
        })
        .map(|(option, what)| format!("kernel built without {option}=y: {what}"))
        .collect()
}

/// Prints the survey, one line per prerequisite.
fn print_survey(s: &Survey) {
    match &s.apt_missing {
        Some(missing) => {
            for p in APT_PACKAGES {
                let state = if missing.iter().any(|m| m.name == p.name) {
                    "MISSING"
                } else {
                    "ok"
                };
                note(format!("{:<8} {:<16} {}", state, p.name, p.why));
            }
        }
        None => note(
            "not a Debian system (no dpkg-query): install LLVM 22 development files, \
             bpftrace, tmux, valgrind, binutils and a C compiler with your package manager",
        ),
    }
    let ok = |b: bool| if b { "ok" } else { "MISSING" };
    note(format!(
        "{:<8} {:<16} manages the nightly toolchain",
        ok(s.rustup),
        "rustup"
    ));
    note(format!(
        "{:<8} {:<16} the eBPF crate builds with nightly's -Z build-std",
        ok(s.nightly),
        "nightly"
    ));
    note(format!(
        "{:<8} {:<16} core's source, for -Z build-std=core",
        ok(s.nightly_rust_src),
        "rust-src"
    ));
    match &s.bpf_linker {
        Some(v) => note(format!("{:<8} {:<16} {v}", "ok", "bpf-linker")),
        None => note(format!(
            "{:<8} {:<16} links the eBPF object (built from source, about a minute)",
            "MISSING", "bpf-linker"
        )),
    }
    if s.kernel.is_empty() {
        note(format!(
            "{:<8} {:<16} BPF syscall, uprobes, BTF",
            "ok", "kernel"
        ));
    }
}

fn print_kernel_problems(problems: &[String]) {
    if problems.is_empty() {
        return;
    }
    header("kernel: WARNING, the inspector and the root-only tests cannot work here");
    for p in problems {
        note(format!("- {p}"));
    }
    note("Building and the other tests still work. Use a kernel with these options enabled.");
}

/// Checks, then installs what is missing.
pub fn run(mode: Mode) -> Result<()> {
    let s = survey();
    if mode == Mode::Quick && s.complete() {
        header("setup: every prerequisite is installed (`cargo xtask setup` lists them)");
        print_kernel_problems(&s.kernel);
        mount_tracefs();
        return Ok(());
    }
    header("setup: checking prerequisites");
    print_survey(&s);
    install(&s)?;
    print_kernel_problems(&s.kernel);
    mount_tracefs();
    header("setup: done");
    Ok(())
}

/// Mounts tracefs at /sys/kernel/tracing when it is not mounted and we are
/// root. aya and bpftrace attach through the uprobe PMU and need no tracefs,
/// but bpftrace 0.17 detaches through `uprobe_events` and prints an error at
/// every exit without it. A failure is reported, not fatal.
fn mount_tracefs() {
    let dir = Path::new("/sys/kernel/tracing");
    let mounted = dir.join("uprobe_events").exists();
    if mounted || !dir.is_dir() || !run::is_root() {
        return;
    }
    header("setup: mounting tracefs at /sys/kernel/tracing (bpftrace detaches probes through it)");
    let status = Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status();
    match status {
        Ok(st) if st.success() => {}
        Ok(st) => note(format!(
            "mount -t tracefs failed ({st}); bpftrace will print harmless detach errors"
        )),
        Err(e) => note(format!(
            "could not run mount ({e}); bpftrace will print harmless detach errors"
        )),
    }
}

/// Installs what the survey found missing, in dependency order: Debian
/// packages (LLVM first of all), the nightly toolchain, then bpf-linker.
fn install(s: &Survey) -> Result<()> {
    if let Some(missing) = s.apt_missing.as_ref().filter(|m| !m.is_empty()) {
        install_apt(missing)?;
    }
    if !s.rustup {
        bail!(
            "rustup is not installed: slabscope's eBPF crate needs rustup's nightly \
             toolchain. Install rustup (https://rustup.rs), then run `cargo xtask setup` again"
        );
    }
    if !s.nightly {
        header("setup: installing the nightly toolchain (the eBPF crate needs -Z build-std)");
        run::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
            // For the eBPF crate's clippy step in `cargo xtask test`.
            "--component",
            "clippy",
        ]))
        .context("installing the nightly toolchain with rustup")?;
    } else if !s.nightly_rust_src {
        header("setup: adding rust-src to nightly (-Z build-std=core compiles core from it)");
        run::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
        .context("adding rust-src to the nightly toolchain")?;
    }
    if s.bpf_linker.is_none() {
        if let Some(path) = &s.bpf_linker_off_path {
            bail!(
                "bpf-linker is installed at {} but that directory is not on PATH; \
                 add it (export PATH=\"{}:$PATH\") and run `cargo xtask setup` again",
                path.display(),
                path.parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
        }
        install_bpf_linker()?;
    }
    Ok(())
}

fn install_apt(missing: &[&AptPackage]) -> Result<()> {
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    if !run::is_root() {
        bail!(
            "Debian packages are missing ({}) and installing them needs root.\n\
             Run:  sudo apt-get update && sudo apt-get install -y {}\n\
             then run `cargo xtask setup` again (or run it as root)",
            names.join(", "),
            names.join(" ")
        );
    }
    header(
        format!(
            "setup: apt-get update (before installing {})",
            names.join(", ")
        )
        .as_str(),
    );
    run::run(apt_get().arg("update")).context(
        "apt-get update failed: check the network and /etc/apt/sources.list*, then retry",
    )?;
    header(
        format!(
            "setup: installing {} (LLVM is large: this can take minutes)",
            names.join(" ")
        )
        .as_str(),
    );
    // Debian starts a package's service on install (prometheus would
    // listen on 9090): not here. See services.rs.
    let no_starts = crate::services::NoServiceStarts::new();
    run::run(apt_get().args(["install", "-y"]).args(&names)).with_context(|| {
        format!(
            "apt-get install failed; try `apt-get install -y {}` by hand to see why",
            names.join(" ")
        )
    })?;
    drop(no_starts);
    crate::services::disable_units();
    Ok(())
}

/// `apt-get` that never asks: CI has no stdin.
fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    cmd
}

fn install_bpf_linker() -> Result<()> {
    if !Path::new(LLVM_PREFIX).join("bin/llvm-config").exists() {
        bail!(
            "bpf-linker must be built against LLVM 22, but {LLVM_PREFIX}/bin/llvm-config \
             does not exist: install llvm-22-dev (Debian) and run `cargo xtask setup` again"
        );
    }
    header("setup: building bpf-linker against LLVM 22 (links the eBPF object; about a minute)");
    run::run(
        run::cargo()
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .stdin(Stdio::null()),
    )
    .context("building bpf-linker failed; its output above says why")?;
    if run::output(Command::new("bpf-linker").arg("--version")).is_none() {
        let dir = cargo_bin_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        bail!(
            "bpf-linker was installed into {dir}, which is not on PATH: \
             export PATH=\"{dir}:$PATH\" and run `cargo xtask setup` again"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_names_every_package_setup_installs() {
        let section =
            slabscope_testkit::markdown_section(include_str!("../../README.md"), "Two commands")
                .expect("README has \"## Two commands\"");
        for p in APT_PACKAGES {
            assert!(
                section.contains(&format!("`{}`", p.name)),
                "README's \"Two commands\" does not name `{}`, which setup installs ({})",
                p.name,
                p.why
            );
        }
    }

    #[test]
    fn dpkg_status_abbrev() {
        assert!(status_is_installed("ii "));
        assert!(status_is_installed("hi "));
        assert!(!status_is_installed("un "), "unknown/not installed");
        assert!(!status_is_installed("rc "), "removed, config files left");
        assert!(!status_is_installed("iU "), "unpacked, not configured");
        assert!(!status_is_installed(""));
    }

    #[test]
    fn component_listing() {
        let listing = "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\n\
                       rust-src\nrust-std-x86_64-unknown-linux-gnu\nrustc-x86_64-unknown-linux-gnu\n";
        assert!(has_component(listing, "rust-src"));
        assert!(has_component(listing, "clippy"));
        assert!(has_component(listing, "rustc"));
        assert!(!has_component(listing, "rustfmt"));
        assert!(
            !has_component(listing, "rust"),
            "rust-src/rust-std are not `rust`"
        );
        assert!(!has_component(
            "rust-docs-x86_64-unknown-linux-gnu\n",
            "rust-src"
        ));
    }

    #[test]
    fn kernel_config_options() {
        let good = "# comment\nCONFIG_BPF_SYSCALL=y\nCONFIG_UPROBES=y\n\
                    CONFIG_UPROBE_EVENTS=y\nCONFIG_BPF_EVENTS=y\n";
        assert!(check_kernel_config(Some(good)).is_empty());
        let bad = "CONFIG_BPF_SYSCALL=y\n# CONFIG_UPROBES is not set\nCONFIG_UPROBE_EVENTS=m\n\
                   CONFIG_BPF_EVENTS=y\nCONFIG_UPROBES_X=y\n";
        let problems = check_kernel_config(Some(bad));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("CONFIG_UPROBES=y"), "{problems:?}");
        assert!(
            problems[1].contains("CONFIG_UPROBE_EVENTS=y"),
            "{problems:?}"
        );
        assert!(
            check_kernel_config(None).is_empty(),
            "unknown config: rely on /sys"
        );
    }
}
