//! SPL's slab counters (`skc_slab_*`, `skc_obj_*` of `spl_kmem_cache_t`),
//! declared once: the allocator keeps exactly this struct under each cache's
//! lock, the probe snapshot ([`CacheSnapshot`](crate::CacheSnapshot)) embeds
//! it, `CacheStats` (feature `std`) flattens it, and `include/slabscope.h`
//! mirrors it field for field inside `struct slabscope_cache_snapshot`.

/// SPL's counters of one cache.
///
/// Invariants the allocator keeps (and its `SlabState::validate` checks):
///
/// - `slab_total == partial slabs + complete slabs`
/// - `obj_total == Σ slab.objs + obj_emergency`, where each slab's
///   `objs == refs + len(free list) + unbuilt`: slabs are built lazily, and
///   their objects never handed out yet are on no free list (the
///   allocator's `slab::Slab`)
/// - `obj_alloc == Σ slab.refs`: objects handed out of the slabs (neither
///   on a free list nor unbuilt), in magazines or in use; emergency
///   objects are not counted here (as in SPL)
/// - `slab_alloc == #{slab : slab.refs > 0}`
/// - `obj_emergency == live emergency objects`
/// - `*_max >= *` for alloc and emergency.
///
/// `slab_create` / `slab_destroy` count slabs mapped / unmapped over the
/// cache's life (the seed declares them but never increments them). For a
/// `KMC_SLAB` cache only `obj_alloc` is kept; the rest stay zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct SlabCounters {
    /// Slab mappings that failed.
    pub slab_fail: u64,
    /// Slabs mapped over the cache's life.
    pub slab_create: u64,
    /// Slabs unmapped over the cache's life.
    pub slab_destroy: u64,
    /// Slabs the cache holds.
    pub slab_total: u64,
    /// Slabs with at least one object outside their free list.
    pub slab_alloc: u64,
    /// Most slabs `slab_alloc` has been.
    pub slab_max: u64,
    /// Objects the slabs hold, plus emergency objects.
    pub obj_total: u64,
    /// Objects handed out of the slabs (in use or held in magazines).
    pub obj_alloc: u64,
    /// Most objects `obj_alloc` has been.
    pub obj_max: u64,
    /// Deadlocks detected (a grow outlived the grow timeout).
    pub obj_deadlock: u64,
    /// Live emergency objects.
    pub obj_emergency: u64,
    /// Most emergency objects live at once.
    pub obj_emergency_max: u64,
}

impl SlabCounters {
    /// All counters zero.
    pub const ZERO: SlabCounters = SlabCounters {
        slab_fail: 0,
        slab_create: 0,
        slab_destroy: 0,
        slab_total: 0,
        slab_alloc: 0,
        slab_max: 0,
        obj_total: 0,
        obj_alloc: 0,
        obj_max: 0,
        obj_deadlock: 0,
        obj_emergency: 0,
        obj_emergency_max: 0,
    };
}
