//! Helpers of the malloc library's tests: where the freshly built library
//! is, compiling a C test program, and preloading the library.
#![allow(dead_code, reason = "each test crate uses a different subset")]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory of the `libslabscope_malloc.so` built for this test run
/// (the crate has no rlib, so cargo builds no library for its tests).
pub fn lib_dir() -> PathBuf {
    let lib = slabscope_testkit::cdylib("slabscope-malloc", "libslabscope_malloc.so");
    lib.parent().expect("the library's directory").to_path_buf()
}

/// The library to preload.
pub fn lib() -> PathBuf {
    lib_dir().join("libslabscope_malloc.so")
}

/// Compiles `src` (relative to this crate) into `name` in cargo's
/// temporary directory, with `extra` arguments after the source.
pub fn compile(src: &str, name: &str, extra: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(src);
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=gnu11", "-O1", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .args(extra)
        .args(["-pthread", "-ldl"])
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run the C compiler {cc:?} ({e}): install a C compiler or set CC")
        });
    assert!(status.success(), "compiling {} failed", src.display());
    exe
}

/// `program` with the library preloaded (and no `LD_LIBRARY_PATH`).
pub fn preloaded(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("LD_PRELOAD", lib()).env_remove("LD_LIBRARY_PATH");
    cmd
}

/// An address-space limit (`RLIMIT_AS`) below the 5 GiB the windows of
/// the small classes reserve at once, and far above what the programs
/// use.
pub const LOW_ADDRESS_SPACE: u64 = 2 << 30;

/// Runs `cmd` with its address space limited to [`LOW_ADDRESS_SPACE`].
pub fn with_low_address_space(cmd: &mut Command) -> &mut Command {
    fn limit() -> std::io::Result<()> {
        let lim = libc::rlimit {
            rlim_cur: LOW_ADDRESS_SPACE,
            rlim_max: LOW_ADDRESS_SPACE,
        };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
    // SAFETY: the closure runs in the child between fork and exec and
    // calls only setrlimit, which is async-signal-safe.
    unsafe { cmd.pre_exec(limit) }
}
