//! Which pages slabscope mapped: a two-level bitmap with one bit per page,
//! so `free` of any pointer can tell in O(1), without a lock, whether the
//! memory is slabscope's before it reads a header there (see
//! [`crate::kmem`]). Every anonymous mapping the [`super`] seam makes is
//! noted here and every unmapping forgotten, whichever cache or layer asked
//! for it.
//!
//! The top level has one slot per GiB of the 47-bit user address space
//! (128 Ki slots, 1 MiB of `.bss`, touched only where slabscope maps); a
//! slot points at a leaf of 2^18 bits (32 KiB, one bit per 4 KiB page),
//! mapped on first use and never freed. A lookup is two dependent loads.
//! Leaves come straight from `mmap`, never from an allocator, so noting a
//! mapping cannot recurse into `malloc`.
//!
//! Pages of other sizes: the bit granule is 4 KiB whatever the page size;
//! mappings are always whole pages, so whole granules.

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// Bits of address a leaf covers (1 GiB).
const LEAF_SHIFT: u32 = 30;
/// Bits of address one bit covers (4 KiB).
const GRANULE_SHIFT: u32 = 12;
/// Slots of the top level: the 47-bit user address space.
const TOP: usize = 1 << (47 - LEAF_SHIFT);
/// Words of a leaf.
const LEAF_WORDS: usize = 1 << (LEAF_SHIFT - GRANULE_SHIFT - 6);

type Leaf = [AtomicU64; LEAF_WORDS];

static TABLE: [AtomicPtr<Leaf>; TOP] = [const { AtomicPtr::new(ptr::null_mut()) }; TOP];

/// The leaf of `addr`, mapped when `create` and it is missing. `None` for
/// addresses above the 47-bit space, or when the leaf cannot be mapped.
fn leaf(addr: usize, create: bool) -> Option<&'static Leaf> {
    let slot = TABLE.get(addr >> LEAF_SHIFT)?;
    let mut l = slot.load(Ordering::Acquire);
    if l.is_null() {
        if !create {
            return None;
        }
        l = map_leaf()?;
        if let Err(other) =
            slot.compare_exchange(ptr::null_mut(), l, Ordering::AcqRel, Ordering::Acquire)
        {
            // SAFETY: l was mapped just above, is the size of a leaf and
            // nothing else has seen it.
            unsafe { libc::munmap(l.cast(), size_of::<Leaf>()) };
            l = other;
        }
    }
    // SAFETY: a non-null slot points at a leaf mapping that is never unmapped;
    // its words are only accessed atomically.
    Some(unsafe { &*l })
}

fn map_leaf() -> Option<*mut Leaf> {
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing touches no existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size_of::<Leaf>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    // Zero-filled, which is a valid leaf of atomics (all pages unmarked).
    (p != libc::MAP_FAILED).then_some(p.cast())
}

/// Marks (`mapped`) or unmarks the pages of `[addr, addr + len)`. Returns
/// false only when marking needed a leaf that could not be mapped.
pub(crate) fn note(addr: usize, len: usize, mapped: bool) -> bool {
    let mut g = addr >> GRANULE_SHIFT;
    let end = (addr + len).div_ceil(1 << GRANULE_SHIFT);
    while g < end {
        let a = g << GRANULE_SHIFT;
        let Some(l) = leaf(a, mapped) else {
            if mapped {
                return false;
            }
            // Nothing marked in this GiB: skip to the next.
            g = ((a >> LEAF_SHIFT) + 1) << (LEAF_SHIFT - GRANULE_SHIFT);
            continue;
        };
        let bit = g & ((1 << (LEAF_SHIFT - GRANULE_SHIFT)) - 1);
        let (word, first) = (bit / 64, bit % 64);
        let n = (64 - first).min(end - g);
        let mask = if n == 64 {
            u64::MAX
        } else {
            ((1u64 << n) - 1) << first
        };
        if mapped {
            l[word].fetch_or(mask, Ordering::Release);
        } else {
            l[word].fetch_and(!mask, Ordering::Release);
        }
        g += n;
    }
    true
}

/// Whether the page holding `addr` is mapped by slabscope right now.
#[inline(always)]
pub(crate) fn contains(addr: usize) -> bool {
    word(addr) & bit(addr) != 0
}

/// The bitmap word holding the bit of `addr`'s page: the bits of the 64
/// pages around it (0 where no leaf exists). With [`bit`] and
/// [`same_word`] a caller tests a second address near the first without
/// a second lookup.
#[inline(always)]
pub(crate) fn word(addr: usize) -> u64 {
    let Some(slot) = TABLE.get(addr >> LEAF_SHIFT) else {
        return 0;
    };
    let l = slot.load(Ordering::Acquire);
    if l.is_null() {
        return 0;
    }
    let bit = (addr >> GRANULE_SHIFT) & ((1 << (LEAF_SHIFT - GRANULE_SHIFT)) - 1);
    // SAFETY: as in `leaf`.
    let leaf = unsafe { &*l };
    leaf[bit / 64].load(Ordering::Acquire)
}

/// The bit of `addr`'s page in its [`word`].
#[inline(always)]
pub(crate) const fn bit(addr: usize) -> u64 {
    1 << ((addr >> GRANULE_SHIFT) % 64)
}

/// Whether the pages of `a` and `b` have their bits in the same [`word`].
#[inline(always)]
pub(crate) const fn same_word(a: usize, b: usize) -> bool {
    (a ^ b) >> (GRANULE_SHIFT + 6) == 0
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn marks_and_unmarks_exact_page_ranges_across_words_and_leaves() {
        // Far from anything the test process maps: the top of the 47-bit space.
        let base = (TOP - 3) << LEAF_SHIFT;
        let gran = 1usize << GRANULE_SHIFT;
        assert!(!contains(base));
        // 70 pages straddling a word, then a range straddling two leaves.
        assert!(note(base + 60 * gran, 70 * gran, true));
        assert!(!contains(base + 59 * gran + gran - 1));
        assert!(contains(base + 60 * gran));
        assert!(contains(base + 129 * gran + gran - 1));
        assert!(!contains(base + 130 * gran));
        let edge = base + (1 << LEAF_SHIFT);
        assert!(note(edge - 2 * gran, 4 * gran, true));
        assert!(contains(edge - 1) && contains(edge + gran) && !contains(edge + 2 * gran));
        assert!(note(base + 64 * gran, 2 * gran, false));
        assert!(contains(base + 63 * gran) && !contains(base + 64 * gran));
        assert!(!contains(base + 65 * gran) && contains(base + 66 * gran));
        assert!(note(base + 60 * gran, 70 * gran, false));
        assert!(note(edge - 2 * gran, 4 * gran, false));
        assert!(!contains(base + 66 * gran) && !contains(edge));
        assert!(!contains(usize::MAX - 7), "beyond the 47-bit space");
        // One word answers for the 64 pages around an address.
        assert!(note(base + 64 * gran, 2 * gran, true));
        let w = word(base + 64 * gran);
        assert!(same_word(base + 64 * gran, base + 127 * gran));
        assert!(!same_word(base + 64 * gran, base + 128 * gran));
        assert!(!same_word(base + 64 * gran, base + 63 * gran));
        assert!(w & bit(base + 65 * gran) != 0 && w & bit(base + 66 * gran) == 0);
        assert!(note(base + 64 * gran, 2 * gran, false));
        assert_eq!(word(base + 64 * gran), 0);
    }
}
