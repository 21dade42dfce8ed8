//! A C program whose probes live in `libslabscope.so`, not in its own
//! executable: `--pid` must find them among the process's shared objects,
//! attach there, and report the program's caches exactly. The program is
//! `tests/c/so_target.c`, compiled here with the system C compiler against
//! `include/slabscope.h` and the shared library. Needs root (and a C
//! compiler); skips loudly without either.

mod collector_support;

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Read as _},
    path::{Path, PathBuf},
    process::Command,
    sync::mpsc::RecvTimeoutError,
    time::{Duration, Instant},
};

use collector_support::{Fixture, root_or_skip};
use slabscope_inspector::{
    collector::{self, CollectorOptions, Target},
    sample::Update,
};

/// Compiles `tests/c/so_target.c` against `lib` into `name` (one name per
/// test: tests run at the same time).
fn compile(lib: &Path, name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("tests/c/so_target.c");
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let dir = lib.parent().expect("library directory");
    let status = Command::new(&cc)
        .args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-I")
        .arg(root.join("../include"))
        .arg("-L")
        .arg(dir)
        .arg("-lslabscope")
        .arg(format!("-Wl,-rpath,{}", dir.display()))
        .status();
    let status = status.unwrap_or_else(|e| {
        panic!(
            "cannot run the C compiler {cc:?} ({e}): `cargo xtask setup` installs gcc, or set CC"
        )
    });
    assert!(status.success(), "compiling {} failed", src.display());
    exe
}

#[test]
fn probes_in_libslabscope_so_are_found_and_its_caches_reported() {
    if !root_or_skip("probes_in_libslabscope_so_are_found_and_its_caches_reported") {
        return;
    }
    let lib = collector_support::shared_library();
    let exe = compile(&lib, "so_target_collector");
    // The executable itself carries no probe: they are all in the library.
    assert!(
        collector::target::slabscope_sites(&exe)
            .expect("reading the program's notes")
            .is_empty()
    );
    let program = Fixture::start_program(exe.clone(), &[]);
    let pid = program.pid();
    let (rx, handle) = collector::spawn(
        Target::Pid(pid),
        CollectorOptions {
            interval: Duration::from_millis(100),
            ring_bytes: None,
        },
    )
    .expect("attaching to the C program");
    let lib_real = std::fs::canonicalize(&lib).unwrap();
    let files: Vec<PathBuf> = handle
        .files()
        .iter()
        .map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()))
        .collect();
    assert_eq!(files, vec![lib_real], "the files attached");

    let output = program.go_raw();
    let kv: HashMap<&str, u64> = output
        .split_whitespace()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k, v.parse().ok()?))
        })
        .collect();
    let get = |k: &str| *kv.get(k).unwrap_or_else(|| panic!("no {k}= in {output:?}"));

    let start = Instant::now();
    let mut updates = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(u) => updates.push(u),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                assert!(start.elapsed() < Duration::from_secs(20), "no end")
            }
        }
    }
    drop(handle);
    assert_eq!(updates.last(), Some(&Update::TargetExited { pid }));
    let sample = updates
        .iter()
        .rev()
        .find_map(|u| match u {
            Update::Sample(s) => Some(s.clone()),
            _ => None,
        })
        .expect("a sample");
    let c = sample
        .caches
        .iter()
        .find(|c| c.snapshot.cache_id == get("id"))
        .unwrap_or_else(|| panic!("cache {:#x} not reported: {sample:?}", get("id")));
    assert_eq!(c.pid, pid);
    assert_eq!(
        slabscope_probes::name_bytes(&c.snapshot.name),
        b"c_so_cache"
    );
    assert_eq!(c.snapshot.obj_size, 512);
    let n = &c.counters;
    assert_eq!((n.creates, n.destroys, n.reaps), (1, 0, 1), "{n:?}");
    assert_eq!(n.grows_done, get("slab_create"), "{n:?}");
    assert_eq!(n.grow_failures, get("slab_fail"), "{n:?}");
    assert_eq!(n.grows, get("slab_create") + get("slab_fail"), "{n:?}");
    assert_eq!(n.deadlocks, get("obj_deadlock"), "{n:?}");
    assert!(n.grows_done > 0, "40 objects of 512 bytes need a grow");
    assert_eq!(sample.lost_events, 0);
}

