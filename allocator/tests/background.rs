//! The background reaper returns idle magazine contents and empty slabs;
//! background threads do not keep destroyed caches alive.

mod support;

use std::time::Duration;

use slabscope::CacheBuilder;
use slabscope::flags::KM_SLEEP;
use slabscope::tunables::{self, Tunables};
use support::wait_until;

#[test]
fn the_reaper_empties_idle_magazines_and_threads_let_go_of_destroyed_caches() {
    tunables::set(Tunables {
        reap_interval_ms: 10,
        stats_interval_ms: 10,
        ..Tunables::default()
    })
    .unwrap();
    let c = CacheBuilder::new("bg_reap", 700).build().unwrap();
    assert!(
        matches!(
            tunables::set(Tunables::default()),
            Err(slabscope::Error::TunablesFrozen)
        ),
        "tunables cannot change once a cache exists"
    );
    let objs: Vec<_> = (0..20).map(|_| c.alloc(KM_SLEEP).unwrap()).collect();
    for p in objs {
        // SAFETY: freed once.
        unsafe { c.free(p) };
    }
    let s = c.stats();
    // Frees land in the magazine (with what refills brought in beyond them).
    assert!(s.mag_objs >= 20, "{s:?}");
    assert_eq!(s.obj_alloc, s.mag_objs, "{s:?}");
    assert!(s.slab_total > 0);
    wait_until(
        "the reaper to flush the idle magazine and reclaim",
        Duration::from_secs(5),
        || {
            let s = c.stats();
            s.mag_objs == 0 && s.slab_total == 0
        },
    );
    c.validate().unwrap();
    let s = c.stats();
    assert_eq!(s.slab_destroy, s.slab_create);

    // A busy cache keeps its magazine across reaper passes only while it is
    // used; this one is idle, so it is reclaimed again after new traffic.
    let p = c.alloc(KM_SLEEP).unwrap();
    // SAFETY: freed once.
    unsafe { c.free(p) };
    wait_until("the second reclaim", Duration::from_secs(5), || {
        c.stats().slab_total == 0
    });

    c.destroy().unwrap();
    // Only this handle is left once any pass in flight has finished.
    wait_until(
        "background threads to drop the cache",
        Duration::from_secs(5),
        || c.ref_count() == 1,
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        c.ref_count(),
        1,
        "a background thread picked up a destroyed cache"
    );
}
