//! `include/slabscope.h` compiles on its own, first in its translation
//! unit, with warnings as errors, as C and as C++: a C user needs no other
//! include for what it declares (`EBUSY` for `kmem_cache_destroy`'s result,
//! `size_t`, `uint64_t`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Uses what a caller of the header needs: the errno value
/// `kmem_cache_destroy` returns, the flags, the snapshot struct.
const UNIT: &str = r"#include <slabscope.h>

int slabscope_header_check(kmem_cache_t *c);

int
slabscope_header_check(kmem_cache_t *c)
{
	struct slabscope_cache_snapshot s;
	if (slabscope_cache_snapshot(c, &s) == -EINVAL)
		return (-1);
	if (kmem_cache_alloc(c, KM_SLEEP | KM_PUSHPAGE) == NULL)
		return (-1);
	return (kmem_cache_destroy(c) == -EBUSY ? (int)s.mag_size : 0);
}
";

fn compile(compiler_env: &str, default: &str, ext: &str, std_flag: &str) {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let src = dir.join(format!("header_alone_{std_flag}.{ext}"));
    std::fs::write(&src, UNIT).expect("write the test unit");
    let cc = std::env::var(compiler_env).unwrap_or_else(|_| default.into());
    let out = Command::new(&cc)
        .arg(format!("-std={std_flag}"))
        .args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-c", "-o"])
        .arg(src.with_extension("o"))
        .arg(&src)
        .arg("-I")
        .arg(&include)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run the compiler {cc:?} ({e}): install one or set {compiler_env}")
        });
    assert!(
        out.status.success(),
        "include/slabscope.h does not compile alone with {cc} -std={std_flag}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn header_compiles_alone_as_c99() {
    compile("CC", "cc", "c", "c99");
}

#[test]
fn header_compiles_alone_as_c11() {
    compile("CC", "cc", "c", "c11");
}

#[test]
fn header_compiles_alone_as_cxx11() {
    compile("CXX", "c++", "cc", "c++11");
}

#[test]
fn header_compiles_alone_as_cxx17() {
    compile("CXX", "c++", "cc", "c++17");
}
