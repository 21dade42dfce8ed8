//! Links the malloc library with `hot-text.ld`: the functions programs run
//! on it gathered at the start of its code, so that a process keeps those
//! pages resident and not all 360 KiB (`cargo xtask hot-text` generates
//! the script and says why). Linux only: the script is GNU ld's language,
//! which lld, rustc's linker there, reads too.

fn main() {
    println!("cargo:rerun-if-changed=hot-text.ld");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = std::path::Path::new(&dir).join("hot-text.ld");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-T,{}", script.display());
}
