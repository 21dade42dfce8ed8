//! Slab and magazine sizing: `spl_sks_size()`, `spl_obj_size()`,
//! `spl_slab_size()` and `spl_magazine_size()` of the seed.
//!
//! # The slab size rule
//!
//! The seed sizes a slab to hold `obj_per_slab` objects
//! (`tgt_size = obj_per_slab * obj_size_full + sks_size`), or as many as fit in
//! `max_size` MB when that is too big, and fails with `-ENOSPC` when not even
//! one fits. It hands that exact byte count to `vmalloc`, which rounds up to
//! pages internally and wastes the tail. slabscope maps slabs itself with
//! `mmap`, which deals in whole pages, so it keeps the tail:
//!
//! ```text
//! slab_size = round_up(tgt_size, page_size)
//! slab_objs = (slab_size - sks_size) / obj_size_full     (>= the seed's tgt_objs)
//! ```
//!
//! Since `max_size` is a whole number of MB (a multiple of the page size), the
//! rounded slab never exceeds it. The leftover, `slab_size - sks_size -
//! slab_objs * obj_size_full`, is always smaller than one object.
//!
//! One departure: objects of [`SPREAD_MIN`] bytes and more are spaced a
//! multiple of 64 bytes apart ([`spread`]).
//!
//! Sizes are computed in 64 bits (the seed uses `uint32_t` and would wrap for
//! objects near 4 GiB; here those are rejected as too large).

/// SPL's default object alignment (`SPL_KMEM_CACHE_ALIGN`).
pub const SPL_KMEM_CACHE_ALIGN: usize = 8;

/// `P2ROUNDUP(x, align)` for a power-of-two `align`.
pub const fn p2roundup(x: u64, align: u64) -> u64 {
    (x + align - 1) & !(align - 1)
}

/// The byte layout of one cache's slabs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Geometry {
    /// Object size as requested.
    pub obj_size: u64,
    /// Object alignment (power of two, 8..=page size).
    pub obj_align: u64,
    /// `spl_sks_size()`: slab header rounded up to the alignment.
    pub sks_size: u64,
    /// Offset of object 0 from the slab: `sks_size` plus the room for its
    /// header (the object header rounded up to the alignment). Every
    /// object's header is the word right before it, so a free usually finds
    /// it on the cache line the object starts on (the seed puts it after
    /// the object, a cache line — for page-sized objects a page — away).
    pub first_obj: u64,
    /// `spl_obj_size()`: bytes per object, header included.
    pub obj_size_full: u64,
    /// Bytes per slab, a whole number of pages.
    pub slab_size: u64,
    /// Objects per slab.
    pub slab_objs: u64,
}

impl Geometry {
    /// Bytes before each object for its header: the header rounded up to the
    /// alignment.
    pub fn hdr_room(&self) -> u64 {
        self.first_obj - self.sks_size
    }

    /// Whether objects have no header before them (`crate::slab`'s
    /// headerless slabs: one page each, found from an object's address).
    pub fn headerless(&self) -> bool {
        self.first_obj == self.sks_size && self.slab_size != 0
    }

    /// Bytes of a slab after its header and its objects: the room
    /// [`Geometry::color`] moves the objects within.
    pub fn slack(&self) -> u64 {
        self.slab_size - self.sks_size - self.slab_objs * self.obj_size_full
    }

    /// How far the objects of the slab at `slab_base` sit past
    /// `first_obj`: slab coloring (Bonwick, "The Slab Allocator", 1994,
    /// section 4.1; not in the seed). A multiple of a cache line (of the
    /// alignment, if larger), at most [`Geometry::slack`], chosen by a
    /// hash of the slab's page number, so it needs no state and every
    /// color is as likely.
    ///
    /// Slabs are page aligned and a whole number of pages long, so without
    /// it every slab puts its objects at the same page offsets: a 4 KiB
    /// cache's 8 objects a slab at 8 offsets, and the headers of 1000 such
    /// objects in 8 of an L1 cache's 64 sets, 125 lines a set for 8 to 12
    /// ways. Churn over them missed L1 on nearly every header, and its
    /// speed hung on what else of the process fell into those 8 sets: the
    /// 4 KiB, 1000-live LIFO churn read 1.86, 3.32 or 23 ns/op from one
    /// bench process to the next, and 4.9 through the C harness, where
    /// colored slabs read 2.7 (bench/ANALYSIS.md). Objects of 64 bytes leave
    /// no slack and keep color 0.
    /// Headerless slabs keep color 0: a free finds an object's place
    /// in its slab from its address alone.
    pub fn color(&self, slab_base: u64) -> u64 {
        if self.headerless() {
            return 0;
        }
        let step = self.obj_align.max(64);
        let colors = self.slack() / step + 1;
        if colors == 1 {
            return 0;
        }
        let page = slab_base >> 12;
        let hash = page.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        (hash % colors) * step
    }
}

