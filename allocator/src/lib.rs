//! slabscope: a userspace port of the OpenZFS SPL slab allocator
//! (`module/os/linux/spl/spl-kmem-cache.c`, GPL-2.0-or-later, Lawrence
//! Livermore National Security, LLC), observable through USDT probes.
//!
//! Modules mirror the seed's function families: [`cache`] (create, destroy,
//! the registry), `slab` (layout, take, return, reclaim), `magazine` (the
//! per-CPU fast path), `grow` (growth in the allocating thread, the worker
//! pool, the bounded wait, deadlock detection), `emergency`, [`reap`](mod@reap), [`sizing`], [`tunables`], [`stats`],
//! [`ffi`] (the C ABI) and the [`os`] seam.
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

mod background;
pub mod cache;
#[cfg(all(test, not(loom)))]
mod cache_tests;
mod depot;
mod emergency;
pub mod error;
pub mod ffi;
#[cfg(not(loom))]
mod ffi_kmem;
pub mod flags;
#[cfg(not(loom))]
mod fork;
#[cfg(not(loom))]
pub mod global;
mod grow;
#[cfg(not(loom))]
pub mod kmem;
#[cfg(all(test, loom))]
mod loom_tests;
mod magazine;
pub mod os;
pub mod reap;
mod rseq;
pub mod sizing;
mod slab;
pub mod stats;
mod sync;
#[cfg(not(loom))]
mod taskq;
pub mod tunables;
pub mod typed;

pub use cache::{Cache, CacheBuilder, MagazineProtocol};
pub use error::Error;
#[cfg(not(loom))]
pub use global::SlabscopeAlloc;
pub use reap::reap;
pub use typed::{Obj, TypedCache};
