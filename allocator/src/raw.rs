//! The C ABI's checks on a cache pointer, for the `slabscope-capi` crate
//! (not part of the Rust API: a Rust caller holds a [`Cache`], never a
//! pointer).
//!
//! A `kmem_cache_t *` is [`Cache::into_raw`] of a cache, and the C ABI
//! keeps a destroyed cache's struct (see its "Misuse" docs), so a pointer a
//! C program got from `kmem_cache_create` stays readable for good. These
//! functions read the struct behind such a pointer without taking a
//! reference: [`destroy_begun`] is the one load the alloc and free paths pay
//! (the cache's flags), [`is_cache`] the alignment and magic check of every
//! other entry point. [`Cache::is_destroyed`] then tells a destroy that
//! committed from one that is still deciding (or returned `Busy`).

use std::ffi::c_void;
use std::ptr::NonNull;

use slabscope_probes::flags::{KMC_DESTROY, SKC_MAGIC};

#[cfg(doc)]
use crate::cache::Cache;
use crate::cache::CacheInner;

/// Bytes behind a pointer from [`Cache::into_raw`]: a buffer that tests
/// pass as a fake cache must be at least this large for [`is_cache`] to
/// read only inside it.
pub const CACHE_STRUCT_SIZE: usize = size_of::<CacheInner>();

/// Whether `ptr` is aligned like a cache and holds a cache's magic. A
/// misaligned pointer is refused before anything is read.
///
/// # Safety
/// `ptr` points to [`CACHE_STRUCT_SIZE`] readable bytes (a pointer from
/// [`Cache::into_raw`], destroyed or not, qualifies).
pub unsafe fn is_cache(ptr: NonNull<c_void>) -> bool {
    let inner = ptr.as_ptr().cast_const().cast::<CacheInner>();
    if !inner.is_aligned() {
        return false;
    }
    // SAFETY: aligned (checked) and readable (caller); `magic` is a plain
    // integer that any bytes make valid.
    unsafe { (*inner).magic == SKC_MAGIC }
}

/// Whether a destroy has begun on the cache at `ptr` (`KMC_DESTROY` is set:
/// a destroy is deciding, returned `Busy` a moment ago, or committed). One
/// load of the cache's flags, for the alloc and free paths; when it is true,
/// [`Cache::is_destroyed`] gives the answer.
///
/// # Safety
/// `ptr` came from [`Cache::into_raw`] and its struct is still allocated
/// (the C ABI never frees it).
#[inline(always)]
pub unsafe fn destroy_begun(ptr: NonNull<c_void>) -> bool {
    // SAFETY: ptr is a live CacheInner's address (caller).
    unsafe { ptr.cast::<CacheInner>().as_ref() }.flag(KMC_DESTROY)
}