/// Objects of at least this many bytes get a stride that is a multiple of a
/// cache line (see [`spread`]); below it the padding would cost more than
/// 2.7 %.
pub const SPREAD_MIN: u64 = 2048;

/// The stride of objects of `full` bytes (object and header): rounded up to
/// a multiple of 64 from [`SPREAD_MIN`] on, and never a multiple of 4096
/// (one more line, or one more `align`, then) unless the objects are page
/// aligned anyway (`align` >= 4096). Not in the seed. A 4 KiB object
/// with its 8-byte header is 4104 bytes, 8 more than a page, exactly the
/// distance between two magazine slots: walking a magazine and its objects
/// together, every slot address then matches the object touched just before
/// in its low 12 bits, and the CPU's store-to-load check takes each load for
/// one that depends on that store ("4K aliasing"). Measured with 1000 live
/// objects, LIFO: 4096-byte objects churned at twice the cost of 4000-byte
/// ones, 4088-byte objects (a stride of exactly one page) at 3.7 times. With
/// a stride of 4160 the two drift apart by 56 bytes an operation.
pub const fn spread(full: u64, align: u64) -> u64 {
    if full < SPREAD_MIN {
        return full;
    }
    let s = p2roundup(full, 64);
    if s.is_multiple_of(4096) && align < 4096 {
        s + if align > 64 { align } else { 64 }
    } else {
        s
    }
}

/// The seed's `spl_slab_size()`: `(objs, size)` before page rounding, or
/// `None` for `-ENOSPC`.
pub fn seed_slab_size(
    sks_size: u64,
    obj_size_full: u64,
    obj_per_slab: u64,
    max_size_mb: u64,
) -> Option<(u64, u64)> {
    let max_size = max_size_mb * 1024 * 1024;
    let mut tgt_size = obj_per_slab * obj_size_full + sks_size;
    let tgt_objs = if tgt_size <= max_size {
        (tgt_size - sks_size) / obj_size_full
    } else {
        let objs = max_size.saturating_sub(sks_size) / obj_size_full;
        tgt_size = objs * obj_size_full + sks_size;
        objs
    };
    (tgt_objs > 0).then_some((tgt_objs, tgt_size))
}

/// The whole slab geometry for objects of `obj_size` bytes at `align`, with
/// headers of `slab_hdr` and `obj_hdr` bytes. `None` when an object does not
/// fit in a slab of `max_size_mb` MB.
pub fn geometry(
    obj_size: u64,
    align: u64,
    slab_hdr: u64,
    obj_hdr: u64,
    obj_per_slab: u64,
    max_size_mb: u64,
    page: u64,
) -> Option<Geometry> {
    let sks_size = p2roundup(slab_hdr, align);
    let hdr_room = p2roundup(obj_hdr, align);
    let obj_size_full = spread(p2roundup(obj_size, align) + hdr_room, align);
    let (seed_objs, seed_size) =
        seed_slab_size(sks_size, obj_size_full, obj_per_slab, max_size_mb)?;
    let slab_size = p2roundup(seed_size, page);
    let slab_objs = (slab_size - sks_size) / obj_size_full;
    debug_assert!(slab_objs >= seed_objs);
    Some(Geometry {
        obj_size,
        obj_align: align,
        sks_size,
        first_obj: sks_size + hdr_room,
        obj_size_full,
        slab_size,
        slab_objs,
    })
}

