//! Which pages slabscope mapped, and which of them start a slab of a
//! `kmem` size class: a two-level map with one byte per page, so `free` of
//! any pointer can tell in O(1), without a lock, whether the memory is
//! slabscope's before it reads a header there (see [`crate::kmem`]), and
//! whether the slab a header names is one of the class the header names,
//! without reading that slab's header (a cache line of its own, rarely
//! cached when a program frees objects of many slabs). Every anonymous
//! mapping the [`super`] seam makes is noted here and every unmapping
//! forgotten, whichever cache or layer asked for it; a size class's grow
//! marks the first page of each slab it adds ([`mark_class_slab`]).
//!
//! A page's byte is 0 (not slabscope's), [`OURS`], [`class_slab`] of a
//! class `i` when a live slab of class `i` starts on it, or
//! [`headerless_slab`] of `i` when the page is a whole slab of a class
//! whose objects have no header (see `crate::slab`): there the byte is
//! how a `free` learns that the word before the pointer is not a header
//! but the end of the previous object. Unmapping the slab clears its
//! bytes with the rest of its pages.
//!
//! The top level has one slot per GiB of the 47-bit user address space
//! (128 Ki slots, 1 MiB of `.bss`, touched only where slabscope maps); a
//! slot points at a leaf of 2^18 bytes (256 KiB of address space, one byte
//! per 4 KiB page; a page of it is touched per 16 MiB slabscope maps),
//! mapped on first use and never freed. A lookup is two dependent loads.
//! Leaves come straight from `mmap`, never from an allocator, so noting a
//! mapping cannot recurse into `malloc`.
//!
//! Pages of other sizes: the granule is 4 KiB whatever the page size;
//! mappings are always whole pages, so whole granules, and a slab starts
//! on a page, so on a granule.

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

/// Bits of address a leaf covers (1 GiB).
const LEAF_SHIFT: u32 = 30;
/// Bits of address one byte covers (4 KiB).
const GRANULE_SHIFT: u32 = 12;
/// Slots of the top level: the 47-bit user address space.
const TOP: usize = 1 << (47 - LEAF_SHIFT);
/// Bytes of a leaf.
const LEAF_BYTES: usize = 1 << (LEAF_SHIFT - GRANULE_SHIFT);

/// One leaf: the bytes of the pages of one GiB.
pub(crate) struct Leaf([AtomicU8; LEAF_BYTES]);

impl Leaf {
    /// The byte of `addr`'s page; `addr` lies in this leaf's GiB.
    #[inline(always)]
    pub(crate) fn byte(&self, addr: usize) -> u8 {
        self.slot(addr).load(Ordering::Acquire)
    }

    /// The byte of `addr`'s page, to write; `addr` lies in this leaf's GiB.
    #[inline(always)]
    fn slot(&self, addr: usize) -> &AtomicU8 {
        &self.0[(addr >> GRANULE_SHIFT) & (LEAF_BYTES - 1)]
    }
}

/// A page slabscope mapped.
pub(crate) const OURS: u8 = 1;
/// The top bit of [`class_slab`]'s bytes.
const CLASS_SLAB: u8 = 0x80;

/// The byte of the first page of a live slab of size class `i` (`i <
/// 128`).
#[inline(always)]
pub(crate) const fn class_slab(i: usize) -> u8 {
    CLASS_SLAB | (i as u8 & !CLASS_SLAB)
}

/// The bytes of [`headerless_slab`]: 0x40 to 0x4f, neither [`OURS`] nor
/// a [`class_slab`] byte.
const HEADERLESS_SLAB: u8 = 0x40;

/// How many headerless classes the page map's bytes can name.
pub(crate) const HEADERLESS_CLASSES: usize = 16;

/// The byte of a page that is a whole live slab of headerless size class
/// `i` (`i <` [`HEADERLESS_CLASSES`]).
#[inline(always)]
pub(crate) const fn headerless_slab(i: usize) -> u8 {
    HEADERLESS_SLAB | (i as u8 & (HEADERLESS_CLASSES as u8 - 1))
}

/// The class `i` of a [`headerless_slab`] byte `b`, or
/// [`HEADERLESS_CLASSES`] and more for any other byte (one subtraction:
/// callers compare the result with the number of headerless classes).
#[inline(always)]
pub(crate) const fn headerless_class(b: u8) -> usize {
    b.wrapping_sub(HEADERLESS_SLAB) as usize
}

static TABLE: [AtomicPtr<Leaf>; TOP] = [const { AtomicPtr::new(ptr::null_mut()) }; TOP];

/// The leaf of `addr`, mapped when `create` and it is missing. `None` for
/// addresses above the 47-bit space, or when the leaf is missing (and not
/// `create`, or cannot be mapped).
#[inline(always)]
pub(crate) fn leaf(addr: usize, create: bool) -> Option<&'static Leaf> {
    let slot = TABLE.get(addr >> LEAF_SHIFT)?;
    let l = slot.load(Ordering::Acquire);
    if l.is_null() {
        return if create { new_leaf(slot) } else { None };
    }
    // SAFETY: a non-null slot points at a leaf mapping that is never
    // unmapped; its bytes are only accessed atomically.
    Some(unsafe { &*l })
}

#[cold]
fn new_leaf(slot: &AtomicPtr<Leaf>) -> Option<&'static Leaf> {
    let mut l = map_leaf()?;
    if let Err(other) =
        slot.compare_exchange(ptr::null_mut(), l, Ordering::AcqRel, Ordering::Acquire)
    {
        // SAFETY: l was mapped just above, is the size of a leaf and
        // nothing else has seen it.
        unsafe { libc::munmap(l.cast(), size_of::<Leaf>()) };
        l = other;
    }
    // SAFETY: as in `leaf`.
    Some(unsafe { &*l })
}

