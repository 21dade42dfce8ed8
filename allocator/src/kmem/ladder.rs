//! The ladder of size classes: which class serves a request, in O(1).
//!
//! The base ladder is 16 bytes apart up to 256 bytes (16, 32, ..., 256),
//! then eight classes to every doubling: between 2^k and 2^(k+1) they are
//! 2^(k-3) apart (288, 320, ..., 512, 576, ...), up to [`MAX_CLASS`].
//!
//! The first [`HEADERLESS`] classes, 16, 32, 48 and 64 bytes, have no
//! object header (see `crate::slab::headerless`): a request of 1 to
//! 16 bytes takes 16, as on mimalloc, where glibc's chunks and a header
//! here would take 32. From there on each object has a one-word (8-byte)
//! header before it. A class that is a multiple of 16 would spend 16 bytes
//! on it (objects stay 16-aligned, as `malloc` promises), so up to 2 KiB
//! every class with a header is its base size **plus 8** (72, 88, ...,
//! 264, 296, ..., 2056), laid out with 8-byte alignment: a header and an
//! object then take a multiple of 16 together and every object is still
//! 16-aligned (the first starts 64 bytes into its slab), and a request
//! costs what it costs on glibc, whose chunks also carry an 8-byte size
//! word: `round_up(n + 8, 16)`. From 2 KiB objects are spaced a multiple
//! of 64 bytes anyway (see `crate::sizing`), so larger classes are their
//! base size.
//!
//! Internal waste: a request of `n` bytes gets a class less than one
//! spacing above it, so less than 16 bytes below 128 bytes and less than
//! `n / 8` (12.5 %) from 128 bytes on: the bound holds from 128 bytes.
//! Four classes per doubling, as illumos spaces `kmem_alloc_*`, would
//! waste up to 25 %; eight cost [`CLASSES`] (89) classes in all, each idle
//! one a cache header and no slab, and magazines that stay unwritten (and
//! so not resident) on every CPU that does not use the class
//! (`magazine::Mags`).

/// How many of the first classes are headerless: 16 to 64 bytes, on
/// x86_64, whose pages are always 4 KiB (a headerless slab is one 4 KiB
/// page). Elsewhere the same classes carry headers.
pub const HEADERLESS: usize = if cfg!(target_arch = "x86_64") { 4 } else { 0 };

/// Bytes of the largest class that may be headerless: requests up to this
/// size are 16 bytes apart from 16.
pub const HEADERLESS_MAX: usize = 64;

/// Bytes of the largest class; larger requests get mappings of their own
/// (see [`super`] for the measurement behind the choice).
pub const MAX_CLASS: usize = 128 << 10;

/// Base classes 16 bytes apart, up to this size.
const LINEAR_MAX: usize = 256;
const LINEAR: usize = LINEAR_MAX / 16;
/// log2 of [`LINEAR_MAX`].
const LINEAR_SHIFT: u32 = LINEAR_MAX.trailing_zeros();
/// Classes per doubling above [`LINEAR_MAX`] (as a shift: 8).
const PER_DOUBLING_SHIFT: u32 = 3;
/// Base classes up to this size get the header's 8 bytes added.
const PLUS8_MAX: usize = 2048;

/// How many classes the ladder has: the base ladder's, and one more, as
/// 64 bytes is a class twice, bare (headerless) and as 72 (with its
/// header's 8, the first of the plus-8 classes).
pub const CLASSES: usize =
    1 + LINEAR + ((MAX_CLASS.trailing_zeros() - LINEAR_SHIFT) << PER_DOUBLING_SHIFT) as usize;

/// Index in the base ladder of the smallest base class of at least `n`
/// bytes (`1 <= n <= MAX_CLASS`).
#[inline(always)]
const fn base_index(n: usize) -> usize {
    if n <= LINEAR_MAX {
        return (n - 1) >> 4;
    }
    // n is in (2^k, 2^(k+1)].
    let k = usize::BITS - 1 - (n - 1).leading_zeros();
    let shift = k - PER_DOUBLING_SHIFT;
    let step = (n - 1 - (1 << k)) >> shift;
    LINEAR + (((k - LINEAR_SHIFT) << PER_DOUBLING_SHIFT) as usize) + step
}

/// Bytes of base class `j`.
const fn base_size(j: usize) -> usize {
    if j < LINEAR {
        return (j + 1) * 16;
    }
    let j = j - LINEAR;
    let k = LINEAR_SHIFT as usize + (j >> PER_DOUBLING_SHIFT);
    let step = (j & ((1 << PER_DOUBLING_SHIFT) - 1)) + 1;
    (1 << k) + (step << (k - PER_DOUBLING_SHIFT as usize))
}

