//! A misspelt `SLABSCOPE_*` variable is not ignored silently: the first
//! cache prints one warning naming it and the tunable it probably meant.
//!
//! The warning goes to stderr, so the test re-runs this binary as a child
//! with the variable set and reads the child's stderr.

use std::process::Command;

use slabscope::CacheBuilder;
use slabscope::flags::KM_SLEEP;

// Not SLABSCOPE_*: it would draw a warning of its own.
const CHILD: &str = "UNKNOWN_ENV_TEST_CHILD";

#[test]
fn a_misspelt_variable_is_named_once_with_the_closest_tunable() {
    if std::env::var_os(CHILD).is_some() {
        for name in ["unknown_env_a", "unknown_env_b"] {
            let c = CacheBuilder::new(name, 64).build().expect("a cache");
            let p = c.alloc(KM_SLEEP).expect("an object");
            // SAFETY: p came from c and is freed once.
            unsafe { c.free(p) };
            c.destroy().expect("an empty cache");
        }
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new(exe)
        .args([
            "a_misspelt_variable_is_named_once_with_the_closest_tunable",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("SLABSCOPE_MAGAZIN_SIZE", "4")
        .output()
        .expect("running the child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("slabscope: warning:"))
        .collect();
    assert_eq!(
        warnings,
        [
            "slabscope: warning: SLABSCOPE_MAGAZIN_SIZE is not a slabscope tunable and is \
             ignored; did you mean SLABSCOPE_MAGAZINE_SIZE?"
        ],
        "one warning for two caches:\n{stderr}"
    );
}
