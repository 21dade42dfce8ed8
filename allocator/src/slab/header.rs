//! The object header: one word, not the seed's five fields.
//!
//! The seed's `spl_kmem_obj_t` holds the object's address, its slab, a
//! magic and list links: 32 bytes after every object, which made 64-byte
//! objects cost 1.52× their size in slabs. Here the header is one word:
//! the slab's address in the low 48 bits with the object's state in the
//! top 16 — [`OBJ_FREE`] while the object is on a free list, in a magazine,
//! an inbox or the depot, its cache's [`alloc_tag`] (a [`reserved_tag`]
//! for `kmem`'s size classes, which names the class and the CPU that
//! handed the object out: [`homed_tag`]) while a caller holds it
//! ([`OBJ_EMERGENCY`] in emergency objects, which have no slab). The free
//! list is linked through the first word of each free
//! object instead of through the header (the seed's constructor runs on
//! every allocation, so nothing may expect a free object's bytes to
//! survive). The address field was only a consistency check; the slab
//! header's magic, cache and bounds take its place in the debug checks.
//! 64-byte objects now fit 56 to a 4 KiB slab instead of 42.

use super::{OBJ_HDR, Slab, os};
use crate::flags::SKS_MAGIC;

/// Object header, right before each object (the seed's `spl_kmem_obj_t`, cut to
/// one word: see the module docs). Always accessed atomically (relaxed), so
/// a racing double free is a detected bug, not a data race.
#[repr(C)]
pub(crate) struct ObjHdr {
    /// The slab's address in the low 48 bits, the object's state
    /// ([`OBJ_FREE`], [`OBJ_EMERGENCY`] or an [`alloc_tag`]) in the top 16.
    pub(super) word: u64,
}

/// Where the state sits in a header word: its top 16 bits. User-space
/// addresses on x86_64 and aarch64 fit in 48 bits (the kernel maps higher
/// only on request), so those bits are zero in a slab address. The state
/// is its own aligned 16-bit half-word, so marking an object is one store.
const STATE_SHIFT: u32 = 48;
pub(super) const ADDR_MASK: u64 = (1 << STATE_SHIFT) - 1;
/// The state's byte offset inside the header word.
const STATE_BYTE: usize = if cfg!(target_endian = "little") { 6 } else { 0 };

/// State of a slab object that no caller holds (even, so never an
/// [`alloc_tag`]).
pub(crate) const OBJ_FREE: u16 = 0x5a44;

/// State of an emergency object (even, so never an [`alloc_tag`]): the
/// inline free sees it is not a slab object.
pub(crate) const OBJ_EMERGENCY: u16 = 0xe3e2;

/// State of a `KMC_SLAB` object, from the system allocator (even, so never
/// an [`alloc_tag`]).
pub(crate) const OBJ_SYSTEM: u16 = 0x5e5e;

/// State of an object a caller holds: the cache id folded to 15 bits, odd,
/// so never [`OBJ_FREE`] or [`OBJ_EMERGENCY`], and with the top bit clear,
/// so never a [`reserved_tag`]. Written at every allocation; debug caches
/// check it at free: a free into another cache is told apart from a double
/// free unless the two caches' tags collide (1 in 16384).
#[inline(always)]
pub(crate) fn alloc_tag(cache_id: u64) -> u16 {
    let mut f = cache_id ^ (cache_id >> 32);
    f ^= f >> 16;
    (f as u16 & !RESERVED_TAG) | 1
}

/// The top bit of a tag that [`alloc_tag`] never makes: tags with it are
/// [`reserved_tag`]s.
pub(crate) const RESERVED_TAG: u16 = 0x8000;

/// How many reserved tags there are: their numbers take bits 1 to 7 of
/// the state, and bits 8 to 14 name the object's home (see
/// [`homed_tag`]).
pub(crate) const RESERVED_TAGS: usize = 128;

/// Where a reserved tag's home is, and how many homes it can name.
const HOME_SHIFT: u32 = 8;
const HOME_BITS: u16 = 0x7f << HOME_SHIFT;
pub(crate) const HOMES: usize = 128;

