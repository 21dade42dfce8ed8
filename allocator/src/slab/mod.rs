//! Slabs: layout, taking an object, returning one, reclaiming empty slabs.
//! Ports `spl_slab_alloc()`, `spl_slab_free()`, `spl_slab_reclaim()`,
//! `spl_cache_obj()` and `spl_cache_shrink()`.
//!
//! # Layout (as the seed draws it)
//!
//! ```text
//! +------------------------+  <- page-aligned mmap, slab_size bytes
//! | Slab header            |  sks_size = round_up(size_of::<Slab>(), align)
//! | color (unused bytes)   |  0 to slack bytes, in cache lines
//! | ObjHdr 0: slab | state |  one word right before its object
//! | object 0               |  first_obj + color; first_obj = sks_size + round_up(8, align)
//! | ObjHdr 1: slab | state |
//! | object 1               |  first_obj + color + obj_size_full
//! | ...                    |
//! | rest of the slack      |
//! +------------------------+
//! ```
//!
//! The color is not the seed's: it is Bonwick's slab coloring, which moves
//! each slab's objects by a different number of cache lines within the
//! bytes the objects leave over, so that objects of different slabs do not
//! all share the same L1 sets (see [`Geometry::color`]).
//!
//! The seed puts each object's header *after* the object. Here it comes
//! first: the header is touched at every allocation and free, and right
//! before the object it usually shares the object's first cache line (7 of
//! 8 objects at 64 B), where after it it never does — for a 4 KiB object it
//! is a page away. Sizes are the seed's either way (large objects aside:
//! see [`crate::sizing::spread`]).
//!
//! Every slab header records a magic ([`SKS_MAGIC`]), its cache, its object
//! count, the number of objects handed out (`ref`), how many objects it has
//! built, its age, its links on the cache's slab lists and the head of its
//! free list. Magics are checked on every slow-path transition unless the
//! cache has `KMC_NODEBUG`.
//!
//! # Built lazily
//!
//! The seed's `spl_slab_alloc()` writes every object's header and list
//! links when it makes a slab, so a new slab is resident whole: a 64 KiB
//! slab of a class a program takes three objects of costs 64 KiB. Here
//! [`init_slab`] writes the slab header only, and the slab hands out its
//! objects from a bump index, `built`, writing each one's header as it
//! goes (mimalloc builds its pages' free lists a piece at a time for the
//! same reason). A take empties the free list first, so freed objects are
//! reused LIFO before any new one is built, and objects are built in
//! address order, object 0 first: the order the eager free list had.
//! A take builds at most the objects whose headers lie on one page (it
//! returns short rather than start another), so a magazine refill, which
//! asks for up to 128 objects, does not build a whole slab for a class a
//! program takes three objects of. Pages past the last object ever handed
//! out are never written. The objects not yet built have a zero header
//! (fresh mappings are zero filled), which is no object's state: a free
//! of a pointer into one is refused like any other pointer the cache
//! never handed out.
//!
//! # The object header: one word, not the seed's five fields
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
//!
//! # Headerless slabs
//!
//! One word is half of a 16-byte object, and with `malloc`'s 16-byte
//! alignment a block of 16 bytes or less took 32. `kmem`'s classes of 16
//! to 64 bytes therefore have no object header (mimalloc's small pages
//! and glibc's tcache find what they need without one either): their
//! slabs are exactly one 4 KiB page ([`HL_SLAB`]), so an object's slab is
//! its address with the low 12 bits cleared, and the page map
//! (`os::ranges`) marks the page as a whole slab of its class, so a
//! `free` tells such an object from one with a header before reading the
//! word before it. The object's state is its second word while no caller
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
//!
//! # Lists
//!
//! A cache keeps a *partial* list (slabs with a free object) and a *complete*
//! list (slabs with none). Objects are taken from the head of the partial
//! list. A slab that gets an object back after being full goes to the head
//! (fuller first), one that becomes empty goes to the tail, so every empty
//! slab sits at the tail and reclaim stops at the first non-empty one.
//!
//! All of this runs under the cache lock (`skc_lock`); unmapping happens
//! after the lock is dropped, as in the seed.

use std::collections::BTreeMap;
use std::ptr::{self, NonNull};

use crate::flags::SKS_MAGIC;
use crate::os;
use crate::sizing::Geometry;
use slabscope_probes::SlabCounters;

