//! Random calls of the whole `malloc` API on four threads
//! (`tests/c/stress.c`), on the preloaded library: every block filled to
//! its last usable byte and checked whenever it is touched, blocks handed
//! to other threads to check and free, `realloc` chains, aligned blocks
//! to 64 KiB, sizes from 0 bytes to 8 MiB (classes, and mappings of their
//! own, kept and reused at other sizes); once more under an address-space
//! limit too low for the small classes' windows. Seeded, so a failure
//! names a seed that repeats it.

use std::process::Command;

mod common;

/// Seeds run by the test; `stress SEED` repeats one by hand.
const SEEDS: [u64; 3] = [1, 2, 3];

/// Runs `stress SEED` on the preloaded library, under an address-space
/// limit too low for the small classes' windows when `low` (their slabs
/// then come from the shared reservations, `slabscope::os::window`).
fn stress(exe: &std::path::Path, seed: u64, low: bool) {
    let mut cmd = common::preloaded(exe);
    if low {
        common::with_low_address_space(&mut cmd);
    }
    let out = cmd.arg(seed.to_string()).output().expect("run stress");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with(&format!("ok stress {seed}: ")),
        "seed {seed} (low address space: {low}): {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn random_calls_of_the_whole_api_keep_every_block_intact() {
    let exe = common::compile("tests/c/stress.c", "malloc_stress", &[]);
    for seed in SEEDS {
        stress(&exe, seed, false);
    }
}

#[test]
fn under_a_low_address_space_limit_random_calls_keep_every_block_intact() {
    let exe = common::compile("tests/c/stress.c", "malloc_stress_low_as", &[]);
    stress(&exe, SEEDS[0], true);
}

/// The checker sees a block that reaches into its neighbour: with a
/// `malloc_usable_size` that says 16 bytes more (`tests/c/liar.c`,
/// preloaded ahead of the library), the run fails, named by stress.c or
/// by the library's own checks.
#[test]
fn a_usable_size_that_reaches_into_the_next_block_is_caught() {
    let exe = common::compile("tests/c/stress.c", "malloc_stress_liar", &[]);
    let liar = common::compile(
        "tests/c/liar.c",
        "libslabscope_test_liar.so",
        &["-shared", "-fPIC"],
    );
    let preload = format!("{}:{}", liar.display(), common::lib().display());
    let out = Command::new(&exe)
        .arg("1")
        .env("LD_PRELOAD", preload)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run stress");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && !stdout.contains("ok stress")
            && (stdout.contains("FAIL stress 1") || stderr.contains("slabscope: ")),
        "{:?}\n{stdout}\n{stderr}",
        out.status
    );
}