/// The `n`th reserved tag (`n <` [`RESERVED_TAGS`]): a state for objects
/// a caller holds, like an [`alloc_tag`], which no cache gets unless its
/// builder asks for it (`crate::kmem` gives size class `n` tag `n`, so
/// its `free` finds the class in the header's state without a search).
#[inline(always)]
pub(crate) const fn reserved_tag(n: usize) -> u16 {
    debug_assert!(n < RESERVED_TAGS);
    RESERVED_TAG | (n as u16) << 1 | 1
}

/// Reserved tag `tag` with the home `cpu` in it: the CPU an object was
/// handed out on, modulo [`HOMES`], for the caches whose objects go home
/// when another CPU frees them (see `crate::inbox`). A hint: the thread
/// may have moved by the time the tag is written.
#[inline(always)]
pub(crate) const fn homed_tag(tag: u16, cpu: u32) -> u16 {
    tag | ((cpu as u16) << HOME_SHIFT & HOME_BITS)
}

/// The home a [`homed_tag`] `state` names.
#[inline(always)]
pub(crate) const fn home_of(state: u16) -> usize {
    ((state & HOME_BITS) >> HOME_SHIFT) as usize
}

/// Whether a [`homed_tag`] `state` names `cpu` as its home.
#[inline(always)]
pub(crate) const fn is_home(state: u16, cpu: u32) -> bool {
    (cpu ^ (state >> HOME_SHIFT) as u32) & (HOMES as u32 - 1) == 0
}

/// Reserved tag `state` without its home: the cache's own tag.
#[inline(always)]
pub(crate) const fn without_home(state: u16) -> u16 {
    state & !HOME_BITS
}

/// The size class whose objects carry `tag`: its `n` when it is a
/// [`reserved_tag`] (`crate::kmem`'s classes), with or without a home,
/// else `None`.
pub(crate) const fn class_of_tag(tag: u16) -> Option<usize> {
    if tag & (RESERVED_TAG | 1) == RESERVED_TAG | 1 {
        Some(reserved_tag_index(tag))
    } else {
        None
    }
}

/// The `n` of a [`reserved_tag`] `state`, with or without a home (only
/// meaningful when `state` is one: `state & (RESERVED_TAG | 1) ==
/// RESERVED_TAG | 1`).
#[inline(always)]
pub(crate) const fn reserved_tag_index(state: u16) -> usize {
    ((state >> 1) as usize) & (RESERVED_TAGS - 1)
}

/// The header word of `obj`.
///
/// # Safety
/// `obj`'s header (the word right before it) is readable and writable memory that
/// lives as long as the returned reference is used.
#[inline(always)]
pub(super) unsafe fn word_of<'a>(obj: *mut u8) -> &'a std::sync::atomic::AtomicU64 {
    // SAFETY: forwarded caller guarantee; headers are 8-aligned (hdr_offset
    // and the slab start are multiples of the alignment, which is >= 8) and
    // only ever accessed atomically.
    unsafe { std::sync::atomic::AtomicU64::from_ptr(hdr_of(obj).cast()) }
}

/// The state half-word of `obj`'s header. Whole-word and half-word
/// accesses to one header never race in a correct program (the object's
/// holder is the only one touching it), which is what the memory model
/// asks of mixed-size atomics.
///
/// # Safety
/// As [`word_of`], and `obj` is 2-aligned.
#[inline(always)]
pub(crate) unsafe fn state_of<'a>(obj: *mut u8) -> &'a std::sync::atomic::AtomicU16 {
    let p = hdr_of(obj).cast::<u8>().wrapping_add(STATE_BYTE);
    // SAFETY: forwarded caller guarantee; hdr_offset is a multiple of 8 and
    // obj is 2-aligned, so p is 2-aligned.
    unsafe { std::sync::atomic::AtomicU16::from_ptr(p.cast()) }
}

/// The state bits of a header word.
#[inline(always)]
pub(super) fn state_bits(word: u64) -> u16 {
    (word >> STATE_SHIFT) as u16
}

/// The slab a header word names.
#[inline(always)]
pub(super) fn slab_of(word: u64) -> *mut Slab {
    std::ptr::with_exposed_provenance_mut((word & ADDR_MASK) as usize)
}