fn map_leaf() -> Option<*mut Leaf> {
    // Zero-filled, which is a valid leaf of atomics (no page marked).
    super::mmap_fresh(size_of::<Leaf>(), libc::PROT_READ | libc::PROT_WRITE, 0)
        .map(|p| p as *mut Leaf)
}

/// Marks the pages of `[addr, addr + len)` as [`OURS`] (`mapped`) or
/// forgets them (0, whatever they were). Returns false only when marking
/// needed a leaf that could not be mapped.
pub(crate) fn note(addr: usize, len: usize, mapped: bool) -> bool {
    let mut g = addr >> GRANULE_SHIFT;
    let end = (addr + len).div_ceil(1 << GRANULE_SHIFT);
    let value = if mapped { OURS } else { 0 };
    while g < end {
        let a = g << GRANULE_SHIFT;
        // The granules of this leaf in the range.
        let leaf_end = ((a >> LEAF_SHIFT) + 1) << (LEAF_SHIFT - GRANULE_SHIFT);
        let n = end.min(leaf_end) - g;
        if let Some(l) = leaf(a, mapped) {
            let first = g & (LEAF_BYTES - 1);
            for b in &l.0[first..first + n] {
                b.store(value, Ordering::Release);
            }
        } else if mapped {
            return false;
        }
        // Else nothing was marked in this GiB.
        g += n;
    }
    true
}

/// Marks the first page of a slab of size class `i` at `slab` (a page of
/// ours, noted by [`note`]) as [`class_slab`]`(i)`, or as
/// [`headerless_slab`]`(i)` for a `headerless` class (whose slabs are one
/// page), once the slab is built and before any of its objects is handed
/// out. Unmapping the slab clears the mark.
pub(crate) fn mark_class_slab(slab: usize, i: usize, headerless: bool) {
    if let Some(l) = leaf(slab, false) {
        let b = l.slot(slab);
        debug_assert_eq!(
            b.load(Ordering::Relaxed),
            OURS,
            "{slab:#x} is not a page of ours"
        );
        let v = if headerless {
            headerless_slab(i)
        } else {
            class_slab(i)
        };
        b.store(v, Ordering::Release);
    }
}

/// The byte of `addr`'s page: 0 when it is not slabscope's.
#[inline(always)]
pub(crate) fn byte(addr: usize) -> u8 {
    leaf(addr, false).map_or(0, |l| l.byte(addr))
}

/// Whether the page holding `addr` is mapped by slabscope right now.
#[inline(always)]
pub(crate) fn contains(addr: usize) -> bool {
    byte(addr) != 0
}

/// Whether `addr` is the first byte of a granule, as a slab's address is.
#[inline(always)]
pub(crate) const fn starts_granule(addr: usize) -> bool {
    addr & ((1 << GRANULE_SHIFT) - 1) == 0
}

/// Whether `a` and `b` lie in the same leaf, so that one [`leaf`] answers
/// for both.
#[inline(always)]
pub(crate) const fn same_leaf(a: usize, b: usize) -> bool {
    (a ^ b) >> LEAF_SHIFT == 0
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn marks_and_unmarks_exact_page_ranges_across_leaves() {
        // Far from anything the test process maps: the top of the 47-bit space.
        let base = (TOP - 3) << LEAF_SHIFT;
        let gran = 1usize << GRANULE_SHIFT;
        assert!(!contains(base));
        assert!(note(base + 60 * gran, 70 * gran, true));
        assert!(!contains(base + 59 * gran + gran - 1));
        assert!(contains(base + 60 * gran));
        assert!(contains(base + 129 * gran + gran - 1));
        assert!(!contains(base + 130 * gran));
        let edge = base + (1 << LEAF_SHIFT);
        assert!(note(edge - 2 * gran, 4 * gran, true));
        assert!(contains(edge - 1) && contains(edge + gran) && !contains(edge + 2 * gran));
        assert!(same_leaf(edge - 1, base) && !same_leaf(edge - 1, edge));
        assert!(note(base + 64 * gran, 2 * gran, false));
        assert!(contains(base + 63 * gran) && !contains(base + 64 * gran));
        assert!(!contains(base + 65 * gran) && contains(base + 66 * gran));
        // A class slab's first page carries its class; its other pages,
        // and the bytes next to it, stay ours.
        mark_class_slab(base + 70 * gran, 5, false);
        assert_eq!(byte(base + 70 * gran), class_slab(5));
        assert_eq!(byte(base + 70 * gran + gran - 1), class_slab(5));
        assert_eq!(byte(base + 71 * gran), OURS);
        assert_eq!(byte(base + 69 * gran), OURS);
        let l = leaf(base, false).expect("a leaf was made");
        assert_eq!(l.byte(base + 70 * gran), class_slab(5));
        assert_ne!(class_slab(5), class_slab(6));
        assert_ne!(class_slab(0), OURS);
        mark_class_slab(base + 72 * gran, 2, true);
        assert_eq!(headerless_class(byte(base + 72 * gran)), 2);
        for b in [0, OURS, class_slab(0), class_slab(2), class_slab(127)] {
            assert!(
                headerless_class(b) >= HEADERLESS_CLASSES,
                "{b:#x} is no headerless slab's byte"
            );
        }
        assert!(note(base + 60 * gran, 70 * gran, false));
        assert_eq!(byte(base + 70 * gran), 0, "unmapping clears the mark");
        assert!(note(edge - 2 * gran, 4 * gran, false));
        assert!(!contains(base + 66 * gran) && !contains(edge));
        assert!(!contains(usize::MAX - 7), "beyond the 47-bit space");
    }
}
