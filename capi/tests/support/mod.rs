//! Helpers shared by the C library's integration tests.

use std::path::PathBuf;

/// The directory holding the `libslabscope.so` cargo built for this test run.
pub fn lib_dir() -> PathBuf {
    slabscope_testkit::cdylib_dir("libslabscope.so", "slabscope-capi")
}