#[test]
fn slabscope_once_shows_the_caches_of_a_c_program() {
    if !root_or_skip("slabscope_once_shows_the_caches_of_a_c_program") {
        return;
    }
    let lib = collector_support::shared_library();
    let exe = compile(&lib, "so_target_once");
    let program = Fixture::start_program(exe, &[]);
    let pid = program.pid().to_string();
    let mut slabscope = Command::new(env!("CARGO_BIN_EXE_slabscope"))
        .args(["--pid", &pid, "--once"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting slabscope");
    let mut stderr = BufReader::new(slabscope.stderr.take().expect("stderr"));
    let mut attached = String::new();
    stderr.read_line(&mut attached).expect("reading stderr");
    assert!(
        attached.starts_with(&format!("slabscope: tracing pid {pid}: "))
            && attached.trim_end().ends_with("libslabscope.so"),
        "{attached}"
    );
    program.go_raw();
    let out = slabscope.wait_with_output().expect("waiting for slabscope");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).expect("reading stderr");
    assert!(out.status.success(), "{}\n{rest}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(slabscope_probes::stats::PROC_SLAB_HEADER),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("c_so_cache ")),
        "no row for the C program's cache:\n{text}"
    );
    assert!(rest.contains("exited while traced"), "{rest}");
}

#[test]
fn exe_mode_finds_the_probes_in_libslabscope_so_and_keeps_to_its_processes() {
    if !root_or_skip("exe_mode_finds_the_probes_in_libslabscope_so_and_keeps_to_its_processes") {
        return;
    }
    let lib = collector_support::shared_library();
    let exe = compile(&lib, "so_target_exe");
    // Another program on the same library: its probes fire too, and must
    // not be reported.
    let other = compile(&lib, "so_target_other");
    let (rx, handle) = collector::spawn(
        Target::Exe(exe.clone()),
        CollectorOptions {
            interval: Duration::from_millis(100),
            ring_bytes: None,
        },
    )
    .expect("attaching to the C program's executable");
    let lib_real = std::fs::canonicalize(&lib).unwrap();
    let files: Vec<PathBuf> = handle
        .files()
        .iter()
        .map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()))
        .collect();
    assert_eq!(
        files,
        vec![lib_real],
        "the library's probes, found before any process runs"
    );

    let bystander = Fixture::start_program(other, &[]);
    let bystander_pid = bystander.pid();
    bystander.go_raw();
    let program = Fixture::start_program(exe, &[]);
    let pid = program.pid();
    // Seen running the program (it waits for its go line) before it fires:
    // an event from a library's probe is kept only from a process known to
    // run the program, and this one will exit within milliseconds.
    let start = Instant::now();
    let mut updates = Vec::new();
    while !updates.contains(&Update::TargetAttached { pid }) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "pid {pid} never attached"
        );
        if let Ok(u) = rx.recv_timeout(Duration::from_millis(200)) {
            updates.push(u);
        }
    }
    let output = program.go_raw();
    let id: u64 = output
        .split_whitespace()
        .find_map(|w| w.strip_prefix("id=")?.parse().ok())
        .unwrap_or_else(|| panic!("no id= in {output:?}"));

    let start = Instant::now();
    let mut exited = false;
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no exit reported"
        );
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Update::TargetExited { pid: p }) if p == pid => exited = true,
            // The first sample after the exit carries the final maps.
            Ok(Update::Sample(s)) if exited => {
                updates.push(Update::Sample(s));
                break;
            }
            Ok(u) => updates.push(u),
            Err(RecvTimeoutError::Disconnected) => panic!("the collector stopped"),
            Err(RecvTimeoutError::Timeout) => {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "no exit reported"
                )
            }
        }
    }
    drop(handle);
    assert!(updates.contains(&Update::TargetAttached { pid }));
    for u in &updates {
        match u {
            Update::TargetAttached { pid: p } | Update::TargetExited { pid: p } => {
                assert_ne!(*p, bystander_pid, "the other program was reported: {u:?}")
            }
            Update::Event(e) => assert_ne!(e.pid, bystander_pid, "its events were kept"),
            Update::Sample(s) => assert!(
                s.caches.iter().all(|c| c.pid != bystander_pid),
                "its caches were kept"
            ),
            _ => {}
        }
    }
    let Some(Update::Sample(last)) = updates.last() else {
        panic!("no final sample")
    };
    let c = last
        .caches
        .iter()
        .find(|c| c.snapshot.cache_id == id && c.pid == pid)
        .unwrap_or_else(|| panic!("cache {id:#x} of pid {pid} not reported: {last:?}"));
    assert_eq!(
        slabscope_probes::name_bytes(&c.snapshot.name),
        b"c_so_cache"
    );
    assert_eq!((c.counters.creates, c.counters.reaps), (1, 1));
}
