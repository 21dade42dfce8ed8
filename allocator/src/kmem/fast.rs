//! The hit paths of [`super::alloc`] and [`super::free`]: one static
//! descriptor per size class, found from the size by [`ladder::index`]
//! (an add and a shift up to 264 bytes) and from a freed block by its
//! header's state, which for a class object is the class's reserved tag
//! (see `slab::reserved_tag`): no table pointer, `Vec` bound, `Arc` or
//! cache struct between the call and the magazine.
//!
//! A free takes this path only when everything that makes it safe holds,
//! each a compare: the pointer is 16-aligned (so its header does not
//! straddle a page), the header's page is slabscope's (the range bitmap),
//! the header's state is a class's tag, the slab the header
//! names is slabscope's memory, carries the slab magic and names that
//! class's cache. Anything else — a double free (the state says free), a
//! foreign or interior pointer, an object of a `kmem_cache_create` cache
//! (its tag is never a reserved one), an emergency object — takes the
//! general path of [`super::owner`], which aborts with the same messages
//! as before.
//!
//! Before the classes are built every descriptor's `base` is 0, which
//! sends both paths to the general ones (which build the classes); a class
//! whose magazines use the lock instead of restartable sequences keeps
//! `base` 0 for good.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};

use super::ladder;
use crate::cache::Cache;
use crate::flags::SKS_MAGIC;
use crate::magazine::rseq;
use crate::os::ranges;
use crate::slab;

/// Descriptor slots: a power of two above [`ladder::CLASSES`], so a
/// class number from a header indexes them with a mask, not a bound check.
const SLOTS: usize = 128;
const _: () = assert!(ladder::CLASSES <= SLOTS);
/// Reserved tags of the classes: [`slab::reserved_tag`] of 0 to 127.
const TAG_MASK: u16 = slab::RESERVED_TAG | 0x7f00 | 1;
const TAG_BITS: u16 = slab::RESERVED_TAG | 1;
const _: () = assert!(slab::reserved_tag(SLOTS - 1) & TAG_MASK == TAG_BITS);

/// What the hit paths of one class read, on half a cache line.
#[repr(C, align(32))]
struct Class {
    /// The class cache's `fp.base` (its rseq magazines' table) once the
    /// classes are built and when its inline paths are on; else 0.
    base: AtomicUsize,
    /// The cache's `fp.rseq_off`.
    rseq_off: AtomicIsize,
    /// The cache's id (its slab headers name it); 0 for no class.
    id: AtomicU64,
}

static CLASSES: [Class; SLOTS] = [const {
    Class {
        base: AtomicUsize::new(0),
        rseq_off: AtomicIsize::new(0),
        id: AtomicU64::new(0),
    }
}; SLOTS];

/// Fills the descriptors from the built classes (`caches[i]` is class
/// `i`, built with reserved tag `i`). Called once, after the class table
/// is published: a thread that sees a descriptor's `base` sees the table.
pub(super) fn publish(caches: &[Cache]) {
    for (i, c) in caches.iter().enumerate() {
        let fp = &c.inner.fp;
        debug_assert_eq!(fp.tag, slab::reserved_tag(i));
        let d = &CLASSES[i];
        d.id.store(c.id(), Ordering::Relaxed);
        d.rseq_off.store(fp.rseq_off, Ordering::Relaxed);
        d.base.store(fp.base, Ordering::Release);
    }
}

/// One object of class `i` from the current CPU's magazine; `None` when
/// the inline path is off or the magazine is empty (or busy, or the
/// sequence was aborted): the caller then takes the class's general path.
#[inline(always)]
pub(super) fn pop(i: usize) -> Option<NonNull<u8>> {
    debug_assert!(i < ladder::CLASSES);
    let d = &CLASSES[i & (SLOTS - 1)];
    let base = d.base.load(Ordering::Acquire);
    if base == 0 {
        return None;
    }
    // SAFETY: a non-zero base is a live class cache's magazine table (the
    // classes are never destroyed) and rseq_off came with it from the same
    // cache's fast-path fields (publish).
    let p = NonNull::new(unsafe { rseq::pop(base, d.rseq_off.load(Ordering::Relaxed)) })?;
    // SAFETY: p was just popped from class i's magazine: a free slab
    // object of that cache, now handed out with the cache's tag.
    unsafe { slab::mark_allocated(p.as_ptr(), slab::reserved_tag(i)) };
    Some(p)
}

