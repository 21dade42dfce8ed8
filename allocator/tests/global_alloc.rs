//! A Rust program on slabscope's global allocator: this test binary itself
//! (the harness, its threads, every `Vec` and `String`) runs on the
//! `kmem_alloc_*` size classes. The stress test drives seeded random
//! sizes, realloc chains and frees on other threads with every byte
//! checked; the others cover over-aligned layouts, zeroed allocation and
//! `fork` with the allocator busy.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::mpsc;

use slabscope::SlabscopeAlloc;
use slabscope::kmem::{self, ladder};

#[global_allocator]
static GLOBAL: SlabscopeAlloc = SlabscopeAlloc;

/// xorshift64*: a seeded generator, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Mostly small sizes, some up to 8 KiB, a few above the largest class.
    fn size(&mut self) -> usize {
        match self.next() % 100 {
            0 => ladder::MAX_CLASS + (self.next() % 300_000) as usize,
            1..=20 => (self.next() % 8192) as usize,
            _ => (self.next() % 256) as usize,
        }
    }
}

/// A vector whose bytes say who made it: byte i is `tag + i`.
fn stamped(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
}

fn check(v: &[u8], tag: u8) {
    for (i, &b) in v.iter().enumerate() {
        assert_eq!(b, tag.wrapping_add(i as u8), "byte {i} of {}", v.len());
    }
}

#[test]
fn stress_threads_random_sizes_realloc_chains_and_remote_frees() {
    const THREADS: u64 = 4;
    const ROUNDS: usize = 20_000;
    let (tx, rx) = mpsc::channel::<(u8, Vec<u8>)>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let tx = tx.clone();
            let rx = rx.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                let mut live: Vec<(u8, Vec<u8>)> = Vec::new();
                for round in 0..ROUNDS {
                    let tag = rng.next() as u8;
                    match rng.next() % 8 {
                        0..=2 => live.push((tag, stamped(tag, rng.size()))),
                        3 if !live.is_empty() => {
                            // A realloc chain: grow or shrink, contents kept.
                            let i = (rng.next() as usize) % live.len();
                            let (tag, v) = &mut live[i];
                            let new = rng.size();
                            if new > v.len() {
                                v.reserve_exact(new - v.len());
                                let start = v.len();
                                v.extend((start..new).map(|j| tag.wrapping_add(j as u8)));
                            } else {
                                v.truncate(new);
                                v.shrink_to_fit();
                            }
                            check(v, *tag);
                        }
                        4 if !live.is_empty() => {
                            // Freed on another thread.
                            let i = (rng.next() as usize) % live.len();
                            tx.send(live.swap_remove(i)).unwrap();
                        }
                        5 => {
                            let got = rx.lock().unwrap().try_recv();
                            if let Ok((tag, v)) = got {
                                check(&v, tag);
                            }
                        }
                        _ if !live.is_empty() => {
                            let i = (rng.next() as usize) % live.len();
                            let (tag, v) = live.swap_remove(i);
                            check(&v, tag);
                        }
                        _ => {}
                    }
                    if round % 5000 == 0 {
                        let s: String = format!("{round}-{t}").repeat(3);
                        assert!(s.starts_with(&round.to_string()));
                    }
                }
                for (tag, v) in &live {
                    check(v, *tag);
                }
                // The thread exits with `live` handed to another thread.
                tx.send((0, Vec::new())).unwrap();
                live
            })
        })
        .collect();
    drop(tx);
    let mut survivors = Vec::new();
    for w in workers {
        survivors.push(w.join().expect("worker"));
    }
    for (tag, v) in rx.lock().unwrap().iter() {
        check(&v, tag);
    }
    for (tag, v) in survivors.iter().flatten() {
        check(v, *tag);
    }
    drop(survivors);
    // (`Cache::validate` allocates while it holds a cache's locks, so it
    // cannot check the classes of the allocator it runs on.)
    assert!(
        kmem::built_classes().any(|(_, c)| c.stats().slab_total > 0),
        "the test's memory came from the classes"
    );
}

#[test]
fn over_aligned_layouts_and_zeroed_allocations() {
    for shift in 0..=21 {
        let align = 1usize << shift;
        for size in [1, 24, 4096, 300_000] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: a non-zero-size layout.
            let p = unsafe { GLOBAL.alloc_zeroed(layout) };
            assert!(!p.is_null());
            assert!((p as usize).is_multiple_of(align), "{align} {size}");
            // SAFETY: p is size bytes.
            let s = unsafe { std::slice::from_raw_parts_mut(p, size) };
            assert!(s.iter().all(|&b| b == 0), "{align} {size}: zeroed");
            s.fill(0xa5);
            // SAFETY: p came from alloc_zeroed(layout); grows keep contents.
            let q = unsafe { GLOBAL.realloc(p, layout, size * 2) };
            assert!((q as usize).is_multiple_of(align), "{align} {size} realloc");
            // SAFETY: q is size * 2 bytes.
            let s = unsafe { std::slice::from_raw_parts(q, size) };
            assert!(s.iter().all(|&b| b == 0xa5));
            // SAFETY: q is live with this layout.
            unsafe { GLOBAL.dealloc(q, Layout::from_size_align(size * 2, align).unwrap()) };
        }
    }
}

