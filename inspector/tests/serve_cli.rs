//! `slabscope serve`'s user-caused failures: each exits with a message
//! saying what to do, before serving anything.

use std::process::{Command, Output};

fn serve(args: &[&str]) -> Output {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        // As root, run it as nobody without capabilities, as a user would.
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_slabscope"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_slabscope"))
    };
    cmd.arg("serve")
        .args(args)
        .output()
        .expect("running slabscope serve")
}

#[test]
fn without_the_capabilities_it_says_to_use_sudo() {
    let out = serve(&["--listen", "127.0.0.1:0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(
        err.contains("needs CAP_BPF and CAP_PERFMON: run with sudo"),
        "{err}"
    );
    assert!(!err.contains("listening"), "{err}");
}

#[test]
fn bad_options_are_refused_with_the_fix() {
    let bin = env!("CARGO_BIN_EXE_slabscope");
    let run = |args: &[&str]| {
        let out = Command::new(bin)
            .arg("serve")
            .args(args)
            .output()
            .expect("running slabscope serve");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--listen", "nowhere"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["--scan-interval", "0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("10ms to 1 hour"), "{err}");
}
