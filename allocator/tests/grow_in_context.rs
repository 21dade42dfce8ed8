//! Growth in the allocating thread (`grow_in_context = 1`, the default): a
//! cold ramp maps every slab without handing a single grow to the worker
//! pool; a failed non-sleeping attempt is counted, and a `KM_SLEEP`
//! allocation then hands the grow to a worker; an injected grow delay turns
//! the attempt off, so the seed's asynchronous path, deadlock detection and
//! emergency objects run as before. `validate()` holds after every step and
//! destroy returns every mapped byte.
//!
//! The scenarios share the process-wide fault switches and the worker pool
//! (which starts on the first dispatch), so they run one after another in
//! one test, the ramp first.

mod support;

use std::collections::HashSet;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use slabscope::flags::{KM_NOSLEEP, KM_SLEEP, KMC_DEADLOCKED, KMC_GROWING};
use slabscope::tunables::{self, Tunables, fault};
use slabscope::{CacheBuilder, os};
use support::{Sendable, destroy_and_check_unmapped, free_all, threads_named, wait_until};

const TIMEOUT_MS: u64 = 50;
const DELAY_MS: u64 = 300;

/// A cold ramp of 64-byte objects, as issue 7 measures it: every slab is
/// grown by the allocating thread, no grow is dispatched, no worker thread
/// ever starts, and nothing waits or deadlocks.
fn cold_ramp_grows_in_the_allocating_thread() {
    let base = os::mapped_bytes();
    let c = CacheBuilder::new("ctx_ramp", 64).build().unwrap();
    let n = 100_000;
    let mut objs = Vec::with_capacity(n);
    for i in 0..n {
        let p = c.alloc(KM_SLEEP).expect("KM_SLEEP never fails");
        // SAFETY: 64 writable bytes.
        unsafe { p.as_ptr().write(i as u8) };
        objs.push(p);
    }
    c.validate().unwrap();
    let s = c.stats();
    assert!(s.slab_total * s.slab_objs >= n as u64, "{s:?}");
    assert_eq!(s.slab_create, s.slab_total, "{s:?}");
    assert_eq!(
        (s.slab_fail, s.obj_deadlock, s.obj_emergency_max),
        (0, 0, 0),
        "{s:?}"
    );
    assert_eq!(c.grow_dispatches(), 0, "a grow was handed off: {s:?}");
    assert_eq!(
        threads_named("slabscope-grow"),
        0,
        "the grow workers started although no grow was dispatched"
    );
    assert_eq!(c.flags() & KMC_GROWING, 0);
    assert_eq!(
        (os::mapped_bytes() - base) as u64,
        s.slab_total * s.slab_size,
        "{s:?}"
    );
    let unique: HashSet<usize> = objs.iter().map(|p| p.as_ptr() as usize).collect();
    assert_eq!(unique.len(), n, "a pointer was handed out twice");
    for (i, p) in objs.iter().enumerate() {
        // SAFETY: written above, still live.
        assert_eq!(unsafe { p.as_ptr().read() }, i as u8);
    }
    free_all(&c, objs);
    c.validate().unwrap();
    destroy_and_check_unmapped(c, base);
}

/// `KM_NOSLEEP` on an empty cache: the non-sleeping grow is exactly what
/// the caller allows, so the first allocation already gets an object (with
/// every grow on a worker it gets `None`; see `grow_async.rs`).
fn nosleep_on_an_empty_cache_gets_an_object() {
    let base = os::mapped_bytes();
    let c = CacheBuilder::new("ctx_nosleep", 256).build().unwrap();
    let p = c
        .alloc(KM_NOSLEEP)
        .expect("the in-context grow made an object available");
    let s = c.stats();
    assert_eq!((s.slab_total, s.slab_create), (1, 1), "{s:?}");
    assert_eq!(c.grow_dispatches(), 0);
    c.validate().unwrap();
    free_all(&c, vec![p]);
    destroy_and_check_unmapped(c, base);
}

/// Every mapping fails, `KM_NOSLEEP`: each allocation makes one attempt in
/// its own thread, counted in `slab_fail`, returns `None` at once and
/// leaves no grow in flight (a worker would only repeat the same
/// non-sleeping attempt).
fn failing_in_context_grows_nosleep() {
    let base = os::mapped_bytes();
    fault::set_slab_fail_permille(1000).unwrap();
    let c = CacheBuilder::new("ctx_fail_nosleep", 512).build().unwrap();
    for i in 1..=5u64 {
        let t0 = Instant::now();
        assert!(c.alloc(KM_NOSLEEP).is_none(), "no slab can exist");
        assert!(
            t0.elapsed() < Duration::from_millis(TIMEOUT_MS),
            "KM_NOSLEEP waited"
        );
        assert_eq!(c.flags() & KMC_GROWING, 0, "no grow left in flight");
        let s = c.stats();
        assert_eq!(s.slab_fail, i, "one attempt per allocation: {s:?}");
        assert_eq!(
            (s.slab_total, s.obj_total, s.obj_deadlock, s.obj_emergency),
            (0, 0, 0, 0),
            "{s:?}"
        );
    }
    assert_eq!(c.grow_dispatches(), 0);
    fault::set_slab_fail_permille(0).unwrap();
    assert_eq!(os::mapped_bytes(), base);
    c.validate().unwrap();
    destroy_and_check_unmapped(c, base);
}

