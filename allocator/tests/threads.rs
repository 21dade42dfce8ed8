//! Multi-thread stress: four threads allocate, hand objects to each other
//! and free them on other threads than they were allocated on (mimalloc's
//! `test-stress` pattern). The constructor writes an address-derived pattern
//! that the destructor checks; every live pointer is unique; the counters
//! reconcile exactly after the join.

use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use slabscope::flags::KM_SLEEP;
use slabscope::tunables::{self, Tunables};
use slabscope::{Cache, CacheBuilder};

const THREADS: usize = 4;
const ROUNDS: usize = 100_000;
const SIZE: usize = 96;

fn pattern(p: NonNull<u8>) -> u64 {
    (p.as_ptr() as u64).rotate_left(17) ^ 0x5151_5151_5151_5151
}

/// A pointer that may cross threads (the test owns the object it names).
struct Sendable(NonNull<u8>);
// SAFETY: the object is owned by whichever thread holds the Sendable.
unsafe impl Send for Sendable {}

#[test]
fn cross_thread_frees_keep_every_pointer_unique_and_counters_exact() {
    tunables::set(Tunables {
        magazine_size: 8,
        stats_interval_ms: 0,
        reap_interval_ms: 5,
        ..Tunables::default()
    })
    .unwrap();
    let ctors = Arc::new(AtomicU64::new(0));
    let dtors = Arc::new(AtomicU64::new(0));
    let (c2, d2) = (ctors.clone(), dtors.clone());
    let cache: Cache = CacheBuilder::new("mt_stress", SIZE)
        .ctor(move |p, _| {
            let v = pattern(p);
            // SAFETY: SIZE writable, 8-aligned bytes.
            unsafe { p.as_ptr().cast::<u64>().write(v) };
            // SAFETY: as above; the last word.
            unsafe { p.as_ptr().wrapping_add(SIZE - 8).cast::<u64>().write(!v) };
            c2.fetch_add(1, Ordering::Relaxed);
            true
        })
        .dtor(move |p| {
            let v = pattern(p);
            // SAFETY: SIZE readable bytes written by the ctor.
            let a = unsafe { p.as_ptr().cast::<u64>().read() };
            // SAFETY: as above; the last word.
            let b = unsafe { p.as_ptr().wrapping_add(SIZE - 8).cast::<u64>().read() };
            assert_eq!((a, b), (v, !v), "object {p:p} corrupted while live");
            d2.fetch_add(1, Ordering::Relaxed);
        })
        .build()
        .unwrap();
    let live = Arc::new(Mutex::new(HashSet::<usize>::new()));
    let exchange = Arc::new(Mutex::new(Vec::<Sendable>::new()));
    let allocs = Arc::new(AtomicU64::new(0));

    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (cache, live, exchange, allocs) = (
                cache.clone(),
                live.clone(),
                exchange.clone(),
                allocs.clone(),
            );
            std::thread::spawn(move || {
                let mut mine: Vec<NonNull<u8>> = Vec::new();
                let mut x = 0x2545_f491_4f6c_dd1du64 ^ t as u64;
                for _ in 0..ROUNDS {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    match x % 8 {
                        0..=3 => {
                            let p = cache.alloc(KM_SLEEP).expect("KM_SLEEP never fails");
                            allocs.fetch_add(1, Ordering::Relaxed);
                            assert!(
                                live.lock().unwrap().insert(p.as_ptr() as usize),
                                "{p:p} handed out twice"
                            );
                            mine.push(p);
                        }
                        4 => {
                            if let Some(p) = mine.pop() {
                                exchange.lock().unwrap().push(Sendable(p));
                            }
                        }
                        5 => {
                            let theirs = exchange.lock().unwrap().pop();
                            if let Some(Sendable(p)) = theirs {
                                assert!(live.lock().unwrap().remove(&(p.as_ptr() as usize)));
                                // SAFETY: allocated from this cache, owned by us now, freed once.
                                unsafe { cache.free(p) };
                            }
                        }
                        _ => {
                            if let Some(p) = mine.pop() {
                                assert!(live.lock().unwrap().remove(&(p.as_ptr() as usize)));
                                // SAFETY: allocated above, freed once.
                                unsafe { cache.free(p) };
                            }
                        }
                    }
                }
                mine.into_iter().map(Sendable).collect::<Vec<_>>()
            })
        })
        .collect();
    // Meanwhile validate and reap concurrently: every equation must hold at
    // every instant the locks are held.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checker = {
        let (cache, done) = (cache.clone(), done.clone());
        std::thread::spawn(move || {
            let mut passes = 0u64;
            while !done.load(Ordering::Relaxed) {
                cache
                    .validate()
                    .unwrap_or_else(|e| panic!("concurrent validate: {e}"));
                cache.reap_now();
                passes += 1;
            }
            passes
        })
    };
    let mut left: Vec<Sendable> = Vec::new();
    for h in handles {
        left.extend(h.join().expect("worker thread panicked"));
    }
    done.store(true, Ordering::Relaxed);
    assert!(checker.join().expect("validator panicked") > 0);
    left.append(&mut exchange.lock().unwrap());
    assert_eq!(
        left.len(),
        live.lock().unwrap().len(),
        "the model lost track of objects"
    );

    cache.validate().unwrap();
    let s = cache.stats();
    assert_eq!(
        s.obj_alloc - s.mag_objs + s.obj_emergency,
        left.len() as u64,
        "{s:?}"
    );
    assert_eq!(
        ctors.load(Ordering::Relaxed),
        allocs.load(Ordering::Relaxed)
    );
    assert_eq!(
        ctors.load(Ordering::Relaxed) - dtors.load(Ordering::Relaxed),
        left.len() as u64
    );

    for Sendable(p) in left {
        // SAFETY: every remaining object is freed once.
        unsafe { cache.free(p) };
    }
    cache.validate().unwrap();
    let s = cache.stats();
    assert_eq!(s.obj_alloc, s.mag_objs, "{s:?}");
    assert_eq!(s.obj_emergency, 0);
    assert_eq!(ctors.load(Ordering::Relaxed), dtors.load(Ordering::Relaxed));
    cache.destroy().expect("every object freed");
    let s = cache.stats();
    assert_eq!(
        (s.slab_total, s.obj_total, s.obj_alloc, s.mag_objs),
        (0, 0, 0, 0),
        "{s:?}"
    );
}