/// The geometry of a headerless cache (see `crate::slab`): slabs of
/// exactly `slab` bytes, one page, so that an object's slab is its page,
/// holding as many objects as fit after the slab header (`slab_hdr`
/// bytes). `None` where that layout does not hold: pages of another size,
/// objects not 16-aligned, smaller than 16 bytes (the free mark is the
/// second word) or larger than an eighth of the slab.
pub fn headerless_geometry(
    obj_size: u64,
    align: u64,
    slab_hdr: u64,
    slab: u64,
    page: u64,
) -> Option<Geometry> {
    if page != slab
        || align != 16
        || obj_size < 16
        || !obj_size.is_multiple_of(16)
        || obj_size > slab / 8
    {
        return None;
    }
    let sks_size = p2roundup(slab_hdr, align);
    Some(Geometry {
        obj_size,
        obj_align: align,
        sks_size,
        first_obj: sks_size,
        obj_size_full: obj_size,
        slab_size: slab,
        slab_objs: (slab - sks_size) / obj_size,
    })
}

/// The seed's `spl_magazine_size()`: objects per magazine. A non-zero
/// `tunable` is clamped to 2..=256; otherwise the size falls with the object
/// size (the thresholds are the seed's, in units of the page size).
/// The largest magazine (SPL's `spl_kmem_cache_magazine_size` range).
pub const MAX_MAGAZINE: u32 = 256;

pub fn magazine_size(obj_size_full: u64, page: u64, tunable: u32) -> u32 {
    if tunable > 0 {
        return tunable.clamp(2, MAX_MAGAZINE);
    }
    if obj_size_full > page * 256 {
        4
    } else if obj_size_full > page * 32 {
        16
    } else if obj_size_full > page {
        64
    } else if obj_size_full > page / 4 {
        128
    } else {
        256
    }
}

/// Objects per slab for a cache whose slabs should hold about
/// `slab_bytes` bytes: `obj_per_slab`, lowered so that `objs *
/// obj_size_full` stays within `slab_bytes`, but at least one. Not in the
/// seed: the `kmem_alloc` classes use it (see `crate::kmem`), since a slab
/// of 8 objects of 128 KiB is 1 MiB mapped, and building it writes a page
/// of every object, for a program that may allocate one.
pub fn objs_for_slab_bytes(obj_size_full: u64, slab_bytes: u64, obj_per_slab: u64) -> u64 {
    (slab_bytes / obj_size_full.max(1)).clamp(1, obj_per_slab.max(1))
}

/// A magazine of `size` objects (from [`magazine_size`]) cut to hold at
/// most `max_bytes` bytes of `obj_size_full`-byte objects, but at least 2.
/// Not in the seed, whose 64 objects a magazine for anything from 4 KiB to
/// 128 KiB let a 64 KiB class keep 4 MiB per CPU (see `crate::kmem`).
pub fn magazine_size_capped(size: u32, obj_size_full: u64, max_bytes: u64) -> u32 {
    let by_bytes = (max_bytes / obj_size_full.max(1)).min(u64::from(MAX_MAGAZINE)) as u32;
    size.min(by_bytes.max(2))
}