/// The header word of an object of slab `s` in state `state`.
#[inline(always)]
pub(super) fn header_word(s: *mut Slab, state: u16) -> u64 {
    s.expose_provenance() as u64 | u64::from(state) << STATE_SHIFT
}

/// Writes the whole header of an object that has no slab (emergency and
/// `KMC_SLAB` objects), with `state`.
///
/// # Safety
/// The header right before `obj` lies in `obj`'s allocation, 8-aligned.
pub(crate) unsafe fn init_slabless_header(obj: *mut u8, state: u16) {
    let hdr = hdr_of(obj);
    // SAFETY: as above; 8-aligned (caller, hdr_offset is a multiple of 8).
    unsafe {
        hdr.write(ObjHdr {
            word: u64::from(state) << STATE_SHIFT,
        })
    };
}

/// For [`crate::kmem`], which finds an object's owner from the pointer
/// alone: the state of `obj`'s header and the address it names (the slab,
/// or what [`set_foreign_header`] wrote).
///
/// # Safety
/// `obj`'s header (the 8-aligned word right before it) is readable.
#[inline(always)]
pub(crate) unsafe fn header_of(obj: *mut u8) -> (u16, usize) {
    // SAFETY: forwarded caller guarantee.
    let w = unsafe { word_of(obj) }.load(std::sync::atomic::Ordering::Relaxed);
    (state_bits(w), (w & ADDR_MASK) as usize)
}

/// For [`crate::kmem`]'s `free` fast path: the state of `obj`'s header,
/// read alone (the half-word the allocation wrote; see [`slab_addr_of`]).
///
/// # Safety
/// `obj`'s header (the 8-aligned word right before it) is readable.
#[inline(always)]
pub(crate) unsafe fn state_bits_of(obj: *mut u8) -> u16 {
    // SAFETY: forwarded caller guarantee; the header is 8-aligned, so its
    // state half-word is 2-aligned.
    unsafe { state_of(obj) }.load(std::sync::atomic::Ordering::Relaxed)
}

/// For [`crate::kmem`]'s `free` fast path: the slab address of `obj`'s
/// header, read as the two pieces that do not overlap the state half-word
/// (the low 32 bits, then bits 32 to 47). The allocation that handed `obj`
/// out wrote only the state, a moment ago when a program frees at once;
/// one load of the whole word would wait for that 16-bit store to reach
/// the cache (a failed store-to-load forward, about a dozen cycles), where
/// these two do not depend on it. Each piece is fixed while the object
/// lives, so reading them apart is the same as reading them together.
///
/// # Safety
/// As [`state_bits_of`].
#[inline(always)]
pub(crate) unsafe fn slab_addr_of(obj: *mut u8) -> usize {
    use std::sync::atomic::{AtomicU16, AtomicU32, Ordering::Relaxed};
    let h = hdr_of(obj).cast::<u8>();
    // Byte offsets of the low 32 bits and of bits 32..48 in the word.
    let (lo, mid) = if cfg!(target_endian = "little") {
        (0, 4)
    } else {
        (4, 2)
    };
    // SAFETY: forwarded caller guarantee: both pieces lie in the 8-aligned
    // header word (4- and 2-aligned), which is only accessed atomically;
    // mixed-size accesses never race in a correct program (see state_of).
    let lo = unsafe { AtomicU32::from_ptr(h.wrapping_add(lo).cast()) }.load(Relaxed);
    // SAFETY: as above.
    let mid = unsafe { AtomicU16::from_ptr(h.wrapping_add(mid).cast()) }.load(Relaxed);
    (u64::from(lo) | u64::from(mid) << 32) as usize
}

