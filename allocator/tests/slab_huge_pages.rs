//! The `slab_huge_pages` tunable: a cache of small objects that has grown
//! past a reservation of slabs (2 MiB) takes its next slabs from a
//! reservation advised for transparent huge pages, unless the tunable is 0,
//! when every reservation is advised against them. The test runs the
//! default in this process and the tunable at 0 in a child of this test
//! binary (tunables are fixed per process).

use std::process::Command;

use slabscope::flags::KM_SLEEP;
use slabscope::tunables::{self, Tunables};
use slabscope::{CacheBuilder, os};

const TEST: &str = "a_large_cache_of_small_objects_gets_huge_pages_unless_switched_off";
/// Set in the child's environment (not a `SLABSCOPE_` name: those are
/// tunables, and an unknown one draws a warning).
const CHILD: &str = "HUGE_PAGES_TEST_CHILD";
const CHILD_DONE: &str = "huge-pages-off child: checked";

/// Grows a cache of 64-byte objects to about 4 MiB of slabs and returns
/// the `VmFlags` of the mapping that holds its newest object.
fn newest_slab_flags() -> String {
    let c = CacheBuilder::new("huge_pages_ramp", 64).build().unwrap();
    let mut objs = Vec::new();
    while c.stats().slab_total * c.stats().slab_size < 4 << 20 {
        objs.push(c.alloc(KM_SLEEP).expect("KM_SLEEP never fails"));
    }
    let newest = objs.last().expect("allocated").as_ptr() as usize;
    let flags = os::vm_flags(newest);
    for p in objs {
        // SAFETY: each object came from `c` and is freed once.
        unsafe { c.free(p) };
    }
    c.destroy().expect("every object was freed");
    flags
}

#[test]
fn a_large_cache_of_small_objects_gets_huge_pages_unless_switched_off() {
    if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
        eprintln!(
            "SKIPPED {TEST}: this kernel has no transparent huge pages, so madvise \
             leaves no flag to check"
        );
        return;
    }
    let child = std::env::var_os(CHILD).is_some();
    let stats_off = Tunables {
        stats_interval_ms: 0,
        ..Tunables::default()
    };
    tunables::set(stats_off).expect("tunables are set before any cache exists");
    let flags = newest_slab_flags();
    if child {
        assert_eq!(tunables::get().unwrap().slab_huge_pages, 0);
        assert!(
            flags.contains(" nh") && !flags.contains(" hg"),
            "slab_huge_pages = 0: the newest slab's mapping is advised against huge \
             pages: {flags}"
        );
        println!("{CHILD_DONE}");
        return;
    }
    assert!(
        flags.contains(" hg") && !flags.contains(" nh"),
        "by default the newest slab of a cache past 2 MiB of slabs is advised for huge \
         pages: {flags}"
    );
    let out = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("SLABSCOPE_SLAB_HUGE_PAGES", "0")
        .output()
        .expect("running this test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(CHILD_DONE),
        "the child with SLABSCOPE_SLAB_HUGE_PAGES=0 failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
