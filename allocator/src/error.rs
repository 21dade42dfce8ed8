//! Every way a slabscope call can fail.
//!
//! Where SPL `VERIFY`s or `ASSERT`s on a caller's mistake (a bad alignment at
//! `spl_kmem_cache_create()`, objects still allocated at
//! `spl_kmem_cache_destroy()`), slabscope returns one of these instead. Each
//! message says what happened and what to do next.

use slabscope_probes::NAME_MAX;

/// A failure of cache creation, destruction or tunable setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The cache name is empty.
    #[error("cache name is empty: give the cache a name of 1 to {NAME_MAX} bytes")]
    EmptyName,

    /// The cache name is longer than [`slabscope_probes::NAME_MAX`] bytes.
    #[error("cache name {name:?} is {len} bytes long, over the {NAME_MAX}-byte limit: shorten it")]
    NameTooLong {
        /// The cache name given.
        name: String,
        /// Its length in bytes.
        len: usize,
    },

    /// The cache name contains a NUL byte (it is handed to tracers as a C string).
    #[error("cache name {name:?} contains a NUL byte: remove it")]
    NameHasNul {
        /// The cache name given.
        name: String,
    },

    /// The cache name passed through the C ABI is not UTF-8.
    #[error("cache name is not valid UTF-8: use an ASCII or UTF-8 name")]
    NameNotUtf8,

    /// Object size 0 (SPL would create a useless cache).
    #[error("cache {name:?}: object size 0 is invalid: give a size of at least 1 byte")]
    ZeroSize {
        /// The cache name given.
        name: String,
    },

    /// Alignment not a power of two, below 8, or above the page size
    /// (SPL's `VERIFY(ISP2(align))` and its bounds).
    #[error(
        "cache {name:?}: alignment {align} is invalid: use 0 (default 8) or a power of two \
         from 8 to the page size ({page_size})"
    )]
    BadAlign {
        /// The cache name given.
        name: String,
        /// The alignment given.
        align: usize,
        /// This machine's page size, the largest alignment accepted.
        page_size: usize,
    },

    /// Objects too large for the largest slab (`spl_slab_size()` returns
    /// `-ENOSPC`).
    #[error(
        "cache {name:?}: objects of {size} bytes do not fit in a slab of at most {max_slab} \
         bytes (ENOSPC): raise SLABSCOPE_MAX_SIZE (MB) or use smaller objects"
    )]
    TooLarge {
        /// The cache name given.
        name: String,
        /// The object size given.
        size: usize,
        /// The largest slab, in bytes (`SLABSCOPE_MAX_SIZE`).
        max_slab: u64,
    },

    /// Creation flags outside [`crate::flags::KMC_CREATE_MASK`].
    #[error(
        "cache {name:?}: unknown flags {unknown:#x}: creation accepts only KMC_NODEBUG, \
         KMC_KVMEM, KMC_SLAB and KMC_RECLAIMABLE"
    )]
    UnknownFlags {
        /// The cache name given.
        name: String,
        /// The flag bits creation does not accept.
        unknown: u64,
    },

    /// Both `KMC_SLAB` and `KMC_KVMEM` were requested.
    #[error("cache {name:?}: KMC_SLAB and KMC_KVMEM are both set: pass at most one of them")]
    ConflictingFlags {
        /// The cache name given.
        name: String,
    },

    /// A callback SPL leaves unimplemented was passed (C ABI: `reclaim`, `vmp`).
    #[error("cache {name:?}: a non-NULL {what} is not supported (SPL ignores it too): pass NULL")]
    Unsupported {
        /// The cache name given.
        name: String,
        /// Which argument (`reclaim`, `vmp`).
        what: &'static str,
    },

    /// `destroy` found objects still allocated; nothing was freed and the
    /// cache stays usable.
    #[error(
        "cache {name:?} still has {obj_alloc} objects and {obj_emergency} emergency objects \
         allocated: free them, then destroy again (nothing was freed)"
    )]
    Busy {
        /// The cache name given.
        name: String,
        /// Slab objects still allocated (after the magazines were flushed).
        obj_alloc: u64,
        /// Emergency objects still allocated.
        obj_emergency: u64,
    },

    /// The cache was destroyed already.
    #[error("cache {name:?} was already destroyed: drop this handle")]
    Destroyed {
        /// The cache name given.
        name: String,
    },

    /// [`Cache::validate`](crate::Cache::validate) found the cache's lists,
    /// magazines or counters disagreeing; `what` says which equation broke.
    #[error(
        "cache {name:?} failed validation: {what}; a free of a pointer twice or of one \
         the cache did not hand out (unchecked with KMC_NODEBUG), or a write past an \
         object, corrupts a cache; otherwise report it as a slabscope bug"
    )]
    Corrupt {
        /// The cache name given.
        name: String,
        /// The equation or list check that failed.
        what: String,
    },

    /// A tunable has a value out of range or unparsable. `setting` names the
    /// environment variable or the `Tunables` field it came from.
    #[error("{setting}={value:?} is invalid: {reason}")]
    Tunable {
        /// The environment variable or `Tunables` field.
        setting: String,
        /// The value it had.
        value: String,
        /// Why the value is refused.
        reason: String,
    },

    /// `tunables::set` was called after the tunables took effect.
    #[error(
        "tunables are already in effect (a cache was created or tunables::get was called): \
         call tunables::set before the first cache is created"
    )]
    TunablesFrozen,
}
