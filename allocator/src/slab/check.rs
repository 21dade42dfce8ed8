//! The debug checks of a pointer handed back or a free object taken.

use super::{
    OBJ_FREE, RESERVED_TAG, Slab, hl_is_free, hl_mark_free_checked, hl_slab_of, hl_starts_obj,
    owner_fields, slab_of, state_bits, state_of, without_home, word_of,
};
use crate::flags::SKS_MAGIC;
use crate::sizing::Geometry;

/// The free-time check of a debug cache: `obj` must be an object this cache
/// (tag `tag`) handed out and nobody freed since. Marks it free. Aborts the
/// process with a message naming the cache and the pointer otherwise (see
/// [`corrupt`]). Cheap: the header sits right before the object, so this is
/// one or two loads from a line the caller usually just touched, a compare
/// and a store.
///
/// # Safety
///
/// The `OBJ_HDR` bytes right before `obj` must be
/// readable and writable (true for every object this cache handed out). A
/// misaligned `obj` is caught before the header is read.
///
/// A headerless object (see [`super::headerless`]) is checked against
/// its slab header instead: the slab's magic and cache (`id`), and the
/// object's place in the slab; then its free mark says whether it is free already.
#[inline]
pub(crate) unsafe fn check_free(g: &Geometry, name: &str, id: u64, tag: u16, obj: *mut u8) {
    // obj_align is a power of two: a mask, not a division.
    if (obj as usize) & (g.obj_align as usize - 1) != 0 {
        corrupt(
            name,
            obj,
            "it is not aligned like this cache's objects: a pointer this cache never handed out",
        );
    }
    if g.headerless() {
        // SAFETY: forwarded caller guarantee: obj's page is readable.
        unsafe { hl_check_free(g, name, id, obj) };
        return;
    }
    // SAFETY: the caller guarantees the header bytes are readable; obj is
    // aligned (checked above, obj_align >= 8).
    let st = unsafe { state_of(obj) };
    match st.load(std::sync::atomic::Ordering::Relaxed) {
        t if t == tag => st.store(OBJ_FREE, std::sync::atomic::Ordering::Relaxed),
        // A reserved tag's home is not part of the cache's mark.
        t if tag & RESERVED_TAG != 0 && without_home(t) == tag => {
            st.store(OBJ_FREE, std::sync::atomic::Ordering::Relaxed)
        }
        OBJ_FREE => corrupt(name, obj, "double free: the object is already free"),
        _ => corrupt(
            name,
            obj,
            "its header does not carry this cache's mark: a pointer this cache never \
             handed out, an object of another cache of the same geometry, or a header \
             overwritten by a write past the end of the object",
        ),
    }
}

/// [`check_free`] of a headerless object.
///
/// # Safety
/// `obj` is 16-aligned and its page readable and writable.
#[cold]
unsafe fn hl_check_free(g: &Geometry, name: &str, id: u64, obj: *mut u8) {
    let s = hl_slab_of(obj);
    // SAFETY: the slab header is at the start of obj's page (caller).
    let (magic, cache) = unsafe { owner_fields(s) };
    if magic != SKS_MAGIC || cache != id {
        corrupt(
            name,
            obj,
            "its page is not a slab of this cache: a pointer this cache never handed out",
        );
    }
    if !hl_starts_obj(g, obj) {
        corrupt(
            name,
            obj,
            "it is not where an object of its slab starts: a pointer this cache never handed out",
        );
    }
    // SAFETY: an object of a live headerless slab, freed by its holder.
    if !unsafe { hl_mark_free_checked(obj) } {
        corrupt(name, obj, "double free: the object is already free");
    }
}

/// The header checks of [`check_free`] as a result, plus the slab header
/// and "not held by a caller" (validation of magazine contents).
///
/// # Safety
///
/// As for [`check_free`]; when the object header checks out, its slab
/// pointer must be readable (true for objects of a live cache).
pub(crate) unsafe fn check_obj_result(g: &Geometry, obj: *mut u8) -> Result<(), &'static str> {
    // obj_align is a power of two: a mask, not a division.
    if (obj as usize) & (g.obj_align as usize - 1) != 0 {
        return Err("not aligned like this cache's objects");
    }
    if g.headerless() {
        let s = hl_slab_of(obj);
        // SAFETY: an object of a live cache (caller): its page, where its
        // slab header is, is mapped.
        if unsafe { owner_fields(s) }.0 != SKS_MAGIC {
            return Err("slab header magic is wrong");
        }
        if !hl_starts_obj(g, obj) {
            return Err("not where an object of its slab starts");
        }
        // SAFETY: as above.
        if !unsafe { hl_is_free(obj) } {
            return Err("its free mark is missing: a caller holds it");
        }
        // SAFETY: as above.
        if unsafe { (*s).refs } == 0 {
            return Err("its slab has no objects out");
        }
        return Ok(());
    }
    // SAFETY: the caller guarantees the header bytes are readable.
    let word = unsafe { word_of(obj) }.load(std::sync::atomic::Ordering::Relaxed);
    if state_bits(word) != OBJ_FREE {
        return Err("its header says a caller holds it, or is not an object header");
    }
    let slab = slab_of(word);
    let (base, a) = (slab as usize, obj as usize);
    if slab.is_null() || a < base + g.first_obj as usize || a >= base + g.slab_size as usize {
        return Err("object header does not point at the object's slab");
    }
    // SAFETY: the object lies inside the slab its header names, so that
    // slab is mapped (caller: objects of a live cache).
    let s = unsafe { &*slab };
    if s.magic != SKS_MAGIC {
        return Err("slab header magic is wrong");
    }
    let first = base + (g.first_obj + u64::from(s.color)) as usize;
    if a < first || !(a - first).is_multiple_of(g.obj_size_full as usize) {
        return Err("object header does not point at the object's slab");
    }
    if (a - first) / g.obj_size_full as usize >= s.built as usize {
        return Err("its slab never handed it out (it is past the slab's built objects)");
    }
    if s.refs == 0 {
        return Err("its slab has no objects out");
    }
    Ok(())
}

/// A debug check found a pointer that is not a live object of the cache:
/// prints what, naming the cache and the pointer, and aborts. Unwinding
/// would leave the caller running on a heap it has just been shown to
/// corrupt (SPL panics the kernel here), so this never returns and cannot
/// be caught.
#[cold]
#[inline(never)]
pub(super) fn corrupt(name: &str, obj: *mut u8, what: &str) -> ! {
    eprintln!(
        "slabscope: cache {name:?}: {obj:p} is not a live object of this cache: {what}. \
         Aborting: a double free, a pointer from another cache or allocator, or a write \
         past the end of an object. Run with a debug cache (no KMC_NODEBUG) under a \
         debugger or AddressSanitizer to find the caller."
    );
    std::process::abort()
}

/// The debug check of a free object `obj` of slab `s` that a take hands
/// out: its header names `s` and says free, or, headerless, it carries its
/// free mark.
///
/// # Safety
/// `obj` is a built object of the live slab `s`.
#[inline]
pub(super) unsafe fn check_taken(g: &Geometry, name: &str, s: *mut Slab, obj: *mut u8) {
    let ok = if g.headerless() {
        // SAFETY: forwarded caller guarantee.
        unsafe { hl_is_free(obj) }
    } else {
        // SAFETY: forwarded caller guarantee: its header lies in the slab.
        let word = unsafe { word_of(obj) }.load(std::sync::atomic::Ordering::Relaxed);
        slab_of(word) == s && state_bits(word) == OBJ_FREE
    };
    if !ok {
        corrupt(name, obj, "a free object's header or free mark is wrong");
    }
}
