//! A scenario run in a child process: the test re-executes its own binary,
//! filtered to itself, with an environment variable naming the scenario;
//! the child runs it and the parent checks how it ended.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

/// Runs `scenario` and exits 0 when this process is the child `var` names
/// for `test_name`; otherwise starts that child (this binary, filtered to
/// `test_name`) and returns its output.
///
/// # Panics
/// When the test binary cannot be run again.
pub fn in_child(var: &str, test_name: &str, scenario: fn()) -> Output {
    if std::env::var(var).as_deref() == Ok(test_name) {
        scenario();
        // Scenarios that must abort never get here; the others exit 0.
        std::process::exit(0);
    }
    let exe = std::env::current_exe().expect("test executable path");
    Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(var, test_name)
        .output()
        .unwrap_or_else(|e| panic!("cannot re-run the test binary for {test_name}: {e}"))
}

/// Checks that the child exited successfully.
///
/// # Panics
/// When it did not, with its status, stdout and stderr.
pub fn assert_succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "the child failed ({:?}); stdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks that the child aborted (`SIGABRT`) after printing `PTR=<p>` on
/// stdout; returns that pointer as printed and the child's stderr.
///
/// # Panics
/// When it did not, with the child's output.
pub fn aborted(out: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let ptr = stdout
        .split("PTR=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| {
            panic!("the child printed no PTR=; stdout:\n{stdout}\nstderr:\n{stderr}")
        })
        .to_owned();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "expected an abort, got {:?}; stderr:\n{stderr}",
        out.status
    );
    (ptr, stderr)
}

/// Checks that the child [`aborted`] with a stderr naming the pointer and
/// containing every one of `what`; returns the stderr.
///
/// # Panics
/// When it did not, with the child's output.
pub fn assert_aborted_naming_ptr(out: &Output, what: &[&str]) -> String {
    let (ptr, stderr) = aborted(out);
    assert!(
        stderr.contains(&ptr),
        "stderr does not name the pointer {ptr}:\n{stderr}"
    );
    for w in what {
        assert!(stderr.contains(w), "stderr lacks {w:?}:\n{stderr}");
    }
    stderr
}
