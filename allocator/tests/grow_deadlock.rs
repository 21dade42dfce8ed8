//! Asynchronous growth under fault injection: every grow sleeps 100 ms while
//! allocations wait only 20 ms, so each first allocation on an empty cache
//! deadlocks and gets emergency objects until the grow lands.

mod support;

use std::sync::Once;
use std::time::{Duration, Instant};

use slabscope::flags::{KM_NOSLEEP, KM_SLEEP, KMC_DEADLOCKED, KMC_GROWING};
use slabscope::tunables::{self, Tunables};
use slabscope::{CacheBuilder, Error};
use support::{Sendable, wait_until};

const TIMEOUT_MS: u64 = 20;
const DELAY_MS: u64 = 100;

fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tunables::set(Tunables {
            grow_timeout_ms: TIMEOUT_MS,
            fault_grow_delay_ms: DELAY_MS,
            stats_interval_ms: 0,
            ..Tunables::default()
        })
        .expect("tunables are set before any cache exists");
    });
}

#[test]
fn nosleep_returns_none_while_the_grow_is_in_flight() {
    setup();
    let c = CacheBuilder::new("g_nosleep", 256).build().unwrap();
    let t0 = Instant::now();
    assert!(c.alloc(KM_NOSLEEP).is_none(), "no object exists yet");
    assert!(
        t0.elapsed() < Duration::from_millis(DELAY_MS),
        "KM_NOSLEEP must not wait for the grow"
    );
    assert_ne!(c.flags() & KMC_GROWING, 0, "a grow was dispatched");
    // A second KM_NOSLEEP while the same grow runs dispatches nothing new.
    assert!(c.alloc(KM_NOSLEEP).is_none());
    wait_until("the grow", Duration::from_secs(10), || {
        c.flags() & KMC_GROWING == 0
    });
    let s = c.stats();
    assert_eq!(
        (s.slab_total, s.slab_create, s.obj_deadlock),
        (1, 1, 0),
        "{s:?}"
    );
    let p = c.alloc(KM_NOSLEEP).expect("the grown slab has objects");
    c.validate().unwrap();
    // SAFETY: freed once.
    unsafe { c.free(p) };
    c.destroy().unwrap();
}

#[test]
fn a_slow_grow_deadlocks_and_emergency_objects_fill_in() {
    setup();
    let c = CacheBuilder::new("g_deadlock", 512)
        .align(64)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let first = c.alloc(KM_SLEEP).expect("KM_SLEEP never fails");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(TIMEOUT_MS),
        "returned after {waited:?}"
    );
    assert_eq!(first.as_ptr() as usize % 64, 0);
    let s = c.stats();
    assert!(s.obj_deadlock >= 1, "{s:?}");
    // The grow may have landed already on a loaded machine; if not, the
    // first object is an emergency one and the cache is DEADLOCKED.
    let mut objs = vec![first];
    let mut saw_emergency = s.obj_emergency;
    while c.flags() & KMC_DEADLOCKED != 0 {
        let p = c.alloc(KM_SLEEP).unwrap();
        // SAFETY: 512 writable bytes.
        unsafe { p.as_ptr().write_bytes(0x5a, 512) };
        objs.push(p);
        saw_emergency = saw_emergency.max(c.stats().obj_emergency);
        c.validate().unwrap();
    }
    assert!(saw_emergency >= 1, "no emergency object was handed out");
    wait_until("the grow", Duration::from_secs(10), || {
        c.flags() & KMC_GROWING == 0
    });
    let s = c.stats();
    assert_eq!(s.obj_emergency_max, saw_emergency.max(s.obj_emergency_max));
    assert_eq!(
        s.obj_total,
        s.slab_total * s.slab_objs + s.obj_emergency,
        "{s:?}"
    );
    // After the grow landed, allocations come from the slab.
    let from_slab = c.alloc(KM_SLEEP).unwrap();
    assert_eq!(c.stats().obj_emergency, s.obj_emergency);
    objs.push(from_slab);
    c.validate().unwrap();

    // Destroy refuses while emergency objects are live.
    match c.destroy() {
        Err(Error::Busy { obj_emergency, .. }) => assert_eq!(obj_emergency, s.obj_emergency),
        other => panic!("expected Busy, got {other:?}"),
    }
    for p in objs {
        // SAFETY: each freed once.
        unsafe { c.free(p) };
        c.validate().unwrap();
    }
    let s = c.stats();
    assert_eq!(
        s.obj_emergency, 0,
        "every emergency object was released: {s:?}"
    );
    assert_eq!(s.obj_total, s.slab_total * s.slab_objs);
    c.destroy().expect("everything was freed");
}

#[test]
fn destroy_waits_for_an_in_flight_grow() {
    setup();
    let c = CacheBuilder::new("g_destroy", 64).build().unwrap();
    assert!(c.alloc(KM_NOSLEEP).is_none());
    assert_ne!(c.flags() & KMC_GROWING, 0);
    let t0 = Instant::now();
    c.destroy().expect("nothing allocated");
    assert!(
        t0.elapsed() >= Duration::from_millis(DELAY_MS / 2),
        "destroy returned before the grow finished"
    );
    assert!(slabscope::stats::all().iter().all(|s| s.id != c.id()));
}

#[test]
fn threads_racing_into_a_deadlocked_cache_all_get_unique_objects() {
    setup();
    let c = CacheBuilder::new("g_threads", 128).build().unwrap();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                (0..200)
                    .map(|_| Sendable(c.alloc(KM_SLEEP).expect("KM_SLEEP never fails")))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let objs: Vec<Sendable> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let unique: std::collections::HashSet<usize> =
        objs.iter().map(|s| s.0.as_ptr() as usize).collect();
    assert_eq!(unique.len(), 600, "a pointer was handed out twice");
    let s = c.stats();
    assert!(s.obj_deadlock >= 1, "{s:?}");
    assert!(s.obj_emergency_max >= 1, "{s:?}");
    c.validate().unwrap();
    for Sendable(p) in objs {
        // SAFETY: each object freed once, on another thread than its allocator.
        unsafe { c.free(p) };
    }
    c.validate().unwrap();
    assert_eq!(c.stats().obj_emergency, 0);
    c.destroy().unwrap();
}
