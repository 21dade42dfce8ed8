//! The inspector attached to programs running on slabscope's malloc
//! (`libslabscope_malloc.so` preloaded): `slabscope --pid N --once` shows
//! the program's `kmem_alloc_<size>` classes, in use, and the
//! `kmem_alloc_large` row, exactly as it shows named caches. Needs root;
//! skips loudly without.

mod collector_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use collector_support::{cdylib, root_or_skip};

const SLABSCOPE: &str = env!("CARGO_BIN_EXE_slabscope");

/// `libslabscope_malloc.so` with probes on, built if needed in the
/// collector's separate target directory (see `shared_library`).
fn malloc_library() -> PathBuf {
    cdylib("slabscope-malloc", "libslabscope_malloc.so")
}

/// Kills the program when the test ends, passing or not.
struct Program(Child);

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn workload(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../workloads")
        .join(name)
}

/// Starts `cmd` on the library and returns what `slabscope --pid N --once`
/// printed about it.
fn inspect(mut cmd: Command) -> String {
    let program = Program(
        cmd.env("LD_PRELOAD", malloc_library())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")),
    );
    // The loader maps the preloaded library a moment after the spawn; an
    // inspector started before that finds only the program's own file.
    collector_support::wait_for_code_of(
        program.0.id(),
        "libslabscope_malloc.so",
        std::time::Duration::from_secs(20),
    );
    let out = Command::new(SLABSCOPE)
        .args([
            "--pid",
            &program.0.id().to_string(),
            "--once",
            "--timeout",
            "30",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run slabscope");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "slabscope --once failed: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    drop(program);
    stdout
}

/// The rows of `--once` output (the /proc/spl/kmem/slab format) named
/// `kmem_alloc_*`, as (name, objects allocated).
fn kmem_rows(out: &str) -> Vec<(String, u64)> {
    out.lines()
        .skip(2)
        .filter(|l| l.starts_with("kmem_alloc_"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // name flags size alloc slabsize objsize | slab t a m | obj t a m
            let alloc = f[10].parse().unwrap_or_else(|_| panic!("row {l:?}"));
            (f[0].to_string(), alloc)
        })
        .collect()
}

fn assert_shows_classes(what: &str, out: &str) {
    let rows = kmem_rows(out);
    // A class is built, and becomes a row, at its first allocation.
    let names: Vec<String> = (0..slabscope::kmem::ladder::CLASSES)
        .map(|i| format!("kmem_alloc_{}", slabscope::kmem::ladder::size(i)))
        .collect();
    for (n, _) in &rows {
        assert!(
            n == "kmem_alloc_large" || names.contains(n),
            "{what}: {n} is not a size class:\n{out}"
        );
    }
    assert!(
        rows.iter().any(|(n, _)| n == "kmem_alloc_large"),
        "{what}: no kmem_alloc_large row:\n{out}"
    );
    // A headerless class and one with headers.
    for small in ["kmem_alloc_32", "kmem_alloc_104"] {
        let (_, alloc) = rows.iter().find(|(n, _)| n == small).expect("class row");
        assert!(*alloc > 0, "{what}: {small} holds nothing:\n{out}");
    }
}

#[test]
fn python3_on_the_library_shows_its_size_classes() {
    if !root_or_skip("python3_on_the_library_shows_its_size_classes") {
        return;
    }
    let py = if Path::new("/usr/bin/python3").is_file() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut cmd = Command::new(py);
    cmd.env("PYTHONMALLOC", "malloc")
        .arg(workload("heap.py"))
        .arg("1000");
    let out = inspect(cmd);
    assert_shows_classes("python3", &out);
}

#[test]
fn larson_on_the_library_shows_its_size_classes() {
    if !root_or_skip("larson_on_the_library_shows_its_size_classes") {
        return;
    }
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("inspector_larson");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-O2", "-pthread", "-o"])
        .arg(&exe)
        .arg(workload("larson.c"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?} ({e})"));
    assert!(status.success(), "compiling larson.c failed");
    let mut cmd = Command::new(&exe);
    cmd.args(["2", "100000", "20000"]);
    let out = inspect(cmd);
    assert_shows_classes("larson", &out);
}