/// The class serving a request of `size` bytes, for `size <= MAX_CLASS`.
#[inline(always)]
pub fn index(size: usize) -> usize {
    debug_assert!(size <= MAX_CLASS);
    if size <= HEADERLESS_MAX {
        // 16 apart from 16: 0 to 16 give 0, ..., 49 to 64 give 3.
        size.saturating_sub(1) >> 4
    } else if size <= LINEAR_MAX + 8 {
        // 16 apart from 72: one add and a shift (65 to 72 give 4, 73 to
        // 88 give 5, ..., 249 to 264 give 16).
        (size + 7) >> 4
    } else if size <= BY_8_MAX {
        BY_8[(size + 7) >> 3] as usize
    } else {
        1 + base_index(size)
    }
}

/// Requests up to this many bytes above the linear classes find their
/// class in [`BY_8`]: 4 KiB, as far as jemalloc's lookup table reaches
/// (`SC_LOOKUP_MAXCLASS`). The table first stopped at 2 KiB, where the
/// classes stop carrying their header's 8; past it a branch chose the
/// computed index, and requests of random sizes on both sides of 2 KiB
/// (larson's, 8 B to 4 KiB) mispredicted it half the time: 3 to 5 % of
/// larson's time (bench/ANALYSIS.md, "Larson's two readings").
const BY_8_MAX: usize = 4096;

/// The class of a request of `8 * j` bytes (so of every size from
/// `8 * j - 7`, as every class is a multiple of 8), up to [`BY_8_MAX`]:
/// one load of a 513-byte table where [`computed_index`] takes a
/// bit scan and a dozen more instructions.
const BY_8: [u8; BY_8_MAX / 8 + 1] = {
    let mut t = [0; BY_8_MAX / 8 + 1];
    let mut j = 0;
    while j < t.len() {
        t[j] = computed_index(j * 8) as u8;
        j += 1;
    }
    t
};

/// [`index`] from the ladder's definition.
const fn computed_index(size: usize) -> usize {
    if size <= HEADERLESS_MAX {
        base_index(if size == 0 { 1 } else { size })
    } else if size <= PLUS8_MAX + 8 {
        1 + base_index(size - 8)
    } else {
        1 + base_index(size)
    }
}

/// Bytes of each class, for [`size`].
const SIZES: [u32; CLASSES] = {
    let mut t = [0; CLASSES];
    let mut i = 0;
    while i < CLASSES {
        t[i] = class_size(i) as u32;
        i += 1;
    }
    t
};

/// Bytes of class `i` (`i < CLASSES`): one load.
#[inline]
pub const fn size(i: usize) -> usize {
    SIZES[i] as usize
}

/// Bytes of class `i`, computed.
const fn class_size(i: usize) -> usize {
    let last_bare = HEADERLESS_MAX / 16 - 1;
    if i <= last_bare {
        return base_size(i);
    }
    let b = base_size(i - 1);
    if b <= PLUS8_MAX { b + 8 } else { b }
}

/// Alignment the class's cache is built with: 8 for the classes that
/// are 8 more than a multiple of 16 (their header completes the 16), 16
/// for the others.
pub const fn align(i: usize) -> usize {
    if size(i) % 16 == 8 { 8 } else { 16 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_gets_the_smallest_class_that_holds_it() {
        assert_eq!(CLASSES, 89);
        assert_eq!(size(CLASSES - 1), MAX_CLASS);
        let mut prev = 0;
        for i in 0..CLASSES {
            let s = size(i);
            assert!(s > prev && s.is_multiple_of(8), "class {i}: {s}");
            assert_eq!((s + 8).is_multiple_of(16), align(i) == 8, "class {i}: {s}");
            assert_eq!(index(s), i, "class {i} holds its own size");
            assert_eq!(s, class_size(i), "class {i}: the table");
            assert_eq!(index(prev + 1), i, "just above class {}", i.wrapping_sub(1));
            prev = s;
        }
        assert_eq!(index(0), 0);
        assert_eq!(
            [16, 17, 64, 65, 72, 73, 264, 265].map(index),
            [0, 1, 3, 4, 4, 5, 16, 17]
        );
        assert_eq!((0..5).map(size).collect::<Vec<_>>(), [16, 32, 48, 64, 72]);
        assert_eq!(
            (size(16), size(17), size(24), size(25)),
            (264, 296, 520, 584)
        );
        assert_eq!((size(index(2056)), size(index(2057))), (2056, 2304));
    }

    #[test]
    fn the_fast_index_is_the_ladders_for_every_size() {
        // Every size natively; a sample under Miri, which is slow.
        let step = if cfg!(miri) { 13 } else { 1 };
        for n in (0..=MAX_CLASS).step_by(step) {
            assert_eq!(index(n), computed_index(n), "{n} bytes");
        }
    }

    #[test]
    fn waste_is_under_an_eighth_from_128_bytes_and_under_16_bytes_below() {
        // Every size natively; a sample under Miri, which is slow.
        let step = if cfg!(miri) { 97 } else { 1 };
        for n in (1..=MAX_CLASS).step_by(step) {
            let waste = size(index(n)) - n;
            if n >= 128 {
                assert!(waste * 8 < n, "{n} bytes waste {waste}");
            } else {
                assert!(waste < 16, "{n} bytes waste {waste}");
            }
        }
    }
}