/// Slab header, at the start of each slab (`spl_kmem_slab_t`).
///
/// A slab is built lazily: of its `objs` objects (`Geometry::slab_objs`,
/// the same for every slab of a cache, so not stored here), objects
/// `0..built` have been handed out at least once (their headers are
/// written), the rest, `built..objs`, never have, and their bytes are
/// still the zeroes the mapping came with. Of the built objects not
/// handed out, objects `0..unlisted` are free on no list, and the others
/// are on the free list. Its bookkeeping, which [`SlabState::validate`]
/// checks:
///
/// - `refs <= built <= objs` and `unlisted <= built - refs`
/// - `len(free) + unlisted == built - refs`: every built object not handed
///   out is on the free list or below `unlisted`, every object on the list
///   is built, and no object is both
/// - `objs == refs + len(free) + unlisted + (objs - built)`: each object
///   is handed out (in a magazine, the depot or a caller's hands), free, or
///   unbuilt
///
/// Why `unlisted`: a take from the free list follows one object's link to
/// the next, a load that waits for the one before it, and objects freed a
/// while ago are rarely in the cache, so a refill from a long list waits
/// for a cache miss per object, one after another. When a slab's last
/// object comes back, every built object is free: the list is dropped
/// (`unlisted = built`, without reading it), and takes hand out objects
/// `unlisted - 1` down to 0 by their addresses, which need no load and
/// which the prefetcher follows. Measured with the malloc library under
/// `workloads/heap.py` (python3, `PYTHONMALLOC=malloc`), where the
/// collector frees and the program rebuilds whole structures: the list
/// walk was 5.2 % of the program's samples (`perf`), the largest part of
/// slabscope's share after `malloc` and `free` themselves.
///
/// The slab is on the complete list exactly when `refs == objs` (so
/// `built == objs` there) and empty when `refs == 0`.
///
/// 56 bytes: with the 8-byte object header that puts object 0 of a cache of
/// 8-aligned objects on a multiple of 16, which `crate::kmem`'s classes of
/// 8 more than a multiple of 16 bytes need (see `SLAB_HDR`).
#[repr(C)]
pub(crate) struct Slab {
    magic: u32,
    /// Objects built: the next one a take hands out when the free list is
    /// empty is object `built` (the bump index of the unbuilt rest).
    built: u32,
    /// Objects handed out (neither on `free` nor unbuilt).
    refs: u32,
    /// Where object 0 starts past `first_obj` ([`Geometry::color`]).
    color: u32,
    /// Objects `0..unlisted` are free and on no list (see above).
    unlisted: u32,
    /// Coarse ms of the last take or return (`sks_age`), its low 32 bits:
    /// ages are compared with a wrapping subtraction, so an idle time is
    /// right up to 49 days (a slab idle longer may wait for the next
    /// reclaim walk). 32 bits keep the header at 56 bytes with `unlisted`.
    age: u32,
    /// The owning cache's id.
    cache: u64,
    prev: *mut Slab,
    next: *mut Slab,
    /// Head of the LIFO free list of objects, linked through each free
    /// object's first word.
    free: *mut u8,
}

/// Object header, right before each object (the seed's `spl_kmem_obj_t`, cut to
/// one word: see the module docs). Always accessed atomically (relaxed), so
/// a racing double free is a detected bug, not a data race.
#[repr(C)]
pub(crate) struct ObjHdr {
    /// The slab's address in the low 48 bits, the object's state
    /// ([`OBJ_FREE`], [`OBJ_EMERGENCY`] or an [`alloc_tag`]) in the top 16.
    word: u64,
}