/// The class of `ptr` when it is an allocated object of a built class
/// (see the module docs for the checks); `None`, with nothing read outside
/// slabscope's memory, otherwise.
///
/// # Safety
/// `ptr` is a value the caller was handed as a pointer (a pointer that is
/// not ours is detected, not dereferenced).
#[inline(always)]
unsafe fn class_of(ptr: *mut u8) -> Option<(usize, &'static Class)> {
    let a = ptr as usize;
    // Class objects are 16-aligned, so their 8-byte header never straddles
    // a page: the header's page is the one to check, whether or not the
    // block starts a page.
    let h = a.wrapping_sub(8);
    if a & 15 != 0 {
        return None;
    }
    let w = ranges::word(h);
    if w & ranges::bit(h) == 0 {
        return None;
    }
    // SAFETY: the header word lies on a page slabscope mapped (checked).
    let state = unsafe { slab::state_bits_of(ptr) };
    if state & TAG_MASK != TAG_BITS {
        return None;
    }
    let i = slab::reserved_tag_index(state) & (SLOTS - 1);
    let d = &CLASSES[i];
    // SAFETY: as above.
    let s = unsafe { slab::slab_addr_of(ptr) };
    // A slab within the 64 pages around the block (all but the largest
    // classes' slabs) is tested in the word already loaded.
    let mapped = if ranges::same_word(h, s) {
        w & ranges::bit(s) != 0
    } else {
        ranges::contains(s)
    };
    if !mapped {
        return None;
    }
    // SAFETY: the slab header's page is slabscope's (checked); a slab
    // header never straddles a page (slabs start page-aligned).
    let (magic, cache) = unsafe { slab::slab_owner(s) };
    if magic != SKS_MAGIC || cache != d.id.load(Ordering::Relaxed) {
        return None;
    }
    Some((i, d))
}

/// The size class of `ptr` when it is an allocated object of a class
/// (`realloc` and `malloc_usable_size` of the common case); `None`
/// otherwise, for the general path.
///
/// # Safety
/// As [`class_of`].
#[inline(always)]
pub(super) unsafe fn class(ptr: *mut u8) -> Option<usize> {
    // SAFETY: forwarded caller guarantee.
    unsafe { class_of(ptr) }.map(|(i, _)| i)
}

/// Frees `ptr` when it is an allocated object of a class whose inline path
/// is on; false, with nothing read outside slabscope's memory and nothing
/// written, otherwise.
///
/// # Safety
/// As [`class_of`]; when `ptr` is a live block of ours it is not used
/// afterwards.
#[inline(always)]
pub(super) unsafe fn free(ptr: *mut u8) -> bool {
    // SAFETY: forwarded caller guarantee.
    let Some((i, d)) = (unsafe { class_of(ptr) }) else {
        return false;
    };
    let base = d.base.load(Ordering::Acquire);
    if base == 0 {
        return false;
    }
    // SAFETY: an allocated object of this class (its header's tag, its
    // slab's magic and cache), freed by its holder (caller).
    unsafe { slab::mark_free(ptr) };
    // SAFETY: base and rseq_off as in `pop`; the object was handed out,
    // so no magazine holds it.
    if !unsafe { rseq::push(base, d.rseq_off.load(Ordering::Relaxed), ptr) } {
        // SAFETY: as above, marked free and in no magazine.
        unsafe { push_refused(i, ptr) };
    }
    true
}