/// Every mapping fails, `KM_SLEEP`: the failed attempt in the allocating
/// thread hands the grow to a worker, which may sleep; the allocation keeps
/// retrying (each retry one more attempt in context, one more hand-off)
/// until mappings work again, and then succeeds.
fn failing_in_context_grow_hands_off_to_a_worker() {
    let base = os::mapped_bytes();
    fault::set_slab_fail_permille(1000).unwrap();
    let c = CacheBuilder::new("ctx_fail_sleep", 512).build().unwrap();
    let c2 = c.clone();
    let t = std::thread::spawn(move || Sendable(c2.alloc(KM_SLEEP).expect("KM_SLEEP never fails")));
    wait_until(
        "failed grows on both paths",
        Duration::from_secs(10),
        || c.grow_dispatches() >= 2 && c.stats().slab_fail >= 4,
    );
    fault::set_slab_fail_permille(0).unwrap();
    let Sendable(p) = t.join().unwrap();
    wait_until("the last grow", Duration::from_secs(10), || {
        c.flags() & KMC_GROWING == 0
    });
    let s = c.stats();
    // On a loaded machine a worker's failing grow may outlive the wait, and
    // the object be an emergency one; either way it is accounted for.
    assert!(s.obj_total >= 1, "{s:?}");
    assert_eq!(s.slab_create, s.slab_total, "{s:?}");
    assert_eq!(s.obj_total, s.slab_total * s.slab_objs + s.obj_emergency);
    c.validate().unwrap();
    free_all(&c, vec![p]);
    destroy_and_check_unmapped(c, base);
}

/// A grow delay stands for memory only a sleeping allocation gets: the
/// in-context attempt fails at once without mapping, the grow goes to a
/// worker, the wait times out, the cache deadlocks and hands out emergency
/// objects. Without the delay, grows are in context again.
fn a_grow_delay_takes_the_asynchronous_path() {
    let base = os::mapped_bytes();
    fault::set_grow_delay_ms(DELAY_MS);
    let c = CacheBuilder::new("ctx_delay", 128).build().unwrap();
    let t0 = Instant::now();
    let mut objs = vec![c.alloc(KM_SLEEP).expect("KM_SLEEP never fails")];
    assert!(
        t0.elapsed() >= Duration::from_millis(TIMEOUT_MS),
        "the allocation did not wait for a worker"
    );
    let s = c.stats();
    assert!(s.obj_deadlock >= 1, "{s:?}");
    assert_eq!(s.slab_fail, 0, "nothing was mapped in context: {s:?}");
    assert!(c.grow_dispatches() >= 1);
    while c.flags() & KMC_DEADLOCKED != 0 {
        objs.push(c.alloc(KM_SLEEP).unwrap());
        c.validate().unwrap();
    }
    assert!(c.stats().obj_emergency_max >= 1, "{:?}", c.stats());
    fault::set_grow_delay_ms(0);
    wait_until("the delayed grow", Duration::from_secs(10), || {
        c.flags() & KMC_GROWING == 0
    });
    let dispatched = c.grow_dispatches();
    let slabs = c.stats().slab_create;
    let per_slab = c.stats().slab_objs as usize;
    for _ in 0..5 * per_slab {
        objs.push(c.alloc(KM_SLEEP).unwrap());
    }
    let s = c.stats();
    assert!(s.slab_create >= slabs + 4, "{s:?}");
    assert_eq!(
        c.grow_dispatches(),
        dispatched,
        "grows went to a worker without a delay: {s:?}"
    );
    c.validate().unwrap();
    free_all(&c, objs);
    assert_eq!(c.stats().obj_emergency, 0);
    destroy_and_check_unmapped(c, base);
}

/// Four threads ramp one cache at once: one grows while the others wait
/// for it or find its slab; every object is unique, the counters add up and
/// no grow leaves the allocating threads.
fn threads_ramp_together() {
    let base = os::mapped_bytes();
    let c = CacheBuilder::new("ctx_threads", 192).build().unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                (0..20_000)
                    .map(|_| Sendable(c.alloc(KM_SLEEP).expect("KM_SLEEP never fails")))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let objs: Vec<NonNull<u8>> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .map(|Sendable(p)| p)
        .collect();
    let unique: HashSet<usize> = objs.iter().map(|p| p.as_ptr() as usize).collect();
    assert_eq!(unique.len(), 80_000, "a pointer was handed out twice");
    c.validate().unwrap();
    let s = c.stats();
    assert_eq!(c.grow_dispatches(), 0, "{s:?}");
    assert_eq!(s.slab_create, s.slab_total, "{s:?}");
    assert_eq!(
        s.obj_total,
        s.slab_total * s.slab_objs + s.obj_emergency,
        "{s:?}"
    );
    free_all(&c, objs);
    c.validate().unwrap();
    assert_eq!(c.stats().obj_emergency, 0);
    destroy_and_check_unmapped(c, base);
}

#[test]
fn grows_run_in_the_allocating_thread_unless_they_must_sleep() {
    tunables::set(Tunables {
        grow_timeout_ms: TIMEOUT_MS,
        stats_interval_ms: 0,
        ..Tunables::default()
    })
    .expect("tunables are set before any cache exists");
    cold_ramp_grows_in_the_allocating_thread();
    nosleep_on_an_empty_cache_gets_an_object();
    failing_in_context_grows_nosleep();
    failing_in_context_grow_hands_off_to_a_worker();
    a_grow_delay_takes_the_asynchronous_path();
    threads_ramp_together();
}
