//! `grow_in_context = 0` and `slab_reserve_kb = 0` restore the seed's
//! growth: every grow is handed to the worker pool, a `KM_NOSLEEP`
//! allocation on an empty cache returns `None` while its grow runs, and
//! every slab is a mapping of its own (no reservation is ever made).

mod support;

use std::time::Duration;

use slabscope::flags::{KM_NOSLEEP, KM_SLEEP, KMC_GROWING};
use slabscope::tunables::{self, Tunables};
use slabscope::{CacheBuilder, os};
use support::wait_until;

#[test]
fn with_grow_in_context_off_every_grow_goes_to_a_worker() {
    tunables::set(Tunables {
        grow_in_context: 0,
        slab_reserve_kb: 0,
        stats_interval_ms: 0,
        ..Tunables::default()
    })
    .expect("tunables are set before any cache exists");
    let base = os::mapped_bytes();

    let c = CacheBuilder::new("async_nosleep", 256).build().unwrap();
    assert!(
        c.alloc(KM_NOSLEEP).is_none(),
        "the grow was dispatched, not run by the caller"
    );
    assert_eq!(c.grow_dispatches(), 1);
    wait_until("the grow", Duration::from_secs(10), || {
        c.flags() & KMC_GROWING == 0
    });
    let p = c.alloc(KM_NOSLEEP).expect("the worker's slab has objects");
    // SAFETY: p came from c and is freed once.
    unsafe { c.free(p) };
    c.validate().unwrap();
    c.destroy().unwrap();

    let c = CacheBuilder::new("async_ramp", 64).build().unwrap();
    let objs: Vec<_> = (0..2_000)
        .map(|_| c.alloc(KM_SLEEP).expect("KM_SLEEP never fails"))
        .collect();
    c.validate().unwrap();
    let s = c.stats();
    assert!(s.slab_create * s.slab_objs >= 2_000, "{s:?}");
    assert_eq!(
        c.grow_dispatches(),
        s.slab_create + s.slab_fail,
        "every grow went to a worker: {s:?}"
    );
    for p in objs {
        // SAFETY: each object came from c and is freed once.
        unsafe { c.free(p) };
    }
    c.validate().unwrap();
    assert_eq!(os::reserved_bytes(), 0, "no slab came from a reservation");
    c.destroy().unwrap();
    assert_eq!(os::mapped_bytes(), base);
}