#[test]
fn fork_while_other_threads_allocate() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy: Vec<_> = (0..2)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(7 + t);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let v = stamped(3, rng.size() % 5000);
                    check(&v, 3);
                }
            })
        })
        .collect();
    for _ in 0..20 {
        // SAFETY: the child only allocates, checks and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let v: Vec<Vec<u8>> = (0..1000).map(|i| stamped(i as u8, i % 700)).collect();
            let ok = v.iter().enumerate().all(|(i, x)| {
                x.iter()
                    .enumerate()
                    .all(|(j, &b)| b == (i as u8).wrapping_add(j as u8))
            });
            // SAFETY: _exit skips the parent's atexit handlers.
            unsafe { libc::_exit(i32::from(!ok)) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in busy {
        b.join().unwrap();
    }
}

/// Frees that flush magazines into a class's depot grow the depot's own
/// vector, whose buffer may come from the same class; with the depot lock
/// held that must not need the depot again, nor after a reap drained it.
/// Every size class from 8 bytes to 8 KiB is churned, with reaps between,
/// and a watchdog instead of a hang.
#[test]
fn depot_growth_never_waits_for_its_own_class() {
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let sizes = (0..ladder::CLASSES)
            .map(ladder::size)
            .take_while(|&s| s <= 8192);
        for (n, size) in sizes.enumerate() {
            let blocks: Vec<Vec<u8>> = (0..600).map(|i| stamped(i as u8, size)).collect();
            for (i, b) in blocks.iter().enumerate() {
                check(b, i as u8);
            }
            drop(blocks);
            if n % 8 == 0 {
                slabscope::reap();
            }
        }
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(std::time::Duration::from_mins(2))
        .expect("churning every class finished (a hang here is a self-deadlock)");
}

/// `examples/global_heap.rs`, a program of maps, strings, vectors and
/// trees on four threads, prints the same on slabscope's global allocator
/// as on the system's, and its heap was on the size classes; so does the
/// same work on its main thread alone, where slabscope publishes its
/// statistics from the slow paths (here at every one) and a cache is
/// built and destroyed between the pieces of work.
#[test]
fn a_rust_program_prints_the_same_on_slabscope_and_on_the_system_allocator() {
    let mut exe = std::env::current_exe().expect("test binary path");
    exe.pop();
    if exe.ends_with("deps") {
        exe.pop();
    }
    let exe = exe.join("examples").join("global_heap");
    let run = |system: bool, on_main: bool| {
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("3");
        if on_main {
            // One thread: statistics published from the slow paths, at
            // every one of them.
            cmd.arg("main").env("SLABSCOPE_STATS_INTERVAL_MS", "1");
        }
        if system {
            cmd.env("SLABSCOPE_EXAMPLE_SYSTEM_ALLOC", "1");
        }
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} ({e}): cargo test builds the examples unless --test narrows \
                     it; add --examples",
                    exe.display()
                )
            });
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait_with_output()));
        let Ok(out) = rx.recv_timeout(std::time::Duration::from_mins(2)) else {
            // SAFETY: kill has no memory effects; pid is our child's.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("global_heap (system: {system}, on main: {on_main}) hung: a self-deadlock");
        };
        let out = out.expect("waiting for global_heap");
        assert!(out.status.success(), "{:?}", out.status);
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (want, _) = run(true, false);
    let (got, stderr) = run(false, false);
    assert!(want.contains("global_heap ok: 3 rounds"), "{want}");
    assert_eq!(got, want);
    let (got_on_main, _) = run(false, true);
    assert_eq!(got_on_main, want, "the same work on the main thread alone");
    let classes: usize = stderr
        .trim()
        .strip_prefix("kmem classes with slabs: ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no class count: {stderr:?}"));
    assert!(classes >= 10, "{classes} classes with slabs");
}

/// The classes were built at the first allocation, before `main`, which
/// fixed the tunables: setting them now is refused, as the docs say.
#[test]
fn tunables_are_fixed_before_main() {
    assert_eq!(
        kmem::built_classes().count(),
        kmem::ladder::CLASSES,
        "all built before the test ran (the global allocator builds them together)"
    );
    let r = slabscope::tunables::set(slabscope::tunables::Tunables::default());
    assert!(matches!(r, Err(slabscope::Error::TunablesFrozen)), "{r:?}");
}
