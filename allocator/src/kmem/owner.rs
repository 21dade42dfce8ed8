//! Who owns a pointer handed to `free`, `realloc` or `malloc_usable_size`:
//! found from the pointer alone, in O(1) and without a lock, or a clear
//! abort (see the module docs of [`super`]). The range table says whether
//! the block and its header are slabscope's memory before the header is
//! read; the header's state says which kind of block it is; a class
//! object's slab header names its cache, which must be the class the
//! object's size says.

use std::sync::atomic::Ordering;

use super::{OBJ_INNER, boot, built_classes, class_cache, fast, ladder, large};
use crate::cache::{Cache, CacheInner};
use crate::os::ranges;
use crate::slab;

/// What the pointer handed to [`super::free`] and its kin is.
pub(super) enum Owner {
    /// A slab object of size class `usize`, served by that cache.
    Class(usize, &'static Cache),
    /// An emergency object of size class `usize`, served by that cache.
    Emergency(usize, &'static Cache),
    /// A mapping of its own, of this many bytes.
    Large(usize),
    /// An aligned pointer inside this block.
    Inner(*mut u8),
    /// A block of the internal allocator (its header's state and address).
    Boot(u16, usize),
}

/// Aborts: `ptr`, handed to `what`, is not a live block of ours.
#[cold]
#[inline(never)]
pub(super) fn not_ours(what: &str, ptr: *mut u8, why: &str) -> ! {
    // No allocation here: the allocator may be what is broken.
    let mut buf = [0u8; 256];
    let mut n = 0;
    let mut put = |s: &[u8]| {
        let k = s.len().min(buf.len() - n);
        buf[n..n + k].copy_from_slice(&s[..k]);
        n += k;
    };
    put(b"slabscope: ");
    put(what.as_bytes());
    put(b"(0x");
    let a = ptr as usize;
    let digits = (usize::BITS - a.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        put(&[b"0123456789abcdef"[(a >> (4 * i)) & 15]]);
    }
    put(b"): ");
    put(why.as_bytes());
    put(b"; aborting\n");
    // SAFETY: writing our own buffer to stderr.
    unsafe { libc::write(2, buf.as_ptr().cast(), n) };
    std::process::abort()
}

/// Finds the owner of `ptr` from its header, or aborts with a message.
///
/// # Safety
/// None beyond `ptr` being a value the caller was handed as a pointer: a
/// pointer that is not ours is detected, not dereferenced.
#[inline(always)]
pub(super) unsafe fn owner(what: &str, ptr: *mut u8) -> Owner {
    let a = ptr as usize;
    // The header shares the block's page unless the block starts a page.
    if !a.is_multiple_of(16)
        || !ranges::contains(a)
        || (a.is_multiple_of(4096) && !ranges::contains(a - 8))
    {
        // An emergency object comes from the global allocator: it may be
        // elsewhere, and only 8-aligned (see `emergency_owner`).
        return emergency_owner(what, ptr, NOT_MAPPED);
    }
    // Where the word before the block lies on a headerless slab it is no
    // header, and must not be read as one.
    let hl = ranges::headerless_class(ranges::byte(a - 8));
    if hl < ladder::HEADERLESS {
        return headerless_owner(what, ptr, hl);
    }
    // The first byte of a headerless slab is its slab header's.
    if a.is_multiple_of(slab::HL_SLAB)
        && ranges::headerless_class(ranges::byte(a)) < ladder::HEADERLESS
    {
        return emergency_owner(what, ptr, NOT_A_START);
    }
    // SAFETY: the header word is in memory slabscope mapped (checked).
    let (state, addr) = unsafe { slab::header_of(ptr) };
    if state & 1 == 1 {
        // SAFETY: as above.
        return unsafe { class_owner(what, ptr, addr) };
    }
    match state {
        large::OBJ_LARGE => Owner::Large(addr),
        OBJ_INNER => Owner::Inner(std::ptr::with_exposed_provenance_mut(addr)),
        boot::BOOT_USED | boot::BOOT_MAPPED => Owner::Boot(state, addr),
        slab::OBJ_EMERGENCY => emergency_owner(what, ptr, DOUBLE_FREE),
        slab::OBJ_FREE | boot::BOOT_FREE | large::OBJ_LARGE_KEPT => {
            not_ours(what, ptr, DOUBLE_FREE)
        }
        _ => not_ours(
            what,
            ptr,
            "not the start of a block slabscope handed out (its header is not one)",
        ),
    }
}

/// [`owner`] of a block whose previous word lies on a headerless slab of
/// class `i`: one of its objects, or an emergency object inside one (the
/// global allocator may be slabscope's own), or not ours.
fn headerless_owner(what: &str, ptr: *mut u8, i: usize) -> Owner {
    if !fast::hl_starts(i, ptr as usize) {
        return emergency_owner(what, ptr, NOT_A_START);
    }
    // SAFETY: an object's start on a page slabscope mapped (checked by
    // the caller and hl_starts).
    if unsafe { slab::hl_is_free(ptr) } {
        not_ours(what, ptr, DOUBLE_FREE)
    }
    match class_cache(i) {
        Some(c) => Owner::Class(i, c),
        // A slab of a class is made after the class is published.
        None => not_ours(what, ptr, NOT_A_START),
    }
}

/// What [`not_ours`] says of a block already freed.
const DOUBLE_FREE: &str = "already freed (a double free)";
/// What [`not_ours`] says of a pointer inside slabscope's memory that no
/// block starts at.
const NOT_A_START: &str = "not the start of a block slabscope handed out";
/// What [`not_ours`] says of a pointer outside slabscope's memory.
const NOT_MAPPED: &str = "not memory slabscope handed out (another allocator's, from before \
                          slabscope was loaded, or not the start of a block)";

/// [`owner`] of an allocated slab object whose header names slab `slab`.
///
/// # Safety
/// As [`owner`].
#[inline(always)]
unsafe fn class_owner(what: &str, ptr: *mut u8, slab: usize) -> Owner {
    // SAFETY: slab is the address ptr's header holds.
    if let Some(cache) = unsafe { slab::live_slab_cache(slab) } {
        let c: *const CacheInner = std::ptr::with_exposed_provenance(cache as usize);
        // SAFETY: a slab with its magic is live, and a live slab's cache
        // is live.
        let size = unsafe { (*c).geo.obj_size } as usize;
        if size <= ladder::MAX_CLASS {
            let i = ladder::index(size);
            if let Some(c) = class_cache(i)
                && c.id() == cache
            {
                return Owner::Class(i, c);
            }
        }
        not_ours(
            what,
            ptr,
            "an object of a cache made with kmem_cache_create: free it with kmem_cache_free",
        );
    }
    not_ours(what, ptr, NOT_A_START)
}

/// The emergency object `ptr` of a class (SPL's emergency objects, made
/// while a class is DEADLOCKED: see `crate::emergency`), found in the
/// classes' emergency maps; otherwise aborts, saying why the pointer is
/// not ours (`why`).
///
/// Emergency objects come from the global allocator (the internal one in
/// the `malloc` library, the classes themselves under [`SlabscopeAlloc`],
/// the C library's `malloc` in `libslabscope.so`), with the class's
/// layout: for the classes of 8-byte alignment they are 8- but not
/// 16-aligned, a departure from `malloc`'s promise that lasts only while a
/// grow is stuck past the grow timeout.
///
/// [`SlabscopeAlloc`]: crate::global::SlabscopeAlloc
#[cold]
#[inline(never)]
fn emergency_owner(what: &str, ptr: *mut u8, why: &str) -> Owner {
    for (i, cache) in built_classes() {
        let c = &*cache.inner;
        if c.emergency_live.load(Ordering::Relaxed) > 0
            && c.lock_state().emergency.contains_key(&(ptr as usize))
        {
            return Owner::Emergency(i, cache);
        }
    }
    not_ours(what, ptr, why)
}
