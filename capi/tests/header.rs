//! `include/slabscope.h` compiles on its own, first in its translation
//! unit, with warnings as errors, as C and as C++: a C user needs no other
//! include for what it declares (`EBUSY` for `kmem_cache_destroy`'s result,
//! `size_t`, `uint64_t`); and its constants are the contract crate's.

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

/// Every value `include/slabscope.h` defines, with the contract crate's
/// value it mirrors.
fn contract_values() -> Vec<(&'static str, u64)> {
    use slabscope_probes::flags as f;
    vec![
        ("KMC_NODEBUG", f::KMC_NODEBUG),
        ("KMC_KVMEM", f::KMC_KVMEM),
        ("KMC_SLAB", f::KMC_SLAB),
        ("KMC_DEADLOCKED", f::KMC_DEADLOCKED),
        ("KMC_GROWING", f::KMC_GROWING),
        ("KMC_REAPING", f::KMC_REAPING),
        ("KMC_DESTROY", f::KMC_DESTROY),
        ("KMC_RECLAIMABLE", f::KMC_RECLAIMABLE),
        ("KM_SLEEP", f::KM_SLEEP.into()),
        ("KM_NOSLEEP", f::KM_NOSLEEP.into()),
        ("KM_PUSHPAGE", f::KM_PUSHPAGE.into()),
        ("KM_PUBLIC_MASK", f::KM_PUBLIC_MASK.into()),
        ("SKM_MAGIC", f::SKM_MAGIC.into()),
        ("SKO_MAGIC", f::SKO_MAGIC.into()),
        ("SKS_MAGIC", f::SKS_MAGIC.into()),
        ("SKC_MAGIC", f::SKC_MAGIC.into()),
        ("SLABSCOPE_NAME_LEN", slabscope_probes::NAME_LEN as u64),
        ("SLABSCOPE_MAX_CPUS", slabscope_probes::MAX_CPUS as u64),
    ]
}

/// The header's constants are a mirror of `slabscope-probes` (flags, magics,
/// buffer sizes), as its snapshot struct is (`c_example` checks that one):
/// a C program prints each, and every `#define` of the header is checked.
#[test]
fn header_constants_equal_the_contracts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = std::fs::read_to_string(root.join("../include/slabscope.h"))
        .expect("reading include/slabscope.h");
    let values = contract_values();
    let mut defined: Vec<&str> = header
        .lines()
        .filter_map(|l| {
            l.trim_start()
                .strip_prefix("#define")?
                .split_whitespace()
                .next()
        })
        .filter(|name| *name != "SLABSCOPE_H")
        .collect();
    let mut checked: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
    defined.sort_unstable();
    checked.sort_unstable();
    assert_eq!(
        defined, checked,
        "a #define of include/slabscope.h has no counterpart checked here (or the other way round)"
    );

    let mut src = String::from("#include <stdio.h>\n#include <slabscope.h>\nint\nmain(void)\n{\n");
    for (name, _) in &values {
        src.push_str(&format!(
            "\tprintf(\"{name}=%llu\\n\", (unsigned long long)({name}));\n"
        ));
    }
    src.push_str("\treturn (0);\n}\n");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let c = dir.join("header_constants.c");
    let exe = dir.join("header_constants");
    std::fs::write(&c, src).expect("writing the C program");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(&c)
        .arg("-I")
        .arg(root.join("../include"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run the C compiler {cc:?} ({e}): install one or set CC")
        });
    assert!(
        out.status.success(),
        "compiling {}: {}",
        c.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().expect("running the C program");
    assert!(run.status.success(), "{}", run.status);
    let printed = String::from_utf8(run.stdout).expect("ASCII output");
    let mut expected = String::new();
    for (name, v) in &values {
        expected.push_str(&format!("{name}={v}\n"));
    }
    assert_eq!(
        printed, expected,
        "include/slabscope.h and slabscope-probes disagree"
    );
}
