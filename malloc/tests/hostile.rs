//! A malloc lives in a hostile place: `tests/c/hostile.c` run on the
//! library, preloaded and linked. Constructors and a thread allocating
//! before `main`, `dlsym`, `malloc(0)`, realloc to 0 / from NULL / shrink /
//! grow, alignments up to 2 MiB, overflow and absurd sizes (NULL with
//! `ENOMEM`), calloc of fresh pages without touching them, objects freed on
//! another thread after their thread exited, `fork` with another thread
//! allocating; and the frees that must abort with a message: another
//! allocator's memory, a double free, an interior pointer. All of it
//! also under an address-space limit too low for the small classes'
//! windows (`slabscope::os::window`), where their slabs come from the
//! shared reservations instead. And a single-threaded program
//! (`tests/c/single.c`) stays single-threaded.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Output;

mod common;

const CHECKS: &[&str] = &[
    "preloaded",
    "constructor",
    "thread_before_main",
    "dlsym",
    "malloc0",
    "realloc_from_null",
    "realloc_grow",
    "realloc_grow_large",
    "realloc_shrink",
    "realloc_to_0",
    "calloc_overflow",
    "reallocarray_overflow",
    "absurd_size",
    "beyond_address_space",
    "alignments",
    "valloc_pvalloc",
    "posix_memalign_einval",
    "aligned_alloc_einval",
    "calloc_fresh_pages_untouched",
    "calloc_reused_zeroed",
    "remote_free_after_thread_exit",
    "threads_churn",
    "fork",
];

fn assert_all_ok(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stdout.contains("FAIL"),
        "{:?}\n{stdout}\n{stderr}",
        out.status
    );
    for c in CHECKS {
        assert!(
            stdout.lines().any(|l| l == format!("ok {c}")),
            "no `ok {c}`:\n{stdout}"
        );
    }
}

#[test]
fn preloaded_every_hostile_place_works() {
    let exe = common::compile("tests/c/hostile.c", "malloc_hostile", &[]);
    let out = common::preloaded(&exe).output().expect("run hostile");
    assert_all_ok(&out);
}

#[test]
fn under_a_low_address_space_limit_every_hostile_place_works() {
    let exe = common::compile("tests/c/hostile.c", "malloc_hostile_low_as", &[]);
    let out = common::with_low_address_space(&mut common::preloaded(&exe))
        .output()
        .expect("run hostile");
    assert_all_ok(&out);
}

#[test]
fn linked_with_lslabscope_malloc_every_hostile_place_works() {
    let dir = common::lib_dir();
    let dir = dir.to_str().expect("UTF-8 path");
    let exe = common::compile(
        "tests/c/hostile.c",
        "malloc_hostile_linked",
        &[
            "-L",
            dir,
            "-lslabscope_malloc",
            &format!("-Wl,-rpath,{dir}"),
        ],
    );
    let out = std::process::Command::new(&exe)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LD_PRELOAD")
        .output()
        .expect("run hostile");
    assert_all_ok(&out);
}

/// The scenario aborted with SIGABRT, naming its pointer and `why`, with
/// and without [`LOW_ADDRESS_SPACE`].
fn assert_aborts(scenario: &str, why: &str) {
    let exe = common::compile(
        "tests/c/hostile.c",
        &format!("malloc_hostile_{scenario}"),
        &[],
    );
    for low in [false, true] {
        assert_aborts_once(&exe, scenario, why, low);
    }
}

fn assert_aborts_once(exe: &Path, scenario: &str, why: &str, low_address_space: bool) {
    let mut cmd = common::preloaded(exe);
    cmd.arg(scenario);
    if low_address_space {
        common::with_low_address_space(&mut cmd);
    }
    let out = cmd.output().expect("run hostile");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ptr = stdout
        .split("PTR=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no PTR= in {stdout}"));
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{scenario} (low address space: {low_address_space}): {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(!stdout.contains("survived"));
    assert!(
        stderr.contains(&format!("slabscope: free({ptr})")) && stderr.contains(why),
        "{scenario}: stderr does not name free({ptr}) and {why:?}:\n{stderr}"
    );
}

#[test]
fn free_of_another_allocators_memory_aborts_with_a_message() {
    assert_aborts("foreign", "not memory slabscope handed out");
}

#[test]
fn double_free_aborts_with_a_message() {
    assert_aborts("double", "double free");
}

#[test]
fn free_of_an_interior_pointer_aborts_with_a_message() {
    assert_aborts("interior", "not the start of a block");
}

#[test]
fn free_of_an_interior_pointer_of_a_small_class_aborts_with_a_message() {
    assert_aborts("interior_small", "not the start of a block");
}

#[test]
fn a_single_threaded_program_stays_single_threaded_forks_and_can_unshare_its_user_namespace() {
    let exe = common::compile("tests/c/single.c", "malloc_single", &[]);
    let out = common::preloaded(&exe).output().expect("run single");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{stdout}\n{stderr}", out.status);
    assert!(
        stdout.lines().any(|l| l == "forks ok"),
        "a child forked by a single-threaded program failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.lines().any(|l| l == "threads 1"),
        "slabscope started a thread in a single-threaded program:\n{stdout}\n{stderr}"
    );
    // EINVAL is the kernel's answer to a multithreaded caller; EPERM or
    // ENOSPC mean user namespaces are off here, which says nothing of
    // slabscope.
    let unshare = stdout
        .lines()
        .find_map(|l| l.strip_prefix("unshare "))
        .unwrap_or_else(|| panic!("no unshare line:\n{stdout}"));
    assert_ne!(
        unshare, "Invalid argument",
        "unshare(CLONE_NEWUSER) refused"
    );
    if unshare != "ok" {
        eprintln!(
            "SKIPPED the unshare(CLONE_NEWUSER) half of this test: the kernel refused it \
             ({unshare}), as it does where user namespaces are off"
        );
    }
}

#[test]
fn a_bad_setting_is_reported_and_the_program_still_runs() {
    let exe = common::compile("tests/c/hostile.c", "malloc_hostile_bad_env", &[]);
    let out = common::preloaded(&exe)
        .arg("hello")
        .env("SLABSCOPE_MAGAZINE_SIZE", "bogus")
        .output()
        .expect("run hostile");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{stderr}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert!(
        stderr.contains("cannot build the size classes")
            && stderr.contains("SLABSCOPE_MAGAZINE_SIZE"),
        "{stderr}"
    );
}

/// The first `fork` of a process, with the size class of a thread-local's
/// destructor record still empty: the fork handler must allocate nothing
/// through `malloc` once it holds the caches' locks. `timeout` turns the
/// hang this once was into a failure.
#[test]
fn first_fork_with_empty_magazines_does_not_hang() {
    let exe = common::compile("tests/c/fork_first.c", "malloc_fork_first", &[]);
    let out = std::process::Command::new("timeout")
        .arg("20")
        .arg(&exe)
        .env("LD_PRELOAD", common::lib())
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run timeout(1)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "ok fork_first"),
        "{:?} (124 is timeout's: the fork hung)\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
