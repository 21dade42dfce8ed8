//! Fault injection at run time (`slabscope::tunables::fault`): slab mappings
//! failing 1 % and 100 % of the time, grows delayed past the grow timeout,
//! and both at once. In every case: no crash, the seed's fallback is taken
//! and counted (`slab_fail`, `obj_deadlock`, `obj_emergency`), `validate()`
//! holds, and after free-all + destroy the `os` seam has nothing mapped that
//! it did not have before.
//!
//! With every mapping failing a `KM_SLEEP` allocation retries for ever, as
//! SPL's does, unless the grow also outlives the timeout: then the cache
//! goes DEADLOCKED and hands out emergency objects. So 100 % is tested with
//! `KM_NOSLEEP` (returns `None`) and with `KM_SLEEP` plus a delay (emergency
//! objects).
//!
//! The scenarios share the process-wide fault switches and the mapped-bytes
//! count, so they run one after another in one test.

mod support;

use std::time::Duration;

use slabscope::flags::{KM_NOSLEEP, KM_SLEEP, KMC_DEADLOCKED, KMC_GROWING};
use slabscope::tunables::{self, Tunables, fault};
use slabscope::{CacheBuilder, Error, os};
use support::{destroy_and_check_unmapped, free_all, wait_until};

const TIMEOUT_MS: u64 = 10;
const DELAY_MS: u64 = 150;

/// 1 %: `KM_SLEEP` never fails, some grows fail and are counted, retried.
fn one_percent_of_mappings_fail() {
    let base = os::mapped_bytes();
    fault::set_slab_fail_permille(10).unwrap();
    let c = CacheBuilder::new("fault_1pct", 8192).build().unwrap();
    let per_slab = c.stats().slab_objs;
    let grows = 2000;
    let objs: Vec<_> = (0..grows * per_slab)
        .map(|_| c.alloc(KM_SLEEP).expect("KM_SLEEP never fails"))
        .collect();
    fault::set_slab_fail_permille(0).unwrap();
    let s = c.stats();
    // On a loaded machine a grow may outlive the 10 ms timeout and a few
    // objects be emergency ones, so count the mapping attempts themselves.
    assert!(s.obj_total >= grows * per_slab, "{s:?}");
    assert_eq!(
        s.obj_total,
        s.slab_total * per_slab + s.obj_emergency,
        "{s:?}"
    );
    let attempts = s.slab_create + s.slab_fail;
    assert!(attempts >= 1500, "~2000 grows were needed: {s:?}");
    // ≥ 1500 mappings at 1 %: P(no failure) = 0.99^1500 ≈ 3e-7.
    assert!(
        (1..=80).contains(&s.slab_fail),
        "about 1 % of {attempts} mappings should fail: {s:?}"
    );
    assert_eq!(s.slab_total, s.slab_create, "{s:?}");
    assert_eq!(
        (os::mapped_bytes() - base) as u64,
        s.slab_total * s.slab_size,
        "{s:?}"
    );
    c.validate().unwrap();
    free_all(&c, objs);
    destroy_and_check_unmapped(c, base);
}

/// 100 %, `KM_NOSLEEP`: `None` every time, each failed grow counted, nothing
/// mapped, no emergency objects (the grows fail fast, so no deadlock).
fn every_mapping_fails_nosleep() {
    let base = os::mapped_bytes();
    fault::set_slab_fail_permille(1000).unwrap();
    let c = CacheBuilder::new("fault_100pct_nosleep", 256)
        .build()
        .unwrap();
    for i in 1..=5u64 {
        assert!(c.alloc(KM_NOSLEEP).is_none(), "no slab can exist");
        wait_until("the failing grow", Duration::from_secs(10), || {
            c.flags() & KMC_GROWING == 0
        });
        let s = c.stats();
        assert_eq!(s.slab_fail, i, "each dispatched grow failed: {s:?}");
        assert_eq!(
            (s.slab_total, s.obj_total, s.obj_emergency, s.obj_deadlock),
            (0, 0, 0, 0),
            "{s:?}"
        );
    }
    assert_eq!(os::mapped_bytes(), base);
    c.validate().unwrap();
    fault::set_slab_fail_permille(0).unwrap();
    // Once mappings work again the cache recovers.
    let p = c.alloc(KM_SLEEP).expect("KM_SLEEP never fails");
    wait_until("the grow", Duration::from_secs(10), || {
        c.flags() & KMC_GROWING == 0
    });
    assert_eq!(c.stats().slab_total, 1);
    free_all(&c, vec![p]);
    destroy_and_check_unmapped(c, base);
}

