//! The per-CPU magazines under preemption and migration: more threads than
//! CPUs, half of them pinned to CPU 0 so they share one magazine and are
//! time-sliced in the middle of their operations (with restartable
//! sequences, in the middle of critical sections, which the kernel aborts),
//! the others free to migrate, while a flusher takes every magazine
//! exclusively (`reap_now`, `kmem_reap`, `validate`) the whole time.
//!
//! Each object carries an owner word, swapped atomically to the owner's id
//! (1..=threads) when handed out and to FREE before the free: an object
//! handed to two threads at once, or lost and found, fails the swap. At the end
//! the counters reconcile and destroy returns every slab.
//!
//! Runs with whichever magazine protocol the system gives (restartable
//! sequences on x86_64 with glibc 2.35+); `SLABSCOPE_MAGAZINE_RSEQ=0` runs
//! it on the locked magazines.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use slabscope::flags::{KM_SLEEP, KMC_NODEBUG};
use slabscope::tunables::{self, Tunables};
use slabscope::{CacheBuilder, os};

const FREE: u64 = u64::MAX;

fn owner(p: NonNull<u8>) -> &'static AtomicU64 {
    // SAFETY: objects are 64 bytes, 8-aligned, and live while the caller
    // owns them; the word is only ever accessed atomically.
    unsafe { AtomicU64::from_ptr(p.as_ptr().cast()) }
}

fn pin_to_cpu0() -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes bit 0 of the set it is given.
    unsafe { libc::CPU_SET(0, &mut set) };
    // SAFETY: the set is valid for its size; pid 0 is this thread.
    unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0 }
}

fn run(flags: u64, threads: u64, ops: u64) {
    let mapped_before = os::mapped_bytes();
    let cache = CacheBuilder::new(format!("preempt_{flags:x}"), 64)
        .flags(flags)
        .build()
        .unwrap();
    let protocol = cache.magazine_protocol();
    let done = Arc::new(AtomicBool::new(false));
    let flusher = {
        let (cache, done) = (cache.clone(), done.clone());
        std::thread::spawn(move || {
            let mut passes = 0u64;
            while !done.load(Ordering::Relaxed) {
                match passes % 3 {
                    0 => cache.reap_now(),
                    1 => slabscope::reap(),
                    _ => cache
                        .validate()
                        .unwrap_or_else(|e| panic!("concurrent validate: {e}")),
                }
                passes += 1;
            }
            passes
        })
    };
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let pinned = t % 2 == 0 && pin_to_cpu0();
                // Owner ids start at 1: fresh slab memory reads 0.
                let t = t + 1;
                let mut mine: Vec<NonNull<u8>> = Vec::with_capacity(64);
                let mut x = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(t + 1) | 1;
                for i in 0..ops {
                    // Now and then idle long enough for the reaper to flush
                    // this CPU's magazine, and resume just as it may.
                    if i % 20_000 == 19_999 {
                        std::thread::sleep(std::time::Duration::from_micros(1500 + (x % 1000)));
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Runs of allocations then frees, long enough to empty
                    // and overflow the 8-object magazines.
                    let grow = (x >> 20) % 64 >= mine.len() as u64;
                    if grow {
                        let p = cache.alloc(KM_SLEEP).expect("KM_SLEEP never fails");
                        let was = owner(p).swap(t, Ordering::AcqRel);
                        // A free object's word is FREE, or whatever the
                        // allocator left there (its free-list link), never an
                        // owner id.
                        assert!(
                            was == 0 || was > threads,
                            "{p:p} handed to thread {t} while thread {was} owns it"
                        );
                        mine.push(p);
                    } else if let Some(p) = mine.pop() {
                        let was = owner(p).swap(FREE, Ordering::AcqRel);
                        assert_eq!(was, t, "{p:p} changed owner while thread {t} held it");
                        // SAFETY: allocated above, freed once.
                        unsafe { cache.free(p) };
                    }
                }
                for p in mine {
                    assert_eq!(owner(p).swap(FREE, Ordering::AcqRel), t);
                    // SAFETY: allocated above, freed once.
                    unsafe { cache.free(p) };
                }
                pinned
            })
        })
        .collect();
    let pinned = workers
        .into_iter()
        .map(|h| h.join().expect("worker panicked"))
        .filter(|&p| p)
        .count();
    done.store(true, Ordering::Relaxed);
    let passes = flusher.join().expect("flusher panicked");
    cache.validate().unwrap();
    let s = cache.stats();
    assert_eq!(s.obj_alloc, s.mag_objs, "every object freed: {s:?}");
    cache.reap_now();
    cache.destroy().expect("every object freed");
    assert_eq!(os::mapped_bytes(), mapped_before, "slabs left mapped");
    println!(
        "{threads} threads ({pinned} pinned to CPU 0) × {ops} operations, {protocol:?} \
         magazines, flags {flags:#x}: {passes} flusher passes, {} slabs created",
        s.slab_create
    );
}

#[test]
fn preempted_and_migrated_operations_never_share_or_lose_an_object() {
    tunables::set(Tunables {
        magazine_size: 8,
        stats_interval_ms: 0,
        // The background reaper flushes magazines idle for a whole interval
        // from its own thread: the cross-CPU flush that needs the fence.
        reap_interval_ms: 1,
        ..Tunables::default()
    })
    .unwrap();
    // Per thread; the unoptimised build of the test suite runs fewer.
    let ops = if std::env::var_os("SLABSCOPE_LONG").is_some() {
        10_000_000
    } else if cfg!(debug_assertions) {
        800_000
    } else {
        3_000_000
    };
    run(0, 6, ops);
    run(KMC_NODEBUG, 6, ops);
}
