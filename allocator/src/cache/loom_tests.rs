//! loom models of the cache's concurrent mechanisms, run with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p slabscope --lib --release loom
//! ```
//!
//! Each model runs the real cache code — the magazine lock, the cache lock
//! and condition variables, the flag word, the emergency mirror, all through
//! [`crate::sync`] — with two allocating threads at most and magazines of two
//! objects. Grows run in the allocating thread (the default,
//! `grow_in_context = 1`) or, for caches made with [`async_cache`], on a
//! loom thread of their own as a worker's grow (see [`crate::cache::grow`]).
//! loom explores every interleaving up to the preemption bound and fails a
//! model on a deadlock or lost wake-up (a waiter nobody will notify), on a
//! data race on the magazine slots, or on a failed assertion.
//!
//! loom 0.7 has no model of time (its `Condvar::wait_timeout` waits for a
//! notification). The grow wait therefore runs in one of two modes per cache
//! (see [`crate::sync::wait_timeout_while`]): waiting for the notification,
//! which finds lost wake-ups, or expiring after letting every other thread
//! run, which reaches the DEADLOCKED transition. What is not modelled is a
//! wait that blocks *and then* expires; the real timeout is tested with real
//! time in `tests/grow_deadlock.rs` and `tests/faults.rs`.

use std::collections::HashSet;

use crate::flags::{KM_NOSLEEP, KM_SLEEP, KMC_DEADLOCKED};
use crate::tunables::{self, Tunables};
use crate::{Cache, CacheBuilder};

/// Tiny, thread-free configuration: magazines of 2, no background threads
/// (they would touch loom objects from outside the model).
fn setup() {
    let _ = tunables::set(Tunables {
        magazine_size: 2,
        stats_interval_ms: 0,
        reap_interval_ms: 0,
        ..Tunables::default()
    });
    let t = tunables::get().expect("valid tunables");
    assert_eq!(
        (t.magazine_size, t.stats_interval_ms, t.reap_interval_ms),
        (2, 0, 0),
        "another test fixed the tunables first"
    );
}

/// Runs `f` under loom and returns how many interleavings were explored
/// (asserted > 1 so a model that loom cannot see into fails).
fn model(f: impl Fn() + Sync + Send + 'static) -> usize {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    b.check(move || {
        r.fetch_add(1, Ordering::Relaxed);
        f()
    });
    let n = runs.load(Ordering::Relaxed);
    println!("{n} interleavings explored");
    assert!(
        n > 1,
        "loom explored a single interleaving: the model sees no shared state"
    );
    n
}

fn cache(name: &str) -> Cache {
    CacheBuilder::new(name, 64).build().expect("valid cache")
}

/// A cache whose grows all go to a worker (`grow_in_context = 0`).
fn async_cache(name: &str) -> Cache {
    let c = cache(name);
    c.inner
        .loom_async_only
        .store(true, std::sync::atomic::Ordering::Relaxed);
    c
}

/// One `KM_SLEEP` allocation on a second loom thread and one on this one,
/// racing; the two objects' addresses.
fn alloc_on_two_threads(c: &Cache) -> [usize; 2] {
    let c2 = c.clone();
    let t = loom::thread::spawn(move || {
        c2.alloc(KM_SLEEP).expect("KM_SLEEP never fails").as_ptr() as usize
    });
    let p = c.alloc(KM_SLEEP).expect("KM_SLEEP never fails").as_ptr() as usize;
    [p, t.join().unwrap()]
}

/// Frees `objs`, checks the cache and destroys it (which waits for any grow
/// still in flight: a lost wake-up there is a loom deadlock).
fn finish(c: &Cache, objs: &[usize]) {
    let unique: HashSet<_> = objs.iter().collect();
    assert_eq!(unique.len(), objs.len(), "an object was handed out twice");
    c.validate().unwrap_or_else(|e| panic!("validate: {e}"));
    for &p in objs {
        let p = std::ptr::NonNull::new(p as *mut u8).expect("non-null object");
        // SAFETY: each object came from `c` and is freed once.
        unsafe { c.free(p) };
    }
    c.validate()
        .unwrap_or_else(|e| panic!("validate after frees: {e}"));
    let s = c.stats();
    assert_eq!(s.obj_emergency, 0, "{s:?}");
    assert_eq!(s.obj_alloc, s.mag_objs, "{s:?}");
    c.destroy().expect("every object was freed");
}

/// Two threads allocate from an empty cache at once: one grows a slab in
/// its own thread (GROWING), the other waits for it or sees the new slab,
/// both get distinct objects, nothing is dispatched, and nobody sleeps for
/// ever (the grow wakes its waiters only when there are some: a wake-up
/// lost that way is a loom deadlock).
#[test]
fn loom_grow_in_context_and_wait() {
    setup();
    model(|| {
        let c = cache("loom_grow_ctx");
        let [p, q] = alloc_on_two_threads(&c);
        let s = c.stats();
        assert!(s.slab_create >= 1, "{s:?}");
        assert_eq!(c.grow_dispatches(), 0, "{s:?}");
        assert_eq!(s.obj_deadlock, 0, "no wait can time out under loom: {s:?}");
        finish(&c, &[p, q]);
    });
}

