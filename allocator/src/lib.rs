//! slabscope: a userspace port of the OpenZFS SPL slab allocator
//! (`module/os/linux/spl/spl-kmem-cache.c`, GPL-2.0-or-later, Lawrence
//! Livermore National Security, LLC), observable through USDT probes.
//!
//! Modules mirror the seed's function families and import downwards only:
//! at the bottom the `os` seam, `sizing`, [`tunables`] and containers
//! that know nothing of caches (`slab`: layout, take, return, reclaim;
//! `depot`; `magazine`: the per-CPU magazines and their restartable
//! sequences; `taskq`: the worker pool; `background`: the periodic
//! threads); then one cache, the [`cache`] tree (`cache/grow.rs`: growth in
//! the allocating thread or on a worker, the bounded wait, deadlock
//! detection; `cache/magazine.rs`: the fast paths, refill and flush;
//! `cache/emergency.rs`, `cache/reap.rs`, `cache/depot.rs`); then
//! `registry` (every cache: create, destroy, [`reap()`], the statistics
//! thread, the reaper, fork handling); then [`stats`] and [`typed`], and
//! beside them [`kmem`] (SPL's `kmem_alloc()` on the `kmem_alloc_<size>`
//! size-class caches) with [`global`] (a Rust global allocator on it). The
//! C ABI is the `slabscope-capi` crate (`libslabscope.so` /
//! `libslabscope.a`), built on this crate's public API and `raw`, its
//! checks on a cache pointer.
//!
//! ```
//! use slabscope::{CacheBuilder, flags};
//! use std::ptr::NonNull;
//! let cache = CacheBuilder::new("zio_cache_doc", 1104)
//!     .align(8)
//!     .ctor(|obj: NonNull<u8>, _kmflags| {
//!         // SAFETY: the object is 1104 writable bytes.
//!         unsafe { obj.as_ptr().write_bytes(0, 1104) };
//!         true
//!     })
//!     .build()
//!     .expect("valid arguments");
//! let p = cache.alloc(flags::KM_SLEEP).expect("KM_SLEEP never fails");
//! // SAFETY: p came from this cache and is not used afterwards.
//! unsafe { cache.free(p) };
//! let s = cache.stats();
//! assert_eq!(s.slab_total, 1);
//! cache.destroy().expect("nothing allocated");
//! ```

// Bottom: the OS seam, sizing, tunables and containers that know nothing
// of caches (slab, depot, per-CPU magazines with their restartable
// sequences, the periodic threads, the worker pool).
mod background;
mod depot;
pub mod error;
mod inbox;
mod magazine;
// The OS seam: public for tests (feature `testing`: mapped and reserved
// bytes, the rseq CPU id), crate-internal otherwise.
#[cfg(feature = "testing")]
pub mod os;
#[cfg(not(feature = "testing"))]
mod os;
mod sizing;
mod slab;
mod sync;
#[cfg(not(loom))]
mod taskq;
pub mod tunables;

// One cache: `CacheInner` and its allocation, grow, emergency, reap and
// validation code, a module tree of its own.
pub mod cache;

// Every cache: the registry (with the fork handlers), then the public
// reports and the typed API on top. `cargo xtask test` checks that no
// module imports one above it.
mod registry;
pub mod stats;
pub mod typed;

// The `kmem_alloc_<size>` size classes on caches, and a global allocator
// on them (above the registry, which builds their caches).
#[cfg(not(loom))]
pub mod global;
#[cfg(not(loom))]
pub mod kmem;

// The C ABI's pointer checks, for the `slabscope-capi` crate only.
#[doc(hidden)]
pub mod raw;

#[cfg(all(test, not(loom)))]
mod cache_tests;

pub use cache::{Cache, CacheBuilder, MagazineProtocol};
pub use error::Error;
#[cfg(not(loom))]
pub use global::SlabscopeAlloc;
pub use registry::reap;
/// `KMC_*` / `KM_*` values, their names and their typed forms (`KmcFlags`,
/// `KmFlags`), from the contract crate.
pub use slabscope_probes::flags;
pub use typed::{Obj, TypedCache};
