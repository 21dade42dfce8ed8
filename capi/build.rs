//! Gives `libslabscope.so` its SONAME, `libslabscope.so.<major>`, as a
//! versioned C library has (the same name cargo-c would give it), so a
//! program linked against it records the ABI version it was built for and
//! `cargo xtask install` can install `libslabscope.so.<version>` with the
//! usual `libslabscope.so.<major>` and `libslabscope.so` links.
//!
//! A program linked against the library in the target directory itself
//! (the tests, `cc ... -L target/release -lslabscope`) then needs a
//! `libslabscope.so.<major>` next to it at run time: this script makes that
//! link (`libslabscope.so.<major> -> libslabscope.so`) in the profile
//! directory and its `deps` directory, where cargo writes the library.

use std::path::Path;

fn main() {
    let major =
        std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
    let soname = format!("libslabscope.so.{major}");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    println!("cargo:rerun-if-changed=build.rs");

    // OUT_DIR is <target>/<profile>/build/slabscope-capi-<hash>/out.
    let out_dir = std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR");
    let Some(profile_dir) = Path::new(&out_dir).ancestors().nth(3) else {
        return;
    };
    for dir in [profile_dir.to_path_buf(), profile_dir.join("deps")] {
        let link = dir.join(&soname);
        if std::fs::symlink_metadata(&link).is_ok() {
            continue;
        }
        if let Err(e) = std::os::unix::fs::symlink("libslabscope.so", &link) {
            println!(
                "cargo:warning=cannot link {} to libslabscope.so ({e}): programs linked against this directory's libslabscope.so will not find {soname}",
                link.display()
            );
        }
    }
}
