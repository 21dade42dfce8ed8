//! Real programs on the library: each prints, preloaded, exactly what it
//! prints on the C library's malloc. The workloads are the repository's
//! (`workloads/`): `heap.py` on `PYTHONMALLOC=malloc python3`,
//! `sqlite.sql` on `sqlite3`, the larson-style `larson.c` (frees on other
//! threads), `queue.c` (a producer and a consumer), `buffers.c` (large
//! buffers of varied sizes) and `redis.sh` (redis-server on 127.0.0.1
//! with redis-benchmark, then everything read back with redis-cli; the
//! script stops the server on any exit, and `timeout` stops the script).
//!
//! The programs come from Debian packages `cargo xtask setup` installs; a
//! missing one fails the test with the package to install.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;

fn workload(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../workloads")
        .join(name)
}

/// `program` from PATH, or a failure naming the Debian package.
fn need(program: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{program} is not installed: run `cargo xtask setup` (Debian package {package})")
    })
}

/// The distribution's python3: a version manager's shim on PATH may start
/// another interpreter, or none.
fn python3() -> PathBuf {
    let system = PathBuf::from("/usr/bin/python3");
    if system.is_file() {
        system
    } else {
        need("python3", "python3")
    }
}

fn run(mut cmd: Command, stdin: Option<&Path>) -> Output {
    if let Some(f) = stdin {
        cmd.stdin(Stdio::from(
            std::fs::File::open(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())),
        ));
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `make()` twice, on the C library's malloc and preloaded, and
/// checks that both succeed and print the same stdout.
fn same_output(what: &str, make: impl Fn() -> Command, stdin: Option<&Path>) -> String {
    let mut glibc = make();
    glibc.env_remove("LD_PRELOAD");
    let want = run(glibc, stdin);
    assert!(
        want.status.success(),
        "{what} failed on the C library's malloc: {:?}\n{}",
        want.status,
        String::from_utf8_lossy(&want.stderr)
    );
    let mut ours = make();
    ours.env("LD_PRELOAD", common::lib());
    let got = run(ours, stdin);
    let (w, g) = (
        String::from_utf8_lossy(&want.stdout),
        String::from_utf8_lossy(&got.stdout),
    );
    assert!(
        got.status.success(),
        "{what} failed on slabscope's malloc: {:?}\nstdout:\n{g}\nstderr:\n{}",
        got.status,
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(!w.is_empty(), "{what} printed nothing");
    assert_eq!(
        g, w,
        "{what}: stdout on slabscope's malloc differs from glibc's"
    );
    g.into_owned()
}

#[test]
fn python3_heap_workload_prints_the_same() {
    let py = python3();
    let out = same_output(
        "python3 heap.py",
        || {
            let mut c = Command::new(&py);
            c.env("PYTHONMALLOC", "malloc")
                .arg(workload("heap.py"))
                .arg("2");
            c
        },
        None,
    );
    assert!(out.contains("heap.py ok"), "{out}");
}

#[test]
fn sqlite3_script_prints_the_same() {
    let sqlite = need("sqlite3", "sqlite3");
    // A tenth of the rows (the workload's own knob), for a debug library.
    let script = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("malloc_sqlite.sql");
    let body = std::fs::read_to_string(workload("sqlite.sql")).expect("workloads/sqlite.sql");
    std::fs::write(&script, format!(".parameter set @rows 20000\n{body}")).expect("write script");
    same_output(
        "sqlite3 sqlite.sql",
        || {
            let mut c = Command::new(&sqlite);
            c.arg(":memory:");
            c
        },
        Some(&script),
    );
}

/// The larson workload, its arrays moving between threads every round and
/// kept by their threads (`MOVE` 0): the same work, so the same line.
#[test]
fn larson_threads_print_the_same() {
    let exe = common::compile("../workloads/larson.c", "malloc_larson", &[]);
    let run = |args: &'static [&'static str]| {
        same_output(
            &format!("larson {}", args.join(" ")),
            || {
                let mut c = Command::new(&exe);
                c.args(args);
                c
            },
            None,
        )
    };
    let moving = run(&["4", "10", "20000"]);
    assert!(moving.contains("larson ok"), "{moving}");
    let kept = run(&["4", "10", "20000", "1000", "8", "4096", "1", "0"]);
    assert_eq!(
        kept, moving,
        "larson printed another line with each array kept by its thread"
    );
}

/// A producer and a consumer: every block freed on another thread than
/// the one that allocated it, its contents checked.
#[test]
fn queue_prints_the_same() {
    let exe = common::compile("../workloads/queue.c", "malloc_queue", &[]);
    for size in ["100", "3000"] {
        let out = same_output(
            &format!("queue 300000 {size}"),
            || {
                let mut c = Command::new(&exe);
                c.args(["300000", size]);
                c
            },
            None,
        );
        assert!(out.contains("queue ok"), "{out}");
    }
}

/// Buffers above the size classes, of varied sizes, allocated, filled,
/// checked and freed over and over (kept mappings reused at other sizes);
/// and sizes on both sides of the largest class.
#[test]
fn buffers_print_the_same() {
    let exe = common::compile("../workloads/buffers.c", "malloc_buffers", &[]);
    for args in [
        &["3000"][..],
        &["3000", "64", "1", "400000"],
        &["300", "8", "2097152", "8388608"],
    ] {
        let out = same_output(
            &format!("buffers {}", args.join(" ")),
            || {
                let mut c = Command::new(&exe);
                c.args(args);
                c
            },
            None,
        );
        assert!(out.contains("buffers ok"), "{out}");
    }
}

#[test]
fn redis_server_with_redis_benchmark_reads_back_the_same() {
    need("redis-server", "redis-server");
    need("redis-benchmark", "redis-tools");
    let run_with = |preload: &Path| {
        let out = Command::new("timeout")
            .args(["300", "sh"])
            .arg(workload("redis.sh"))
            .arg("20000")
            .env("SERVER_PRELOAD", preload)
            .env_remove("LD_PRELOAD")
            .output()
            .expect("run redis.sh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "redis.sh with {} preloaded: {:?}\n{stdout}\n{}",
            preload.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    // Debian's redis-server links jemalloc; preloading the C library puts
    // glibc's malloc first (see workloads/README.md).
    let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    let want = if libc.exists() {
        run_with(libc)
    } else {
        run_with(Path::new(""))
    };
    let got = run_with(&common::lib());
    assert_eq!(got, want);
    assert_eq!(got.lines().count(), 4, "{got}");
}
