//! The README's "Observe any program" one-liner, run exactly as printed
//! against a C program on the preloaded library: the size classes its
//! allocations grow are the ones it prints. Needs root and bpftrace
//! (`cargo xtask setup` installs it); skips loudly without root.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use slabscope_testkit::readme_sh_lines;
use slabscope_testkit::trace::{Killed, is_root, skip_loudly, wait_attached};

mod common;

fn readme_oneliners() -> Vec<String> {
    let lines: Vec<String> = readme_sh_lines(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
        "Observe any program",
    )
    .into_iter()
    .filter(|l| l.starts_with("bpftrace "))
    .collect();
    assert_eq!(lines.len(), 1, "one bpftrace one-liner in the section");
    lines
}

#[test]
fn the_readme_one_liner_shows_which_size_classes_grow() {
    let oneliners = readme_oneliners();
    if !is_root() {
        skip_loudly(
            "the_readme_one_liner_shows_which_size_classes_grow",
            "bpftrace needs root. Run the malloc tests with sudo.",
        );
        return;
    }
    let exe = common::compile("tests/c/grow.c", "malloc_grow", &[]);
    let mut program = Killed(
        common::preloaded(&exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start grow"),
    );
    let mut out = BufReader::new(program.0.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read ready");
    assert_eq!(line, "ready\n");
    let mut tracer = Killed(
        Command::new("sh")
            .arg("-c")
            .arg(&oneliners[0])
            .env("PID", program.0.id().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sh"),
    );
    wait_attached(&mut tracer.0);
    program
        .0
        .stdin
        .take()
        .expect("piped")
        .write_all(b"go\n")
        .expect("start the program");
    line.clear();
    out.read_line(&mut line).expect("read done");
    assert_eq!(line, "done\n");
    assert!(program.0.wait().expect("wait").success());
    // bpftrace prints its map and exits with the traced process.
    let mut printed = String::new();
    tracer
        .0
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut printed)
        .expect("bpftrace output");
    let grown = |class: &str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(&format!("@slabs_added[{class}]: ")))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    // 20000 objects of 104 bytes need more than 100 slabs of 4 KiB; 2000
    // of 3072 more than 100 slabs of any size the class uses.
    assert!(grown("kmem_alloc_104") >= 20, "kmem_alloc_104:\n{printed}");
    assert!(
        grown("kmem_alloc_3072") >= 20,
        "kmem_alloc_3072:\n{printed}"
    );
}
