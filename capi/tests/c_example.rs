//! Compiles `examples/c/example.c` with the system C compiler against
//! `include/slabscope.h` and the freshly built `libslabscope.so` (and, in a
//! second test, `libslabscope.a`), runs it and checks what it prints: the C
//! ABI end to end, bad inputs included, and the header's snapshot layout,
//! field by field, against the Rust one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use slabscope_probes::CacheSnapshot;

mod support;

use support::lib_dir;

fn value<'a>(out: &'a HashMap<String, String>, key: &str) -> &'a str {
    out.get(key)
        .unwrap_or_else(|| panic!("example printed no {key}=; output keys: {:?}", out.keys()))
}

/// Compiles the example, linked against the shared or the static library.
fn compile(static_lib: bool) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("examples/c/example.c");
    let include = root.join("../include");
    let lib = lib_dir();
    let name = if static_lib {
        "slabscope_c_example_static"
    } else {
        "slabscope_c_example"
    };
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(&cc);
    cmd.args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-I")
        .arg(&include);
    if static_lib {
        // The native libraries Rust's std needs on Linux
        // (`--print native-static-libs`).
        cmd.arg(lib.join("libslabscope.a")).args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ]);
    } else {
        cmd.arg("-L")
            .arg(&lib)
            .arg("-lslabscope")
            .arg(format!("-Wl,-rpath,{}", lib.display()));
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run the C compiler {cc:?} ({e}): install a C compiler or set CC")
    });
    assert!(status.success(), "compiling {} failed", src.display());
    exe
}

fn run(exe: &Path) -> String {
    // cargo's LD_LIBRARY_PATH may name an older uplifted copy of the
    // library; the rpath names the fresh one.
    let out = Command::new(exe)
        .env_remove("LD_LIBRARY_PATH")
        .env("SLABSCOPE_STATS_INTERVAL_MS", "0")
        .output()
        .expect("run the C example");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example failed with {}:\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn c_example_against_the_shared_library() {
    check(&run(&compile(false)));
}

#[test]
fn c_example_against_the_static_library() {
    let exe = compile(true);
    let ldd = Command::new("ldd").arg(&exe).output();
    if let Ok(o) = ldd {
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("libslabscope"),
            "the static build still links libslabscope.so"
        );
    }
    check(&run(&exe));
}

fn check(stdout: &str) {
    // key=value pairs; a line may carry several separated by spaces, except
    // msg= which takes the rest of the line.
    let mut kv = HashMap::new();
    for line in stdout.lines() {
        let (head, msg) = match line.split_once(" msg=") {
            Some((h, m)) => (h, Some(m)),
            None => (line, None),
        };
        let mut first = None;
        for word in head.split(' ') {
            if let Some((k, v)) = word.split_once('=') {
                first.get_or_insert(k.to_string());
                kv.insert(k.to_string(), v.to_string());
            }
        }
        if let (Some(first), Some(msg)) = (first, msg) {
            kv.insert(format!("{first}.msg"), msg.to_string());
            kv.insert(format!("{first}.errno"), kv["errno"].clone());
        }
    }

    assert_eq!(
        value(&kv, "snapshot_size"),
        size_of::<CacheSnapshot>().to_string()
    );
    macro_rules! offsets {
        ($($f:ident)*) => {$(
            assert_eq!(
                value(&kv, concat!("off_", stringify!($f))),
                std::mem::offset_of!(CacheSnapshot, $f).to_string(),
                concat!("offset of ", stringify!($f), " differs between include/slabscope.h and CacheSnapshot")
            );
        )*};
    }
    offsets!(cache_id flags obj_size obj_align obj_size_full slab_size slab_objs mag_size mag_refill ncpus depot_objs mag_objs mag_fill name);
    // The header declares SlabCounters' fields inline in the snapshot.
    macro_rules! counter_offsets {
        ($($f:ident)*) => {$(
            assert_eq!(
                value(&kv, concat!("off_", stringify!($f))),
                std::mem::offset_of!(CacheSnapshot, counters.$f).to_string(),
                concat!("offset of ", stringify!($f), " differs between include/slabscope.h and SlabCounters in CacheSnapshot")
            );
        )*};
    }
    counter_offsets!(slab_fail slab_create slab_destroy slab_total slab_alloc slab_max obj_total obj_alloc obj_max obj_deadlock obj_emergency obj_emergency_max);

    for (key, errno, msg) in [
        ("bad_align", libc::EINVAL, "alignment 24"),
        ("bad_size", libc::EINVAL, "size 0"),
        ("bad_name", libc::EINVAL, "empty"),
        ("bad_large", libc::ENOSPC, "ENOSPC"),
        ("bad_flags", libc::EINVAL, "unknown flags"),
    ] {
        assert_eq!(value(&kv, key), "rejected", "{key}");
        assert_eq!(
            value(&kv, &format!("{key}.errno")),
            errno.to_string(),
            "{key}"
        );
        assert!(
            value(&kv, &format!("{key}.msg")).contains(msg),
            "{key}: {}",
            kv[&format!("{key}.msg")]
        );
    }
    assert_eq!(value(&kv, "entry_size"), "1104");
    assert_eq!(value(&kv, "inuse_ge_100"), "1");
    assert_eq!(value(&kv, "ctors"), "100");
    assert_eq!(value(&kv, "busy_destroy"), (-libc::EBUSY).to_string());
    assert_eq!(value(&kv, "snap_name"), "c_zio_cache");
    assert_eq!(value(&kv, "snap_obj_size"), "1104");
    assert_eq!(value(&kv, "snap_live"), "100");
    assert_eq!(value(&kv, "snap_kvmem"), "1");
    assert_eq!(value(&kv, "dtors"), "100");
    assert_eq!(value(&kv, "proc_len_ok"), "1");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("c_zio_cache ") && l.contains("0x00080")),
        "no /proc/spl/kmem/slab row for the cache:\n{stdout}"
    );
    assert!(stdout.contains(slabscope_probes::stats::PROC_SLAB_HEADER));
    assert_eq!(value(&kv, "destroy"), "0");
}
