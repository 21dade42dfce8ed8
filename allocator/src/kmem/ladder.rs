//! The ladder of size classes: which class serves a request, in O(1).
//!
//! Classes are 16 bytes apart up to 256 bytes (16, 32, ..., 256), then
//! eight to every doubling: between 2^k and 2^(k+1) they are 2^(k-3)
//! apart (288, 320, ..., 512, 576, ...), up to [`MAX_CLASS`]. Every class
//! is a multiple of 16, so every object is 16-aligned, as `malloc`
//! promises.
//!
//! Internal waste: a request of `n` bytes gets a class less than one
//! spacing above it, so less than 16 bytes below 128 bytes and less than
//! `n / 8` (12.5 %) from 128 bytes on: the bound holds from 128 bytes.
//! Four classes per doubling, as illumos spaces `kmem_alloc_*`, would
//! waste up to 25 %; eight cost 88 classes in all, each idle one a cache
//! header and empty magazines, no slab.

/// Bytes of the largest class; larger requests get mappings of their own
/// (see [`super`] for the measurement behind the choice).
pub const MAX_CLASS: usize = 128 << 10;

/// Classes 16 bytes apart, up to this size.
const LINEAR_MAX: usize = 256;
const LINEAR: usize = LINEAR_MAX / 16;
/// log2 of [`LINEAR_MAX`].
const LINEAR_SHIFT: u32 = LINEAR_MAX.trailing_zeros();
/// Classes per doubling above [`LINEAR_MAX`] (as a shift: 8).
const PER_DOUBLING_SHIFT: u32 = 3;

/// How many classes the ladder has.
pub const CLASSES: usize =
    LINEAR + ((MAX_CLASS.trailing_zeros() - LINEAR_SHIFT) << PER_DOUBLING_SHIFT) as usize;

/// The class serving a request of `size` bytes (0 is served as 1), for
/// `size <= MAX_CLASS`.
#[inline(always)]
pub fn index(size: usize) -> usize {
    debug_assert!(size <= MAX_CLASS);
    if size <= LINEAR_MAX {
        return size.saturating_sub(1) >> 4;
    }
    // size is in (2^k, 2^(k+1)].
    let k = usize::BITS - 1 - (size - 1).leading_zeros();
    let shift = k - PER_DOUBLING_SHIFT;
    let step = (size - 1 - (1 << k)) >> shift;
    LINEAR + (((k - LINEAR_SHIFT) << PER_DOUBLING_SHIFT) as usize) + step
}

/// Bytes of class `i`.
pub const fn size(i: usize) -> usize {
    if i < LINEAR {
        return (i + 1) * 16;
    }
    let j = i - LINEAR;
    let k = LINEAR_SHIFT as usize + (j >> PER_DOUBLING_SHIFT);
    let step = (j & ((1 << PER_DOUBLING_SHIFT) - 1)) + 1;
    (1 << k) + (step << (k - PER_DOUBLING_SHIFT as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_gets_the_smallest_class_that_holds_it() {
        assert_eq!(CLASSES, 88);
        assert_eq!(size(CLASSES - 1), MAX_CLASS);
        let mut prev = 0;
        for i in 0..CLASSES {
            let s = size(i);
            assert!(s > prev && s.is_multiple_of(16), "class {i}: {s}");
            assert_eq!(index(s), i, "class {i} holds its own size");
            assert_eq!(index(prev + 1), i, "just above class {}", i.wrapping_sub(1));
            prev = s;
        }
        assert_eq!(index(0), 0);
        assert_eq!(
            (index(16), index(17), index(256), index(257)),
            (0, 1, 15, 16)
        );
        assert_eq!((size(16), size(23), size(24)), (288, 512, 576));
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
