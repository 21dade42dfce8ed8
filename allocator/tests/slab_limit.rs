//! Cache type selection by `slab_limit`, as `spl_kmem_cache_create()` does it.

use slabscope::CacheBuilder;
use slabscope::flags::{KM_SLEEP, KMC_KVMEM, KMC_SLAB};
use slabscope::tunables::{self, Tunables};

#[test]
fn objects_up_to_slab_limit_go_to_the_system_allocator_unless_forced() {
    tunables::set(Tunables {
        slab_limit: 1024,
        stats_interval_ms: 0,
        ..Tunables::default()
    })
    .unwrap();
    let kinds = |size: usize, flags: u64| {
        let c = CacheBuilder::new("limit", size)
            .flags(flags)
            .build()
            .unwrap();
        let p = c.alloc(KM_SLEEP).unwrap();
        let s = c.stats();
        // SAFETY: freed once.
        unsafe { c.free(p) };
        c.destroy().unwrap();
        (s.flags & (KMC_SLAB | KMC_KVMEM), s.slab_total)
    };
    assert_eq!(kinds(512, 0), (KMC_SLAB, 0));
    assert_eq!(kinds(1024, 0), (KMC_SLAB, 0));
    assert_eq!(kinds(1025, 0), (KMC_KVMEM, 1));
    assert_eq!(kinds(512, KMC_KVMEM), (KMC_KVMEM, 1));
    assert_eq!(kinds(4096, KMC_SLAB), (KMC_SLAB, 0));
}