/// 100 % with grows outliving the timeout, `KM_SLEEP`: the wait times out,
/// the cache goes DEADLOCKED and every allocation is an emergency object;
/// `KM_NOSLEEP` gets emergency objects too while DEADLOCKED (as in the seed).
fn every_mapping_fails_slowly_sleep_gets_emergency_objects() {
    let base = os::mapped_bytes();
    fault::set_slab_fail_permille(1000).unwrap();
    fault::set_grow_delay_ms(DELAY_MS);
    let c = CacheBuilder::new("fault_100pct_sleep", 512)
        .align(64)
        .build()
        .unwrap();
    let mut objs = Vec::new();
    for _ in 0..50 {
        let p = c.alloc(KM_SLEEP).expect("KM_SLEEP never fails");
        assert_eq!(
            p.as_ptr() as usize % 64,
            0,
            "emergency objects keep the alignment"
        );
        // SAFETY: 512 writable bytes.
        unsafe { p.as_ptr().write_bytes(0xe5, 512) };
        objs.push(p);
    }
    objs.push(
        c.alloc(KM_NOSLEEP)
            .expect("DEADLOCKED: KM_NOSLEEP gets an emergency object"),
    );
    let s = c.stats();
    assert_ne!(c.flags() & KMC_DEADLOCKED, 0);
    assert!(s.obj_deadlock >= 1, "{s:?}");
    assert_eq!(
        s.obj_emergency, 51,
        "every object is an emergency one: {s:?}"
    );
    assert_eq!(s.obj_emergency_max, 51, "{s:?}");
    assert_eq!((s.slab_total, s.obj_total), (0, 51), "{s:?}");
    assert_eq!(c.held(), 51, "held() counts emergency objects: {s:?}");
    assert_eq!(os::mapped_bytes(), base, "emergency objects are not slabs");
    c.validate().unwrap();
    // Destroy refuses while emergency objects are live, and frees nothing.
    match c.destroy() {
        Err(Error::Busy { obj_emergency, .. }) => assert_eq!(obj_emergency, 51),
        other => panic!("expected Busy, got {other:?}"),
    }
    let last = objs[0].as_ptr().wrapping_add(511);
    // SAFETY: objs[0] is live (destroy freed nothing) and has 512 bytes.
    assert_eq!(unsafe { last.read() }, 0xe5);
    fault::set_slab_fail_permille(0).unwrap();
    fault::set_grow_delay_ms(0);
    wait_until("the slow failing grows", Duration::from_secs(10), || {
        c.flags() & KMC_GROWING == 0
    });
    let failed = c.stats().slab_fail;
    assert!(failed >= 1, "the delayed grows failed: {:?}", c.stats());
    free_all(&c, objs);
    let s = c.stats();
    assert_eq!((s.obj_emergency, s.obj_total), (0, 0), "{s:?}");
    assert_eq!(s.obj_emergency_max, 51);
    c.validate().unwrap();
    destroy_and_check_unmapped(c, base);
}

/// Delay only: the first allocation deadlocks, emergency objects fill in,
/// the grow lands, DEADLOCKED clears and allocation returns to the slabs.
fn slow_grows_deadlock_then_recover() {
    let base = os::mapped_bytes();
    fault::set_grow_delay_ms(DELAY_MS);
    let c = CacheBuilder::new("fault_delay", 128).build().unwrap();
    let mut objs = vec![c.alloc(KM_SLEEP).expect("KM_SLEEP never fails")];
    assert!(c.stats().obj_deadlock >= 1, "{:?}", c.stats());
    while c.flags() & KMC_DEADLOCKED != 0 {
        objs.push(c.alloc(KM_SLEEP).unwrap());
    }
    fault::set_grow_delay_ms(0);
    wait_until("the grow", Duration::from_secs(10), || {
        c.flags() & KMC_GROWING == 0
    });
    let s = c.stats();
    assert!(s.obj_emergency_max >= 1, "{s:?}");
    assert_eq!(s.slab_fail, 0, "{s:?}");
    assert!(s.slab_total >= 1, "{s:?}");
    let emergency = s.obj_emergency;
    objs.push(c.alloc(KM_SLEEP).unwrap());
    assert_eq!(
        c.stats().obj_emergency,
        emergency,
        "after recovery objects come from slabs"
    );
    c.validate().unwrap();
    free_all(&c, objs);
    assert_eq!(c.stats().obj_emergency, 0);
    destroy_and_check_unmapped(c, base);
}

/// 1 % failures and grows just past the timeout while four threads allocate
/// and free: every object unique, counters exact, nothing left mapped.
fn faults_under_threads() {
    let base = os::mapped_bytes();
    fault::set_slab_fail_permille(10).unwrap();
    fault::set_grow_delay_ms(3 * TIMEOUT_MS);
    let c = CacheBuilder::new("fault_threads", 2000).build().unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                for round in 0..3 {
                    let objs: Vec<_> = (0..40 + round * 20)
                        .map(|_| c.alloc(KM_SLEEP).expect("KM_SLEEP never fails"))
                        .collect();
                    n += objs.len() as u64;
                    let addrs: Vec<usize> = objs.iter().map(|p| p.as_ptr() as usize).collect();
                    free_all(&c, objs);
                    drop(addrs);
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    fault::set_slab_fail_permille(0).unwrap();
    fault::set_grow_delay_ms(0);
    wait_until("the last grow", Duration::from_secs(10), || {
        c.flags() & KMC_GROWING == 0
    });
    let s = c.stats();
    assert_eq!(total, 4 * (40 + 60 + 80));
    assert!(s.obj_deadlock >= 1, "grows outlived the timeout: {s:?}");
    assert_eq!(
        s.obj_emergency, 0,
        "every emergency object was released: {s:?}"
    );
    assert_eq!(s.obj_alloc, s.mag_objs, "{s:?}");
    assert_eq!(
        (os::mapped_bytes() - base) as u64,
        s.slab_total * s.slab_size,
        "{s:?}"
    );
    destroy_and_check_unmapped(c, base);
}

#[test]
fn injected_faults_take_the_seeds_fallbacks_and_release_everything() {
    tunables::set(Tunables {
        grow_timeout_ms: TIMEOUT_MS,
        stats_interval_ms: 0,
        ..Tunables::default()
    })
    .expect("tunables are set before any cache exists");
    one_percent_of_mappings_fail();
    every_mapping_fails_nosleep();
    every_mapping_fails_slowly_sleep_gets_emergency_objects();
    slow_grows_deadlock_then_recover();
    faults_under_threads();
}
