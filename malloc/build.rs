//! Links the malloc library with `hot-text.ld`: the functions programs run
//! on it gathered at the start of its code, so that a process keeps those
//! pages resident and not all 360 KiB (`cargo xtask hot-text` generates
//! the script and says why). Linux only: the script is GNU ld's language,
//! which lld reads too.
//!
//! The script also moves the PLT there, which only lld allows (GNU ld
//! puts the PLT before the code anyway, and refuses the move: ".eh_frame_hdr
//! refers to overlapping FDEs"). lld is rustc's linker on
//! x86_64-unknown-linux-gnu unless a flag says otherwise; for any other
//! linker the line is left out of the copy the link gets.
//!
//! It links the unwinder std needs (for a panic and its backtrace) from
//! `libgcc_eh.a` into the library, where std alone would name the shared
//! `libgcc_s.so.1`: a program that does not load `libgcc_s` itself (most C
//! programs) then keeps no 100-odd KiB of it resident for this library
//! alone (bench/ANALYSIS.md, "The unwinder, linked in"). This suits the
//! malloc library, which calls no code of the program, so no exception of
//! the program's unwinder ever meets this copy; `libslabscope.so`, whose
//! caches call the program's constructors, keeps the shared one.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=hot-text.ld");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let script = std::fs::read_to_string(dir.join("hot-text.ld")).expect("malloc/hot-text.ld");
    let script = if lld() {
        script
    } else {
        let kept: Vec<&str> = script.lines().filter(|l| l.trim() != "*(.plt)").collect();
        kept.join("\n") + "\n"
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("hot-text.ld");
    std::fs::write(&out, script).expect("writing the linker script to OUT_DIR");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-T,{}", out.display());
    // Before std's `-lgcc_s` on the link line, so that with `--as-needed`
    // (rustc's default) nothing is left for it and it is dropped; not
    // bundled into the static library, whose link names `-lgcc_s` anyway.
    // glibc's toolchains have it; musl's std brings its own unwinder.
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu") {
        println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
    }
}

/// Whether the cdylib is linked with lld: rustc's own (self-contained)
/// lld on x86_64-unknown-linux-gnu, unless the flags turn it off or name
/// another linker; elsewhere only when the flags ask for it.
fn lld() -> bool {
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if let Some(at) = flags.rfind("fuse-ld=") {
        return flags[at + "fuse-ld=".len()..].starts_with("lld");
    }
    let default = std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu");
    default
        && !flags.contains("linker-features=-lld")
        && !flags.contains("link-self-contained=-linker")
}
