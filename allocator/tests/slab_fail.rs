//! Slab mapping failures (`fault_slab_fail_permille`): KM_SLEEP allocations
//! still succeed, failed grows are counted in `slab_fail`.

use slabscope::CacheBuilder;
use slabscope::flags::KM_SLEEP;
use slabscope::tunables::{self, Tunables};

#[test]
fn failed_grows_are_counted_and_retried() {
    tunables::set(Tunables {
        grow_timeout_ms: 5,
        fault_slab_fail_permille: 500,
        obj_per_slab: 1,
        max_size: 1,
        stats_interval_ms: 0,
        ..Tunables::default()
    })
    .unwrap();
    let c = CacheBuilder::new("f_fail", 8192).build().unwrap();
    let objs: Vec<_> = (0..40)
        .map(|_| c.alloc(KM_SLEEP).expect("KM_SLEEP never fails"))
        .collect();
    let s = c.stats();
    assert!(
        s.slab_fail > 0,
        "with half the grows failing some must have: {s:?}"
    );
    // A grow that outlives the 5 ms timeout on a loaded machine makes some
    // objects emergency ones; either way all 40 are accounted for.
    assert!(
        s.slab_total * s.slab_objs + s.obj_emergency >= 40,
        "40 objects are out: {s:?}"
    );
    assert_eq!(s.obj_total, s.slab_total * s.slab_objs + s.obj_emergency);
    c.validate().unwrap();
    for p in objs {
        // SAFETY: freed once.
        unsafe { c.free(p) };
    }
    c.destroy().unwrap();
}
