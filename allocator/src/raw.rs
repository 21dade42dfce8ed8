//! The C ABI's checks on a cache pointer, for the `slabscope-capi` crate
//! (not part of the Rust API: a Rust caller holds a [`Cache`], never a
//! pointer).
//!
//! A `kmem_cache_t *` is [`Cache::into_raw`] of a cache, and the C ABI
//! keeps a destroyed cache's struct (see its "Misuse" docs), so a pointer a
//! C program got from `kmem_cache_create` stays readable for good. These
//! functions read the struct behind such a pointer without taking a
//! reference: [`destroy_begun`] is the one load the alloc and free paths pay
//! (a mirror of the destroy flag on the magazine hit's line), [`is_cache`] the alignment and magic check of every
//! other entry point. [`Cache::is_destroyed`] then tells a destroy that
//! committed from one that is still deciding (or returned `Busy`).

use std::ffi::c_void;
use std::ptr::NonNull;

use slabscope_probes::flags::SKC_MAGIC;

#[cfg(doc)]
use crate::cache::Cache;
use crate::cache::CacheInner;
pub use crate::magazine::FreeHit;
use crate::os::ranges;
use crate::registry;
use crate::slab;

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
/// load from the cache line the magazine hit reads anyway (the flag's
/// mirror there), for the alloc and free paths; when it is true,
/// [`Cache::is_destroyed`] gives the answer.
///
/// # Safety
/// `ptr` came from [`Cache::into_raw`] and its struct is still allocated
/// (the C ABI never frees it).
#[inline(always)]
pub unsafe fn destroy_begun(ptr: NonNull<c_void>) -> bool {
    // SAFETY: ptr is a live CacheInner's address (caller).
    unsafe { ptr.cast::<CacheInner>().as_ref() }.destroy_begun()
}

/// The cache behind a pointer from [`Cache::into_raw`].
///
/// # Safety
/// As [`destroy_begun`].
#[inline(always)]
unsafe fn inner<'a>(ptr: NonNull<c_void>) -> &'a CacheInner {
    // SAFETY: ptr is a live CacheInner's address (caller).
    unsafe { ptr.cast::<CacheInner>().as_ref() }
}

/// The magazine hit of [`Cache::alloc`] and nothing else: an object popped
/// from the current CPU's magazine and marked allocated, or `None` (the
/// magazine is empty, the sequence was interrupted, or the cache's
/// allocations do not take the inline path) for the caller to take
/// `Cache::alloc`. Calls nothing, so the C ABI's `kmem_cache_alloc` can
/// jump to its slow paths rather than call them.
///
/// # Safety
/// As [`destroy_begun`], on a cache whose destroy has not begun.
#[inline(always)]
pub unsafe fn alloc_hit(ptr: NonNull<c_void>) -> Option<NonNull<u8>> {
    // SAFETY: forwarded caller guarantee.
    let c = unsafe { inner(ptr) };
    if c.fp.base != 0 {
        c.rseq_alloc_fast()
    } else {
        None
    }
}

/// The magazine hit of [`Cache::free`] and nothing else; see [`FreeHit`]
/// for what the caller does with the other outcomes.
///
/// # Safety
/// As [`destroy_begun`], on a cache whose destroy has not begun; `obj` as
/// in [`Cache::free`].
#[inline(always)]
pub unsafe fn free_hit(ptr: NonNull<c_void>, obj: NonNull<u8>) -> FreeHit {
    // SAFETY: forwarded caller guarantee.
    let c = unsafe { inner(ptr) };
    // SAFETY: forwarded caller guarantee.
    unsafe { c.free_hit(obj) }
}

/// The rest of a free that [`free_hit`] checked and marked but could not
/// push ([`FreeHit::Refused`]).
///
/// # Safety
/// As [`destroy_begun`]; `obj` is the object that `free_hit` refused, not
/// freed again since.
#[cold]
pub unsafe fn push_refused(ptr: NonNull<c_void>, obj: NonNull<u8>) {
    // SAFETY: forwarded caller guarantee.
    let c = unsafe { inner(ptr) };
    // SAFETY: forwarded caller guarantee: checked, marked, in no magazine.
    unsafe { c.push_refused(obj) }
}

/// The cache that handed out `obj`, found from the object alone, for the C
/// ABI's report of a free it cannot carry out (`kmem_cache_free` with a
/// NULL, foreign or destroyed cache pointer): the cache's name and
/// `KMC_*` flags, or `None` when `obj` is not an allocated object of a
/// live slab (a foreign pointer, a double free, an emergency object).
///
/// Reads nothing slabscope did not map: the header's page and the slab
/// header's page are checked in slabscope's table of mappings first, and a
/// slab's cache is compared against the registered caches by address
/// before anything is read from it. Takes the registry lock: a cold path.
///
/// # Safety
/// None beyond `obj` being a value the caller was handed as a pointer.
#[cold]
pub unsafe fn owner_of(obj: NonNull<u8>) -> Option<(String, u64)> {
    let a = obj.as_ptr() as usize;
    if !a.is_multiple_of(8) || a < 8 || !ranges::contains(a - 8) {
        return None;
    }
    if ranges::headerless_class(ranges::byte(a - 8)) < ranges::HEADERLESS_CLASSES {
        // A headerless slab's page (see `crate::slab`): no header to read,
        // and its caches are `kmem`'s size classes, which no caller frees
        // with kmem_cache_free. Not an object this report can name.
        return None;
    }
    // SAFETY: the header word (8-aligned, right before obj) lies in memory
    // slabscope mapped (checked).
    let (state, slab) = unsafe { slab::header_of(obj.as_ptr()) };
    // Allocated slab objects carry an odd tag; free, emergency and foreign
    // headers are even.
    if state & 1 == 0 {
        return None;
    }
    // SAFETY: slab is the address obj's header holds.
    let cache = unsafe { slab::live_slab_cache(slab) }?;
    registry::lock_registry()
        .iter()
        .find(|c| std::sync::Arc::as_ptr(c).addr() as u64 == cache)
        .map(|c| (c.name.clone(), c.flags()))
}