/// Where the state sits in a header word: its top 16 bits. User-space
/// addresses on x86_64 and aarch64 fit in 48 bits (the kernel maps higher
/// only on request), so those bits are zero in a slab address. The state
/// is its own aligned 16-bit half-word, so marking an object is one store.
const STATE_SHIFT: u32 = 48;
const ADDR_MASK: u64 = (1 << STATE_SHIFT) - 1;
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
unsafe fn word_of<'a>(obj: *mut u8) -> &'a std::sync::atomic::AtomicU64 {
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
fn state_bits(word: u64) -> u16 {
    (word >> STATE_SHIFT) as u16
}

/// The slab a header word names.
#[inline(always)]
fn slab_of(word: u64) -> *mut Slab {
    std::ptr::with_exposed_provenance_mut((word & ADDR_MASK) as usize)
}

/// The header word of an object of slab `s` in state `state`.
#[inline(always)]
fn header_word(s: *mut Slab, state: u16) -> u64 {
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
unsafe fn owner_fields(s: *mut Slab) -> (u32, u64) {
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
unsafe fn next_free(obj: *mut u8) -> *mut u8 {
    // SAFETY: slab objects are at least 8 bytes, 8-aligned (caller).
    unsafe { obj.cast::<*mut u8>().read() }
}

/// Links free object `obj` in front of `next`.
///
/// # Safety
/// As [`next_free`]; `obj` is not used by anyone else.
#[inline(always)]
unsafe fn set_next_free(obj: *mut u8, next: *mut u8) {
    // SAFETY: as next_free.
    unsafe { obj.cast::<*mut u8>().write(next) }
}

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
/// mark (one store to the object's first line, as [`mark_allocated`]'s).
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
fn hl_slab_of(obj: *mut u8) -> *mut Slab {
    obj.wrapping_sub(obj.addr() & (HL_SLAB - 1)).cast()
}

/// Whether `obj` is where an object of headerless geometry `g` starts in
/// its slab (not the slab header, not inside an object); `obj` is
/// 16-aligned.
#[inline(always)]
fn hl_starts_obj(g: &Geometry, obj: *mut u8) -> bool {
    let off = (obj.addr() & (HL_SLAB - 1)) as u64;
    off >= g.first_obj && (off - g.first_obj).is_multiple_of(g.obj_size_full)
}

/// Bytes of the slab header before alignment.
pub(crate) const SLAB_HDR: u64 = size_of::<Slab>() as u64;
/// Bytes of the object header before alignment.
pub(crate) const OBJ_HDR: u64 = size_of::<ObjHdr>() as u64;
// Object 0 of an 8-aligned cache starts at SLAB_HDR + OBJ_HDR: `kmem`'s
// 8-aligned classes need that on a multiple of 16.
const _: () = assert!((SLAB_HDR + OBJ_HDR).is_multiple_of(16));

/// An intrusive doubly linked list of slabs (`struct list_head`).
#[derive(Debug)]
pub(crate) struct SlabList {
    head: *mut Slab,
    tail: *mut Slab,
    len: u64,
}

impl SlabList {
    const fn new() -> Self {
        SlabList {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            len: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// # Safety
    /// `s` is a live slab on no list.
    unsafe fn push_front(&mut self, s: *mut Slab) {
        // SAFETY: s is live and unlinked; no other reference to it exists.
        let sl = unsafe { &mut *s };
        sl.prev = ptr::null_mut();
        sl.next = self.head;
        if self.head.is_null() {
            self.tail = s;
        } else {
            // SAFETY: head is a live slab of this list, distinct from s.
            unsafe { (*self.head).prev = s };
        }
        self.head = s;
        self.len += 1;
    }

    /// # Safety
    /// `s` is a live slab on no list.
    unsafe fn push_back(&mut self, s: *mut Slab) {
        // SAFETY: s is live and unlinked; no other reference to it exists.
        let sl = unsafe { &mut *s };
        sl.next = ptr::null_mut();
        sl.prev = self.tail;
        if self.tail.is_null() {
            self.head = s;
        } else {
            // SAFETY: tail is a live slab of this list, distinct from s.
            unsafe { (*self.tail).next = s };
        }
        self.tail = s;
        self.len += 1;
    }

    /// # Safety
    /// `s` is a live slab on this list.
    unsafe fn remove(&mut self, s: *mut Slab) {
        // SAFETY: s is a live slab of this list.
        let sl = unsafe { &mut *s };
        let (p, n) = (sl.prev, sl.next);
        sl.prev = ptr::null_mut();
        sl.next = ptr::null_mut();
        if p.is_null() {
            self.head = n;
        } else {
            // SAFETY: p is s's live neighbour on this list.
            unsafe { (*p).next = n };
        }
        if n.is_null() {
            self.tail = p;
        } else {
            // SAFETY: n is s's live neighbour on this list.
            unsafe { (*n).prev = p };
        }
        self.len -= 1;
    }

    /// # Safety
    /// `s` is a live slab on this list.
    unsafe fn move_to_back(&mut self, s: *mut Slab) {
        // SAFETY: s is on this list (caller).
        unsafe { self.remove(s) };
        // SAFETY: s is live and now unlinked.
        unsafe { self.push_back(s) };
    }

    /// Raw iteration, head to tail. The list must not change meanwhile.
    fn iter(&self) -> impl Iterator<Item = *mut Slab> + '_ {
        let mut cur = self.head;
        std::iter::from_fn(move || {
            if cur.is_null() {
                return None;
            }
            let s = cur;
            // SAFETY: cur is a live slab of this list.
            cur = unsafe { (*s).next };
            Some(s)
        })
    }
}

/// Moves `s` from `from` to the head of `to`.
///
/// # Safety
/// `s` is a live slab on `from`.
unsafe fn relink(from: &mut SlabList, to: &mut SlabList, s: *mut Slab) {
    // SAFETY: s is on `from` (caller).
    unsafe { from.remove(s) };
    // SAFETY: s is live and now unlinked.
    unsafe { to.push_front(s) };
}

/// Everything under the cache lock.
#[derive(Debug)]
pub(crate) struct SlabState {
    pub partial: SlabList,
    pub complete: SlabList,
    /// SPL's counters; their invariants are on [`SlabCounters`] and
    /// [`Self::validate`] checks them.
    pub c: SlabCounters,
    /// Emergency objects by address (SPL's red-black tree).
    pub emergency: BTreeMap<usize, ()>,
    /// Grows queued or running plus reaps in progress (`skc_ref`).
    pub refs: u64,
    /// Allocations waiting on `grow_cv` for a grow to land (a grow that
    /// lands with none wakes nobody, saving a system call).
    pub grow_waiters: u64,
    /// Grows handed to the worker pool over the cache's life (the others
    /// ran in the allocating thread); for tests.
    pub grow_dispatches: u64,
    /// Coarse ms of the last walk of [`Self::unlink_empty`] with a delay.
    pub last_idle_walk: u64,
    /// Set once destroy has committed; every later use is a bug.
    pub destroyed: bool,
    /// Grows that failed since the last one that succeeded (see the
    /// `grow_fail_emergency` tunable).
    pub fail_streak: u64,
}

// SAFETY: the raw pointers point into slabs owned by this state and are only
// dereferenced under the cache lock that wraps it.
unsafe impl Send for SlabState {}

/// A chain of slabs unlinked from the cache, to be unmapped outside the lock.
#[derive(Debug)]
pub(crate) struct Reclaimed {
    head: *mut Slab,
    pub slabs: u64,
    pub objs: u64,
}

/// Initialises a fresh mapping as a slab (`spl_slab_alloc()` after `kv_alloc`).
///
/// # Safety
///
/// `base` is a writable, page-aligned mapping of `g.slab_size` bytes that
/// nothing else uses.
pub(crate) unsafe fn init_slab(base: NonNull<u8>, g: &Geometry, cache: u64) -> *mut Slab {
    let s = base.as_ptr().cast::<Slab>();
    let color = g.color(base.addr().get() as u64);
    assert!(
        (s as u64) & !ADDR_MASK == 0,
        "slab address {s:p} does not fit the 48 bits of an object header"
    );
    // SAFETY: the mapping is large enough for the header and page aligned.
    unsafe {
        s.write(Slab {
            magic: SKS_MAGIC,
            built: 0,
            refs: 0,
            color: color as u32,
            unlisted: 0,
            age: os::coarse_ms() as u32,
            cache,
            prev: ptr::null_mut(),
            next: ptr::null_mut(),
            free: ptr::null_mut(),
        })
    };
    if g.headerless() {
        // One page, written by its first object anyway: every object is
        // built now, free and unlisted, with its free mark (see the
        // module docs), so no object of a headerless slab is unbuilt.
        debug_assert_eq!(g.slab_size as usize, HL_SLAB);
        hl_key_init();
        let objs = g.slab_objs as u32;
        for i in 0..objs {
            // SAFETY: object i of this fresh slab, ours alone.
            unsafe { hl_mark_free(obj_at(s, g, 0, i)) };
        }
        // SAFETY: the header was just written.
        let sl = unsafe { &mut *s };
        sl.built = objs;
        sl.unlisted = objs;
        return s;
    }
    // Nothing past the header is written: every object starts unbuilt, and
    // a take builds them in order, object 0 first (see `Slab`).
    s
}

/// Object `i` of slab `s` (`i < objs`), derived from the slab's base
/// pointer (its provenance is the mapping's).
#[inline(always)]
fn obj_at(s: *mut Slab, g: &Geometry, color: u32, i: u32) -> *mut u8 {
    let off = g.first_obj + u64::from(color) + u64::from(i) * g.obj_size_full;
    let obj = s.cast::<u8>().wrapping_add(off as usize);
    debug_assert!((obj as usize).is_multiple_of(g.obj_align as usize));
    obj
}

/// The header of object `obj`.
#[inline(always)]
fn hdr_of(obj: *mut u8) -> *mut ObjHdr {
    obj.wrapping_sub(OBJ_HDR as usize).cast()
}

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
/// A headerless object (see the module docs) is checked against its slab
/// header instead: the slab's magic and cache (`id`), and the object's
/// place in the slab; then its free mark says whether it is free already.
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
fn corrupt(name: &str, obj: *mut u8, what: &str) -> ! {
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
unsafe fn check_taken(g: &Geometry, name: &str, s: *mut Slab, obj: *mut u8) {
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

impl SlabState {
    pub(crate) fn new() -> Self {
        SlabState {
            partial: SlabList::new(),
            complete: SlabList::new(),
            c: SlabCounters::ZERO,
            emergency: BTreeMap::new(),
            refs: 0,
            grow_waiters: 0,
            grow_dispatches: 0,
            fail_streak: 0,
            last_idle_walk: 0,
            destroyed: false,
        }
    }

    /// Links a new slab at the partial tail (`__spl_cache_grow()`).
    ///
    /// # Safety
    /// `s` was made by [`init_slab`] for this cache (geometry `g`) and is
    /// on no list.
    pub(crate) unsafe fn add_slab(&mut self, g: &Geometry, s: *mut Slab) {
        self.c.obj_total += g.slab_objs;
        // SAFETY: s is a fresh slab on no list (caller).
        unsafe { self.partial.push_back(s) };
        self.c.slab_total += 1;
        self.c.slab_create += 1;
    }

    /// Takes one object from the head of the partial list (`spl_cache_obj()`),
    /// moving the slab to the complete list when it fills.
    pub(crate) fn take_obj(
        &mut self,
        g: &Geometry,
        debug: bool,
        name: &str,
        now: u64,
    ) -> Option<NonNull<u8>> {
        let mut one = [ptr::null_mut()];
        self.take_batch(g, debug, name, now, &mut one);
        NonNull::new(one[0])
    }

    /// Takes up to `out.len()` objects into `out`, slab by slab from the
    /// head of the partial list (`spl_cache_obj()` in a batch, for a
    /// magazine refill), with each slab's counters and list position
    /// updated once, moving a slab to the complete list when it fills.
    /// Returns how many.
    ///
    /// Each slab gives its unlisted objects first (see [`Slab`]; the
    /// highest first), then its free list (the objects freed last come
    /// out first), then unbuilt objects in address order, writing each
    /// one's header as it goes (see [`Slab`]): memory past the last object
    /// ever handed out is never written, so its pages are never faulted in.
    /// It builds only the objects whose headers lie on one page, the page
    /// of the first header it writes, and returns short when that page
    /// runs out before `out` is full: the first refill of a class that
    /// hands out three objects would otherwise build its magazine's worth,
    /// a whole slab.
    pub(crate) fn take_batch(
        &mut self,
        g: &Geometry,
        debug: bool,
        name: &str,
        now: u64,
        out: &mut [*mut u8],
    ) -> usize {
        let mut n = 0;
        while n < out.len() {
            let s = self.partial.head;
            if s.is_null() {
                break;
            }
            // SAFETY: s is a live slab on the partial list and we hold the
            // cache lock; no other reference to it exists while we work.
            let sl = unsafe { &mut *s };
            if debug && sl.magic != SKS_MAGIC {
                corrupt(name, s.cast(), "slab header magic is wrong");
            }
            let objs = g.slab_objs as u32;
            let mut k = ((objs - sl.refs) as usize).min(out.len() - n);
            debug_assert!(k > 0, "partial slab with nothing to take");
            // The free list holds the built objects not handed out but
            // those below `unlisted`.
            let listed = (sl.built - sl.refs - sl.unlisted) as usize;
            // The objects below `unlisted` first: their addresses need no
            // load (see `Slab`).
            let from_unlisted = (sl.unlisted as usize).min(k);
            let free_word = header_word(s, OBJ_FREE);
            for slot in &mut out[n..n + from_unlisted] {
                sl.unlisted -= 1;
                let obj = obj_at(s, g, sl.color, sl.unlisted);
                if debug {
                    // SAFETY: a built object of a live slab.
                    unsafe { check_taken(g, name, s, obj) };
                }
                *slot = obj;
            }
            let from_list = listed.min(k - from_unlisted);
            let mut page_done = false;
            let mut obj = sl.free;
            for slot in &mut out[n + from_unlisted..n + from_unlisted + from_list] {
                if debug {
                    // SAFETY: a free object of a live slab.
                    unsafe { check_taken(g, name, s, obj) };
                }
                *slot = obj;
                // SAFETY: a free object of a live slab: its first word is
                // the link (from_list <= the listed objects).
                obj = unsafe { next_free(obj) };
            }
            sl.free = obj;
            let taken = from_unlisted + from_list;
            if taken < k {
                debug_assert!(!g.headerless(), "a headerless slab is built whole");
                // Build only the objects whose headers share the page of
                // the first one built here: a take writes at most one page
                // of the slab that was never written (see `Slab`).
                let want = k - taken;
                let left = (objs - sl.built) as usize;
                let hdr = hdr_of(obj_at(s, g, sl.color, sl.built)) as usize;
                let page_end = (hdr | (os::page_size() - 1)) + 1;
                let on_page = (page_end - hdr).div_ceil(g.obj_size_full as usize);
                let m = want.min(left).min(on_page);
                page_done = m < want && m < left;
                k = taken + m;
                for slot in &mut out[n + taken..n + k] {
                    let obj = obj_at(s, g, sl.color, sl.built);
                    // Written plainly, as the seed builds a slab: nobody
                    // else knows the object yet, so no access can race (and
                    // a first atomic store of the whole word would give
                    // Miri's weak memory model no room for the half-word
                    // state accesses that follow).
                    let hdr = hdr_of(obj);
                    // SAFETY: object `built` < objs of this live slab: its
                    // header word lies inside the slab, 8-aligned.
                    if debug && unsafe { hdr.read() }.word != 0 {
                        corrupt(
                            name,
                            obj,
                            "the header of an object never handed out is not zero: \
                             something wrote past the end of an object or a slab",
                        );
                    }
                    // SAFETY: as above.
                    unsafe { hdr.write(ObjHdr { word: free_word }) };
                    sl.built += 1;
                    *slot = obj;
                }
            }
            sl.age = now as u32;
            if sl.refs == 0 {
                self.c.slab_alloc += 1;
                self.c.slab_max = self.c.slab_max.max(self.c.slab_alloc);
            }
            sl.refs += k as u32;
            n += k;
            if sl.refs == objs {
                // SAFETY: s is a live slab on the partial list.
                unsafe { relink(&mut self.partial, &mut self.complete, s) };
            }
            if page_done {
                // Short, rather than build on a page of the next slab: a
                // refill asks for more objects than its caller needs now.
                break;
            }
        }
        self.c.obj_alloc += n as u64;
        self.c.obj_max = self.c.obj_max.max(self.c.obj_alloc);
        n
    }

    /// Returns an object to its slab (`spl_cache_shrink()`).
    ///
    /// # Safety
    /// `obj` was taken from this cache's slabs by [`Self::take_obj`] and not
    /// returned since.
    pub(crate) unsafe fn shrink(
        &mut self,
        g: &Geometry,
        debug: bool,
        name: &str,
        id: u64,
        obj: *mut u8,
        now: u64,
    ) {
        let s = if g.headerless() {
            if debug && !hl_starts_obj(g, obj) {
                corrupt(name, obj, "it is not where an object of its slab starts");
            }
            hl_slab_of(obj)
        } else {
            // SAFETY: obj is a live slab object of this cache (caller), so
            // its header is live; we hold the cache lock.
            let word = unsafe { word_of(obj) }.load(std::sync::atomic::Ordering::Relaxed);
            let s = slab_of(word);
            let (base, a) = (s as usize, obj as usize);
            if debug
                && (s.is_null()
                    || a < base + g.first_obj as usize
                    || a >= base + g.slab_size as usize)
            {
                corrupt(name, obj, "its header does not point at its slab");
            }
            s
        };
        // SAFETY: a valid header points at its live slab.
        let sl = unsafe { &mut *s };
        if debug && (sl.magic != SKS_MAGIC || sl.cache != id) {
            corrupt(
                name,
                obj,
                "its slab header is wrong or belongs to another cache",
            );
        }
        if debug && sl.refs == 0 {
            corrupt(name, obj, "its slab has no objects out");
        }
        // SAFETY: the object is free now and ours (caller).
        unsafe { set_next_free(obj, sl.free) };
        sl.free = obj;
        sl.age = now as u32;
        sl.refs -= 1;
        self.c.obj_alloc -= 1;
        let (refs, objs) = (sl.refs, g.slab_objs as u32);
        if refs == 0 {
            // Every built object is free: drop the list unread (see `Slab`).
            sl.unlisted = sl.built;
            sl.free = ptr::null_mut();
        }
        if refs == objs - 1 {
            // Was full: to the head of the partial list (fuller first).
            // SAFETY: a full slab is on the complete list.
            unsafe { relink(&mut self.complete, &mut self.partial, s) };
        }
        if refs == 0 {
            // Empty: to the tail, where reclaim looks.
            // SAFETY: a slab with a free object is on the partial list.
            unsafe { self.partial.move_to_back(s) };
            self.c.slab_alloc -= 1;
        }
    }

    /// Unlinks the empty slabs at the partial tail that have been idle for at
    /// least `min_idle_ms` at time `now` (`spl_slab_reclaim()` under the lock,
    /// `spl_slab_free()` for each); with 0, every empty slab.
    ///
    /// Empty slabs sit at the tail, the most recently emptied last, so the
    /// walk goes backwards over the empty ones, leaves the young in place and
    /// stops at the first slab in use.
    ///
    /// With a delay the walk runs at most once per `min_idle_ms / 2`: it
    /// passes every young empty slab to reach the old ones, and a program
    /// freeing a million objects empties a slab every few dozen frees, so
    /// walking on every flush made freeing everything quadratic. A slab
    /// therefore goes at most half a delay late; reaps (no delay) always
    /// walk.
    pub(crate) fn unlink_empty(&mut self, g: &Geometry, min_idle_ms: u64, now: u64) -> Reclaimed {
        let mut r = Reclaimed {
            head: ptr::null_mut(),
            slabs: 0,
            objs: 0,
        };
        if min_idle_ms > 0 {
            if now.saturating_sub(self.last_idle_walk) < min_idle_ms / 2 {
                return r;
            }
            self.last_idle_walk = now;
        }
        let mut s = self.partial.tail;
        // SAFETY: s, if non-null, is a live slab of the partial list.
        while !s.is_null() && unsafe { (*s).refs } == 0 {
            // SAFETY: as above.
            let sl = unsafe { &*s };
            let (prev, age) = (sl.prev, sl.age);
            if u64::from((now as u32).wrapping_sub(age)) >= min_idle_ms {
                // SAFETY: s is on the partial list; once removed only this
                // chain links it (through `next`).
                unsafe { self.partial.remove(s) };
                // SAFETY: s is live and now ours alone.
                let sl = unsafe { &mut *s };
                let objs = g.slab_objs;
                self.c.obj_total -= objs;
                self.c.slab_total -= 1;
                self.c.slab_destroy += 1;
                r.objs += objs;
                sl.next = r.head;
                r.head = s;
                r.slabs += 1;
            }
            s = prev;
        }
        r
    }
}

impl Reclaimed {
    /// Unmaps the chain (`kv_free()` for each slab) outside the lock.
    ///
    /// # Safety
    /// The chain came from [`SlabState::unlink_empty`] of a cache with
    /// geometry `g`, and no object of these slabs is in use.
    pub(crate) unsafe fn release(self, g: &Geometry) {
        let mut s = self.head;
        while !s.is_null() {
            // SAFETY: s is an unlinked empty slab of size slab_size we own now.
            let sl = unsafe { &mut *s };
            debug_assert_eq!(sl.magic, SKS_MAGIC);
            let next = sl.next;
            sl.magic = 0;
            let base = NonNull::new(s.cast::<u8>()).expect("non-null slab");
            // SAFETY: s heads a whole mapping of slab_size bytes, unused now.
            unsafe { os::unmap_pages(base, g.slab_size as usize) };
            s = next;
        }
    }
}

mod validate;

#[cfg(test)]
mod tests;