/// Two threads allocate from an empty cache at once: one grow is
/// dispatched (GROWING), the other thread waits for it or sees the new slab,
/// both get distinct objects, and nobody sleeps for ever.
#[test]
fn loom_grow_dispatch_and_wait() {
    setup();
    model(|| {
        let c = async_cache("loom_grow");
        let [p, q] = alloc_on_two_threads(&c);
        let s = c.stats();
        assert!(s.slab_create >= 1, "{s:?}");
        assert_eq!(s.obj_deadlock, 0, "no wait can time out under loom: {s:?}");
        finish(&c, &[p, q]);
    });
}

/// Two threads allocate from an empty cache and their waits for the grow
/// may expire before it lands: the one that times out with GROWING still set
/// marks the cache DEADLOCKED and counts `obj_deadlock`; allocations then get
/// emergency objects until the grow lands and clears DEADLOCKED. Every
/// interleaving ends with distinct objects, consistent counters, and a
/// destroy that finds every grow finished.
#[test]
fn loom_grow_wait_expires_into_deadlock_and_emergency_objects() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    setup();
    // Interleavings that reached DEADLOCKED and that handed out an
    // emergency object: both must occur, or the model misses the path.
    let reached = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let seen = reached.clone();
    model(move || {
        // With both threads growing in context the waiter's expiring wait
        // always lets the grower finish first (loom runs the other thread
        // after a yield), so DEADLOCKED needs the worker's third thread.
        let c = async_cache("loom_deadlock");
        c.inner
            .loom_wait_expires
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let [p, q] = alloc_on_two_threads(&c);
        let s = c.stats();
        assert_eq!(
            s.obj_total,
            s.slab_total * s.slab_objs + s.obj_emergency,
            "{s:?}"
        );
        if s.obj_emergency_max > 0 {
            assert!(
                s.obj_deadlock > 0,
                "emergency objects without a deadlock: {s:?}"
            );
        }
        seen[0].fetch_add(usize::from(s.obj_deadlock > 0), Ordering::Relaxed);
        seen[1].fetch_add(usize::from(s.obj_emergency_max > 0), Ordering::Relaxed);
        finish(&c, &[p, q]);
        assert_eq!(
            c.flags() & KMC_DEADLOCKED,
            0,
            "the last grow cleared DEADLOCKED"
        );
    });
    let (deadlocked, emergency) = (
        reached[0].load(Ordering::Relaxed),
        reached[1].load(Ordering::Relaxed),
    );
    println!("DEADLOCKED in {deadlocked}, emergency objects in {emergency} interleavings");
    assert!(
        deadlocked > 0 && emergency > 0,
        "the model never deadlocked"
    );
}

/// While DEADLOCKED, one thread frees an emergency object while another
/// allocates (an emergency object, or a slab object if the grow landed and
/// cleared DEADLOCKED first): the emergency map, `obj_emergency` and its
/// lock-free mirror stay consistent, and nothing is lost.
#[test]
fn emergency_alloc_and_free_race_a_landing_grow() {
    setup();
    model(|| {
        let c = async_cache("loom_emergency");
        c.inner.set_flag(KMC_DEADLOCKED);
        // An emergency object (or None if the grow this dispatches landed
        // and cleared DEADLOCKED before the check).
        let first = c.alloc(KM_NOSLEEP).map(|p| p.as_ptr() as usize);
        let c2 = c.clone();
        let t = loom::thread::spawn(move || {
            if let Some(p) = first {
                let p = std::ptr::NonNull::new(p as *mut u8).unwrap();
                // SAFETY: `first` came from this cache and is freed once.
                unsafe { c2.free(p) };
            }
        });
        let second = c.alloc(KM_SLEEP).expect("KM_SLEEP never fails").as_ptr() as usize;
        t.join().unwrap();
        let s = c.stats();
        assert_eq!(
            s.obj_total,
            s.slab_total * s.slab_objs + s.obj_emergency,
            "{s:?}"
        );
        assert!(s.obj_emergency <= 1, "only `second` can be live: {s:?}");
        finish(&c, &[second]);
    });
}

/// A reap (flush the magazine, unmap the empty slab, REAPING set) races an
/// allocation that finds the magazine empty and must wait for the reap or
/// grow again: the object is valid and unique, and the reap's waiters wake.
#[test]
fn loom_reap_races_alloc() {
    setup();
    model(|| {
        let c = cache("loom_reap");
        // One slab with one object back in the magazine.
        let warm = c.alloc(KM_SLEEP).expect("KM_SLEEP never fails");
        // SAFETY: freed once.
        unsafe { c.free(warm) };
        let c2 = c.clone();
        let t = loom::thread::spawn(move || c2.reap_now());
        let p = c.alloc(KM_SLEEP).expect("KM_SLEEP never fails");
        // SAFETY: 64 writable bytes: the slab under it must still be mapped.
        unsafe { p.as_ptr().write_bytes(0x5a, 64) };
        t.join().unwrap();
        finish(&c, &[p.as_ptr() as usize]);
    });
}

/// An allocation that cannot sleep dispatches a grow and returns; destroy,
/// which waits for the grow's reference, races the grow's end. The grow
/// wakes destroy (only when DESTROY is set: a wake-up lost that way is a
/// loom deadlock), and its slab is unmapped with the cache.
#[test]
fn loom_destroy_waits_for_a_dispatched_grow() {
    setup();
    model(|| {
        let c = async_cache("loom_destroy");
        assert!(c.alloc(KM_NOSLEEP).is_none(), "the grow was dispatched");
        c.destroy().expect("nothing allocated");
    });
}
