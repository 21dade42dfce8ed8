//! Cache statistics: [`CacheStats`], the `/proc/spl/kmem/slab` text (both
//! from the contract crate, `slabscope_probes::stats`, so the inspector
//! prints the same text without linking the allocator) and the registry's
//! reports, [`all`] and [`publish`].

use slabscope_probes::MAX_CPUS;
pub use slabscope_probes::stats::*;

/// Every registered cache's statistics, in creation order.
pub fn all() -> Vec<CacheStats> {
    crate::cache::registered()
        .iter()
        .map(|c| c.stats())
        .collect()
}

/// Fires `cache_stats` for every registered cache now and returns exactly
/// the values fired, in creation order.
pub fn publish() -> Vec<CacheStats> {
    crate::cache::registered()
        .iter()
        .map(|c| {
            let snap = c.snapshot();
            slabscope_probes::fire::cache_stats(&snap);
            let mut s = CacheStats::from(&snap);
            if !c.slab_backed && c.mags.len() > MAX_CPUS {
                // The snapshot carries MAX_CPUS fills; keep the report whole.
                s.mag_fill = c.mag_fill().collect();
            }
            s
        })
        .collect()
}
