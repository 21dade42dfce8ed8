//! Flag values, bit for bit SPL's (`include/os/linux/spl/sys/kmem_cache.h`
//! and `sys/kmem.h`), so C callers can pass the constants they know, and
//! their names. The allocator re-exports this module as `slabscope::flags`;
//! the collector and the inspector read the same values here.

/// Cache flag: no debugging (magic checks off for this cache's objects).
pub const KMC_NODEBUG: u64 = 1 << 1;
/// Cache flag: slabscope's own slabs from anonymous mmap (SPL: vmem).
pub const KMC_KVMEM: u64 = 1 << 7;
/// Cache flag: delegate to the system allocator, count objects only
/// (SPL: the Linux slab).
pub const KMC_SLAB: u64 = 1 << 8;
/// State bit: a grow outlived the grow timeout; allocations are emergency
/// objects until it completes.
pub const KMC_DEADLOCKED: u64 = 1 << 14;
/// State bit: a grow is in flight, in the allocating thread or on a worker.
pub const KMC_GROWING: u64 = 1 << 15;
/// State bit: a reap is in progress.
pub const KMC_REAPING: u64 = 1 << 16;
/// State bit: the cache is being destroyed.
pub const KMC_DESTROY: u64 = 1 << 17;
/// Accepted for compatibility (SPL: `__GFP_RECLAIMABLE`); no effect.
pub const KMC_RECLAIMABLE: u64 = 1 << 21;

/// Flags a caller may pass at creation.
pub const KMC_CREATE_MASK: u64 = KMC_NODEBUG | KMC_KVMEM | KMC_SLAB | KMC_RECLAIMABLE;

/// Allocation flag: may sleep (wait for a grow). SPL's value is 0.
pub const KM_SLEEP: u32 = 0x0000;
/// Allocation flag: must not sleep; may return NULL.
pub const KM_NOSLEEP: u32 = 0x0001;
/// Allocation flag: accepted and treated as KM_SLEEP (no reserve pools here).
pub const KM_PUSHPAGE: u32 = 0x0004;
/// Flags `kmem_cache_alloc` accepts (SPL's `KM_PUBLIC_MASK`).
pub const KM_PUBLIC_MASK: u32 = KM_SLEEP | KM_NOSLEEP | KM_PUSHPAGE;

/// Magic of a magazine (`SKM_MAGIC`).
pub const SKM_MAGIC: u32 = 0x2e2e_2e2e;
/// Magic of an object header (`SKO_MAGIC`).
pub const SKO_MAGIC: u32 = 0x2020_2020;
/// Magic of a slab header (`SKS_MAGIC`).
pub const SKS_MAGIC: u32 = 0x2222_2222;
/// Magic of a cache (`SKC_MAGIC`).
pub const SKC_MAGIC: u32 = 0x2c2c_2c2c;

/// Every `KMC_*` bit with its SPL name, creation flags first, then state bits.
pub const KMC_NAMES: [(u64, &str); 8] = [
    (KMC_NODEBUG, "KMC_NODEBUG"),
    (KMC_KVMEM, "KMC_KVMEM"),
    (KMC_SLAB, "KMC_SLAB"),
    (KMC_RECLAIMABLE, "KMC_RECLAIMABLE"),
    (KMC_DEADLOCKED, "KMC_DEADLOCKED"),
    (KMC_GROWING, "KMC_GROWING"),
    (KMC_REAPING, "KMC_REAPING"),
    (KMC_DESTROY, "KMC_DESTROY"),
];

/// Every `KM_*` allocation flag with its SPL name (`KM_SLEEP` is 0).
pub const KM_NAMES: [(u32, &str); 3] = [
    (KM_SLEEP, "KM_SLEEP"),
    (KM_NOSLEEP, "KM_NOSLEEP"),
    (KM_PUSHPAGE, "KM_PUSHPAGE"),
];

/// The SPL name of a single `KMC_*` bit, `None` for a bit slabscope does
/// not define or a value with more or fewer than one bit set.
pub fn kmc_name(bit: u64) -> Option<&'static str> {
    KMC_NAMES.iter().find(|(b, _)| *b == bit).map(|(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_single_bits_and_cover_the_masks() {
        let mut all = 0;
        for (bit, name) in KMC_NAMES {
            assert_eq!(bit.count_ones(), 1, "{name}");
            assert_eq!(all & bit, 0, "{name} repeats a bit");
            assert_eq!(kmc_name(bit), Some(name));
            all |= bit;
        }
        assert_eq!(all & KMC_CREATE_MASK, KMC_CREATE_MASK);
        assert_eq!(kmc_name(KMC_KVMEM | KMC_SLAB), None);
        assert_eq!(kmc_name(1 << 40), None);
        let km = KM_NAMES.iter().fold(0, |m, (f, _)| m | f);
        assert_eq!(km, KM_PUBLIC_MASK);
    }
}