/// Objects moved per refill or flush: `(size + 1) / 2`.
pub const fn magazine_refill(size: u32) -> u32 {
    size.div_ceil(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    #[test]
    fn slab_rounding_rule_holds_over_a_range_of_sizes() {
        for align in [8u64, 16, 64, 512, 4096] {
            let mut size = 1u64;
            while size <= 2 * 1024 * 1024 {
                let g = geometry(size, align, 56, 32, 8, 32, PAGE).expect("fits");
                let (seed_objs, seed_size) =
                    seed_slab_size(g.sks_size, g.obj_size_full, 8, 32).unwrap();
                assert!(g.slab_size.is_multiple_of(PAGE), "size {size}");
                assert!(g.slab_size >= seed_size && g.slab_size < seed_size + PAGE);
                assert!(g.slab_objs >= seed_objs, "size {size} align {align}");
                let used = g.sks_size + g.slab_objs * g.obj_size_full;
                assert!(used <= g.slab_size);
                assert!(
                    g.slab_size - used < g.obj_size_full,
                    "remainder holds another object"
                );
                assert!(g.sks_size.is_multiple_of(align) && g.obj_size_full.is_multiple_of(align));
                assert!(g.slab_size <= 32 << 20);
                size = size * 5 / 4 + 1;
            }
        }
    }

    #[test]
    fn large_strides_are_lines_and_never_pages() {
        assert_eq!(spread(72, 8), 72);
        assert_eq!(spread(2056, 8), 2112);
        assert_eq!(spread(4104, 8), 4160);
        assert_eq!(spread(4096, 8), 4160, "a one-page stride moves by a line");
        assert_eq!(spread(8192, 512), 8704, "by one alignment unit");
        assert_eq!(spread(8192, 4096), 8192, "page-aligned objects stay so");
        for full in (SPREAD_MIN..3 << 20).step_by(8) {
            let s = spread(full, 8);
            assert!(
                s >= full && s - full < 128 && s.is_multiple_of(64),
                "{full}"
            );
            assert!(!s.is_multiple_of(4096), "{full}");
        }
    }

    #[test]
    fn seed_formula_matches_hand_computed_cases() {
        // 1104-byte zio_t: sks 56, full 1104 + 32 = 1136.
        assert_eq!(seed_slab_size(56, 1136, 8, 32), Some((8, 8 * 1136 + 56)));
        let g = geometry(1104, 8, 56, 32, 8, 32, PAGE).unwrap();
        assert_eq!(g.slab_size, 12288);
        assert_eq!(g.slab_objs, (12288 - 56) / 1136);
        // Small objects fill a page.
        let g = geometry(8, 8, 56, 32, 8, 32, PAGE).unwrap();
        assert_eq!(g.slab_size, PAGE);
        assert_eq!(g.slab_objs, (4096 - 56) / 40);
    }

    #[test]
    fn large_objects_are_capped_by_max_size_then_enospc() {
        // 5 MB objects: 8 of them exceed 32 MB; 6 fit.
        let g = geometry(5 << 20, 8, 56, 32, 8, 32, PAGE).unwrap();
        assert_eq!(g.slab_objs, 6);
        assert!(g.slab_size <= 32 << 20);
        assert_eq!(geometry(33 << 20, 8, 56, 32, 8, 32, PAGE), None);
        assert_eq!(
            geometry(32 << 20, 8, 56, 32, 8, 32, PAGE),
            None,
            "headers do not fit"
        );
    }

    #[test]
    fn byte_caps_cut_large_objects_only() {
        assert_eq!(objs_for_slab_bytes(72, 64 << 10, 8), 8);
        assert_eq!(objs_for_slab_bytes(4160, 64 << 10, 8), 8);
        assert_eq!(objs_for_slab_bytes(16448, 64 << 10, 8), 3);
        assert_eq!(objs_for_slab_bytes(65600, 64 << 10, 8), 1);
        assert_eq!(objs_for_slab_bytes(131136, 64 << 10, 8), 1, "at least one");
        assert_eq!(
            objs_for_slab_bytes(72, 64 << 10, 1),
            1,
            "never above the tunable"
        );
        let g = geometry(131072, 16, 64, 8, 1, 32, PAGE).unwrap();
        assert_eq!((g.slab_objs, g.slab_size), (1, 33 * PAGE));
        assert_eq!(magazine_size_capped(256, 72, 128 << 10), 256);
        assert_eq!(magazine_size_capped(128, 1032, 128 << 10), 127);
        assert_eq!(magazine_size_capped(64, 4160, 128 << 10), 31);
        assert_eq!(magazine_size_capped(64, 16448, 128 << 10), 7);
        assert_eq!(magazine_size_capped(16, 131136, 128 << 10), 2, "at least 2");
    }

    #[test]
    fn magazine_sizes_follow_the_seed() {
        assert_eq!(magazine_size(40, PAGE, 0), 256);
        assert_eq!(magazine_size(PAGE / 4, PAGE, 0), 256);
        assert_eq!(magazine_size(PAGE / 4 + 8, PAGE, 0), 128);
        assert_eq!(magazine_size(PAGE + 8, PAGE, 0), 64);
        assert_eq!(magazine_size(PAGE * 32 + 8, PAGE, 0), 16);
        assert_eq!(magazine_size(PAGE * 256 + 8, PAGE, 0), 4);
        assert_eq!(magazine_size(40, PAGE, 1), 2);
        assert_eq!(magazine_size(40, PAGE, 999), 256);
        assert_eq!(magazine_size(40, PAGE, 7), 7);
        assert_eq!(magazine_refill(7), 4);
        assert_eq!(magazine_refill(256), 128);
        assert_eq!(magazine_refill(2), 1);
    }
}