/// The rest of a free whose push was refused (a full magazine to flush, an
/// aborted sequence, a magazine locked by a reap): the cache's own
/// remedies.
///
/// # Safety
/// `ptr` is an object of class `i`, whose descriptor is published, marked
/// free and in no magazine.
#[cold]
#[inline(never)]
unsafe fn push_refused(i: usize, ptr: *mut u8) {
    let classes = super::classes().expect("a descriptor is published after the class table");
    let c = &classes[i];
    // SAFETY: ptr is in a slab, so not null.
    let obj = unsafe { NonNull::new_unchecked(ptr) };
    // SAFETY: forwarded caller guarantee.
    unsafe { c.inner.push_refused(obj) }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::CacheBuilder;

    /// The inline free takes a live class object and nothing else: not the
    /// same object again, not a pointer inside one (even under a forged
    /// header naming a real slab), not another cache's object, not
    /// memory slabscope never mapped, not a large block.
    #[test]
    fn the_inline_free_takes_class_objects_only() {
        let p = super::super::alloc(64).expect("64 bytes");
        let i = ladder::index(64);
        if CLASSES[i].base.load(Ordering::Acquire) == 0 {
            eprintln!(
                "SKIPPED: the_inline_free_takes_class_objects_only: the classes' magazines do \
                 not use restartable sequences here, so the inline paths are off; nothing \
                 was checked"
            );
            // SAFETY: p is ours, unused from now on.
            unsafe { super::super::free(p.as_ptr()) };
            return;
        }
        let p = p.as_ptr();
        // SAFETY: p is a live class object.
        assert_eq!(unsafe { slab::state_bits_of(p) }, slab::reserved_tag(i));
        // SAFETY: p is a live class object, not used afterwards.
        assert!(unsafe { free(p) }, "a live class object");
        // SAFETY: p's header is still slabscope's memory.
        assert_eq!(unsafe { slab::state_bits_of(p) }, slab::OBJ_FREE);
        // SAFETY: detected, not freed (the header says free).
        assert!(!unsafe { free(p) }, "a double free is the general path's");

        let q = super::super::alloc(200).expect("200 bytes").as_ptr();
        let j = ladder::index(200);
        // SAFETY: q is live.
        let slab = unsafe { slab::slab_addr_of(q) };
        // Forge, 64 bytes into q, the header of an object of another class
        // naming q's real slab: the slab's cache is not that class's.
        // (A forged header naming q's own class and slab passes, on this
        // path as on the general one: both check the header, not where
        // the pointer lies in the slab.)
        let inner = q.wrapping_add(64);
        let word = slab as u64 | u64::from(slab::reserved_tag(j + 1)) << 48;
        // SAFETY: the 8 bytes before inner lie inside q's 200.
        unsafe { inner.wrapping_sub(8).cast::<u64>().write(word) };
        // SAFETY: detected, not freed.
        assert!(!unsafe { free(inner) }, "a forged header of another class");
        // SAFETY: q is live, not used afterwards.
        assert!(unsafe { free(q) });

        let c = CacheBuilder::new("fast_free_other_cache", 64)
            .build()
            .unwrap();
        let o = c.alloc(crate::flags::KM_SLEEP).unwrap();
        // SAFETY: o is live; the inline path only reads its header.
        assert!(!unsafe { free(o.as_ptr()) }, "another cache's object");
        // SAFETY: o came from c.
        unsafe { c.free(o) };

        let mut local = [0u64; 8];
        let on_stack = local.as_mut_ptr().wrapping_add(2).cast::<u8>();
        // SAFETY: not slabscope's: detected before anything is read.
        assert!(!unsafe { free(on_stack) }, "memory slabscope never mapped");

        let big = super::super::alloc(ladder::MAX_CLASS + 1).unwrap().as_ptr();
        // SAFETY: a live large block; its header's state is not a tag.
        assert!(!unsafe { free(big) }, "a large block");
        // SAFETY: big is ours, unused from now on.
        unsafe { super::super::free(big) };
    }
}