/// For [`crate::kmem`]: writes the header of a block that is not a slab
/// object (a large mapping, an aligned interior pointer), naming `addr`
/// (below 2^48) in state `state` (even, so never an [`alloc_tag`]).
///
/// # Safety
/// The 8-aligned word right before `obj` is writable and not a slab
/// object's header.
pub(crate) unsafe fn set_foreign_header(obj: *mut u8, addr: usize, state: u16) {
    debug_assert!(state & 1 == 0 && addr as u64 & !ADDR_MASK == 0);
    // SAFETY: forwarded caller guarantee.
    unsafe { word_of(obj) }.store(
        addr as u64 | u64::from(state) << STATE_SHIFT,
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// For [`crate::kmem`]: the magic and owning cache id of the slab header
/// at `slab`, an address a header holds (both fixed while the slab
/// lives).
///
/// # Safety
/// `slab` points at readable memory the size of a slab header.
#[inline(always)]
pub(crate) unsafe fn slab_owner(slab: usize) -> (u32, u64) {
    // SAFETY: forwarded caller guarantee.
    unsafe { owner_fields(std::ptr::with_exposed_provenance_mut(slab)) }
}

/// [`slab_owner`] of the slab header at `s`, a pointer (a headerless
/// slab's, found from one of its objects, so with that object's
/// provenance rather than an exposed address's).
///
/// # Safety
/// As [`slab_owner`].
#[inline(always)]
pub(super) unsafe fn owner_fields(s: *mut Slab) -> (u32, u64) {
    let b = s.cast::<u8>();
    let magic = b.wrapping_add(std::mem::offset_of!(Slab, magic));
    let cache = b.wrapping_add(std::mem::offset_of!(Slab, cache));
    // Both fields are written once, before the slab is linked, and never
    // again.
    // SAFETY: forwarded caller guarantee; both are aligned fields.
    let magic = unsafe { magic.cast::<u32>().read() };
    // SAFETY: as above.
    let cache = unsafe { cache.cast::<u64>().read() };
    (magic, cache)
}

/// For finding a pointer's owner from its header: the owning cache id of
/// the slab that a header names at `slab`, when slabscope mapped that page
/// and a slab's magic is there; `None` for an address that names no live
/// slab (nothing is read unless the page is slabscope's).
///
/// # Safety
/// None beyond `slab` being the address an object header holds: a page
/// slabscope mapped is readable, and a slab header lies at the start of its
/// slab's first page.
#[inline(always)]
pub(crate) unsafe fn live_slab_cache(slab: usize) -> Option<u64> {
    if !os::ranges::contains(slab) {
        return None;
    }
    // SAFETY: the slab header's page is slabscope's (checked).
    let (magic, cache) = unsafe { slab_owner(slab) };
    (magic == SKS_MAGIC).then_some(cache)
}

/// Marks a slab object as handed to a caller: one 16-bit store to the
/// header next to the object, on every allocation.
///
/// # Safety
/// `obj` is a slab object just taken from a magazine or a slab.
#[inline(always)]
pub(crate) unsafe fn mark_allocated(obj: *mut u8, tag: u16) {
    // SAFETY: obj is a live slab object (caller), so its header is; objects
    // are at least 8-aligned.
    unsafe { state_of(obj) }.store(tag, std::sync::atomic::Ordering::Relaxed);
}

/// Marks a slab object as free without checking it (caches without debug
/// checks).
///
/// # Safety
/// As [`mark_allocated`], for an object coming back from a caller.
#[inline(always)]
pub(crate) unsafe fn mark_free(obj: *mut u8) {
    // SAFETY: forwarded caller guarantee.
    unsafe { state_of(obj) }.store(OBJ_FREE, std::sync::atomic::Ordering::Relaxed);
}

/// The next object on a free list: the free object's first word.
///
/// # Safety
/// `obj` is a free slab object (its first word is its free-list link).
#[inline(always)]
pub(super) unsafe fn next_free(obj: *mut u8) -> *mut u8 {
    // SAFETY: slab objects are at least 8 bytes, 8-aligned (caller).
    unsafe { obj.cast::<*mut u8>().read() }
}

/// Links free object `obj` in front of `next`.
///
/// # Safety
/// As [`next_free`]; `obj` is not used by anyone else.
#[inline(always)]
pub(super) unsafe fn set_next_free(obj: *mut u8, next: *mut u8) {
    // SAFETY: as next_free.
    unsafe { obj.cast::<*mut u8>().write(next) }
}

/// The header of object `obj`.
#[inline(always)]
pub(super) fn hdr_of(obj: *mut u8) -> *mut ObjHdr {
    obj.wrapping_sub(OBJ_HDR as usize).cast()
}
