//! Headerless slabs: the small classes' objects, without a header.
//!
//! One word is half of a 16-byte object, and with `malloc`'s 16-byte
//! alignment a block of 16 bytes or less took 32. `kmem`'s classes of 16
//! to 64 bytes therefore have no object header (mimalloc's small pages
//! and glibc's tcache find what they need without one either): their
//! slabs are exactly one 4 KiB page ([`HL_SLAB`]), so an object's slab is
//! its address with the low 12 bits cleared, and the page map
//! (`os::ranges`) marks the page as a whole slab of its class, so a
//! `free` tells such an object from one with a header before reading the
//! word before it. Each class carves these slabs from a window of address
//! space of its own (`os::window`), so the address alone names the class.
//! The object's state is its second word while no caller
//! holds it: [`hl_key`] of its address, a per-process random value mixed
//! with the address, which every object gets when its slab is made (such
//! a slab is built whole at once: it is one page, written by its first
//! object anyway) and again at every free; an allocation clears it. So a
//! double free is still caught by one load and a compare from the
//! object's own line (glibc's tcache detects double frees with a random
//! key in the same place), and the debug checks that read the header's
//! tag read the slab header's cache and the object's offset instead. A
//! program that by chance stores the key of a block's address in its
//! second word and then frees it would be told it freed it twice: a
//! 1-in-2^64 coincidence unless the program reads the key out of freed
//! memory first.

use super::{Slab, os};
use crate::sizing::Geometry;

/// Bytes of a headerless slab: one 4 KiB page (see the module docs).
pub(crate) const HL_SLAB: usize = 4096;

/// The random half of [`hl_key`], set at the first headerless slab.
static HL_KEY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Draws [`HL_KEY`] if no slab has yet: from `getrandom`, or, where that
/// fails, from the time and an address (the key makes an accidental match
/// unlikely; it is not a secret worth failing for). The top bit is set,
/// so a key never equals an address (below 2^48) nor 0.
pub(crate) fn hl_key_init() {
    use std::sync::atomic::Ordering::Relaxed;
    if HL_KEY.load(Relaxed) != 0 {
        return;
    }
    let mut k = 0u64;
    // SAFETY: getrandom writes at most 8 bytes into k.
    let n = unsafe { libc::getrandom((&raw mut k).cast(), 8, libc::GRND_NONBLOCK) };
    if n != 8 {
        let t = os::coarse_ms();
        k = (t ^ (&raw const k).addr() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    let _ = HL_KEY.compare_exchange(0, k | 1 << 63, Relaxed, Relaxed);
}

/// The free mark of the headerless object at `obj`: [`HL_KEY`] mixed with
/// the address, so a block copied whole to another address does not carry
/// a valid mark along.
#[inline(always)]
pub(crate) fn hl_key(obj: *mut u8) -> u64 {
    HL_KEY.load(std::sync::atomic::Ordering::Relaxed) ^ obj.addr() as u64
}

/// The second word of headerless object `obj`, where its free mark lives.
///
/// # Safety
/// `obj` is a 16-aligned object of a live headerless slab (at least 16
/// bytes).
#[inline(always)]
unsafe fn hl_word<'a>(obj: *mut u8) -> &'a std::sync::atomic::AtomicU64 {
    // SAFETY: forwarded caller guarantee: bytes 8..16 of the object, 8-aligned.
    unsafe { std::sync::atomic::AtomicU64::from_ptr(obj.wrapping_add(8).cast()) }
}

/// Whether headerless object `obj` carries its free mark: nobody holds it
/// (or a caller wrote the mark there, see the module docs).
///
/// # Safety
/// As [`hl_word`].
#[inline(always)]
pub(crate) unsafe fn hl_is_free(obj: *mut u8) -> bool {
    // SAFETY: forwarded caller guarantee.
    unsafe { hl_word(obj) }.load(std::sync::atomic::Ordering::Relaxed) == hl_key(obj)
}

/// Marks headerless object `obj` free (a free, or its slab being made).
///
/// # Safety
/// As [`hl_word`], and nobody holds `obj`.
#[inline(always)]
pub(crate) unsafe fn hl_mark_free(obj: *mut u8) {
    // SAFETY: forwarded caller guarantee.
    unsafe { hl_word(obj) }.store(hl_key(obj), std::sync::atomic::Ordering::Relaxed);
}

/// Marks headerless object `obj` free unless it carries its free mark
/// already (a double free): whether it did. [`hl_is_free`] and
/// [`hl_mark_free`] in one, with the key computed once (the inline free's
/// path).
///
/// # Safety
/// As [`hl_word`], and `obj`'s holder, if it has one, is freeing it.
#[inline(always)]
pub(crate) unsafe fn hl_mark_free_checked(obj: *mut u8) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    let key = hl_key(obj);
    // SAFETY: forwarded caller guarantee.
    let word = unsafe { hl_word(obj) };
    if word.load(Relaxed) == key {
        return false;
    }
    word.store(key, Relaxed);
    true
}

/// Marks headerless object `obj` as handed to a caller: clears its free
/// mark (one store to the object's first line, as
/// [`mark_allocated`](super::mark_allocated)'s).
///
/// # Safety
/// As [`hl_word`], for an object just taken from a magazine or a slab.
#[inline(always)]
pub(crate) unsafe fn hl_mark_allocated(obj: *mut u8) {
    // SAFETY: forwarded caller guarantee.
    unsafe { hl_word(obj) }.store(0, std::sync::atomic::Ordering::Relaxed);
}

/// The slab of an object of a headerless slab: its page.
#[inline(always)]
pub(super) fn hl_slab_of(obj: *mut u8) -> *mut Slab {
    obj.wrapping_sub(obj.addr() & (HL_SLAB - 1)).cast()
}

/// Whether `obj` is where an object of headerless geometry `g` starts in
/// its slab (not the slab header, not inside an object); `obj` is
/// 16-aligned.
#[inline(always)]
pub(super) fn hl_starts_obj(g: &Geometry, obj: *mut u8) -> bool {
    let off = (obj.addr() & (HL_SLAB - 1)) as u64;
    off >= g.first_obj && (off - g.first_obj).is_multiple_of(g.obj_size_full)
}
