//! The hit paths of [`super::alloc`] and [`super::free`]: one static
//! descriptor per size class, found from the size by [`ladder::index`]
//! (an add and a shift up to 264 bytes) and from a freed block by its
//! header's state, which for a class object is the class's reserved tag
//! (see `slab::reserved_tag`): no table pointer, `Vec` bound, `Arc` or
//! cache struct between the call and the magazine.
//!
//! An object of a headerless class (16 to 64 bytes, see
//! `crate::slab::headerless`) has no header: its address says its class
//! (each headerless class carves its slabs from a window of address space
//! of its own, `os::window`), the page map says its page is a live
//! headerless slab of that class, its offset in the page says it starts
//! an object there (a bit of a table of each class's object starts), and
//! its free mark says it is not free already. Where a class's window is
//! full or could not be reserved, its slabs lie elsewhere and the page
//! map's byte gives the class. Every other block has a header, and is
//! taken as follows.
//!
//! A free takes this path only when everything that makes it safe holds,
//! each a compare: the pointer is 16-aligned (so its header does not
//! straddle a page), the header's page is slabscope's (the page map,
//! `os::ranges`), the header's state is a class's tag, and the slab the
//! header names starts on a page that the page map says starts a live
//! slab of that class. The last is what the slab header's magic and
//! cache id said before, without a load from the slab header, a line of
//! its own that is rarely cached when a program frees objects of many
//! slabs (larson spent 42 % of `free`'s samples waiting for it).
//! Anything else — a double free (the state says free), a
//! foreign or interior pointer, an object of a `kmem_cache_create` cache
//! (its tag is never a reserved one), an emergency object — takes the
//! general path of [`super::owner`](mod@super::owner), which aborts with
//! the same messages as before.
//!
//! An object of a class with headers also has a *home*: the pop writes
//! the CPU it ran on into the tag's free bits (`slab::homed_tag`), and a
//! free on another CPU sends the object to that CPU's inbox instead of
//! its own magazine (`crate::inbox`): a compare on the hit path, and a
//! call out of line when it fails. Headerless objects have no tag to
//! hold a home, and stay where they are freed.
//!
//! Before the classes are built every descriptor's `base` is 0, which
//! sends both paths to the general ones (which build the classes); a class
//! whose magazines use the lock instead of restartable sequences keeps
//! `base` 0 for good.
//!
//! # What a hit waits for
//!
//! With one block live, a `malloc` and `free` pair is bound by a chain of
//! loads more than by its instructions: the free finds its magazine from
//! the block's class (the header's tag, or for a headerless block its
//! window), the class's descriptor (`base`), the current CPU's entry in
//! that table and the magazine's count, which the next `malloc` reads
//! again, and the CPU cannot hand that load the count just stored until
//! it knows the store's address. The rseq area's offset is the same
//! for every class, so it is a static of its own ([`RSEQ_OFF`]): the CPU
//! number's load does not wait for the descriptor's. The checks' loads
//! are off that chain: the branches on them are predicted, so they cost
//! instructions and lines, not waiting.
//!
//! The headerless classes once took one arm per class, entered by a jump
//! through a table on the page map's byte, so that with one class in a
//! loop the predicted jump put the descriptor at a constant address and
//! the chain went away (64 B with 1 live through the C harness: 2.6
//! ns/op, against 5.3 with the class as a value). But a program that
//! frees blocks of several small classes in turn mispredicts that jump
//! about as often as the class changes: with random sizes of 16 to 64
//! bytes and 1000 blocks live, a `free` and `malloc` pair took 15.9 ns
//! through the arms and 7.1 with the class as a value (mimalloc 4.1), and
//! larson with one thread and those sizes 0.193 s against 0.110
//! (tcmalloc 0.089). So the class is a value on every path
//! (bench/ANALYSIS.md, "Random sizes through `free`"), and for a
//! headerless block that value is arithmetic on the pointer, its window:
//! the page map's two loads are still made, but only a predicted branch
//! waits for them, not the push's address (the 1-live row: 5.2 ns/op
//! with the page map's byte as the class, 3.2 with the window;
//! bench/ANALYSIS.md, "Windows for the small classes").

use std::ptr::NonNull;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use super::ladder;
use crate::cache::Cache;
use crate::magazine::rseq;
use crate::os::{ranges, window};
use crate::slab;

/// Descriptor slots: a power of two above [`ladder::CLASSES`], so a
/// class number from a header indexes them with a mask, not a bound check.
const SLOTS: usize = 128;
const _: () = assert!(ladder::CLASSES <= SLOTS);
/// Reserved tags of the classes: [`slab::reserved_tag`] of 0 to 127.
/// The home in bits 8 to 14 ([`slab::homed_tag`]) is not part of it.
const TAG_MASK: u16 = slab::RESERVED_TAG | 1;
const TAG_BITS: u16 = slab::RESERVED_TAG | 1;
const _: () = assert!(slab::reserved_tag(SLOTS - 1) & TAG_MASK == TAG_BITS);

/// Where object 0 of a headerless slab starts: its slab header rounded up
/// to 16 (`build_locked` checks each headerless class's geometry).
pub(super) const HL_FIRST: usize = 64;

/// Whether `a`, in a page that is a headerless slab of class `I` (the
/// page of `a - 8`, so `a` may be the next page's first byte, whose
/// offset 0 is below [`HL_FIRST`]), is where one of its objects starts:
/// the definition [`HL_STARTS`] is built from.
const fn hl_start<const I: usize>(a: usize) -> bool {
    let size = (I + 1) * 16;
    // The offset, from object 0, of the slab's last object.
    let last = (slab::HL_SLAB - HL_FIRST) / size * size - size;
    let d = (a & (slab::HL_SLAB - 1)).wrapping_sub(HL_FIRST);
    d <= last && d.is_multiple_of(size)
}

/// [`hl_start`] of class `i`, whatever `i` is (false past the headerless
/// classes): a bit of [`HL_STARTS`], not a branch on the class.
#[inline(always)]
pub(super) fn hl_starts(i: usize, a: usize) -> bool {
    let d = (a & (slab::HL_SLAB - 1)).wrapping_sub(HL_FIRST);
    let q = d / 16;
    i < ladder::HEADERLESS
        && d < slab::HL_SLAB - HL_FIRST
        && HL_STARTS[i & 3][q / 64] >> (q % 64) & 1 == 1
}

// One row of `HL_STARTS` per headerless class, one bit per 16-byte place
// of a page from `HL_FIRST`.
const _: () = assert!(ladder::HEADERLESS <= 4 && (slab::HL_SLAB - HL_FIRST) / 16 <= 4 * 64);

/// Where the objects of each headerless class start: bit `q` of row `i`
/// says whether an object of class `i` starts `HL_FIRST + 16 q` bytes
/// into its page ([`hl_start`], evaluated at build time).
static HL_STARTS: [[u64; 4]; 4] = {
    const fn starts(i: usize, a: usize) -> bool {
        match i {
            0 => hl_start::<0>(a),
            1 => hl_start::<1>(a),
            2 => hl_start::<2>(a),
            _ => hl_start::<3>(a),
        }
    }
    let mut t = [[0u64; 4]; 4];
    let mut i = 0;
    while i < ladder::HEADERLESS {
        let mut q = 0;
        while HL_FIRST + q * 16 < slab::HL_SLAB {
            if starts(i, HL_FIRST + q * 16) {
                t[i][q / 64] |= 1 << (q % 64);
            }
            q += 1;
        }
        i += 1;
    }
    t
};

/// What the hit paths of one class read.
#[repr(C)]
struct Class {
    /// The class cache's rseq magazines' table
    /// (`CacheInner::inline_magazines`) once the class is built, when its
    /// magazines use restartable sequences; else 0.
    base: AtomicUsize,
}

static CLASSES: [Class; SLOTS] = [const {
    Class {
        base: AtomicUsize::new(0),
    }
}; SLOTS];

/// The rseq area's offset from the thread pointer, the one of every class
/// whose inline paths are on (one offset per process:
/// `rseq::available`). Kept apart from the descriptors so that a free
/// does not wait for its class's descriptor to load the CPU number: the
/// CPU number's load and the descriptor's run side by side, and the
/// magazine table's entry waits for one load, not two in a row.
static RSEQ_OFF: AtomicIsize = AtomicIsize::new(0);

/// Fills class `i`'s descriptor from its cache `c` (built with reserved
/// tag `i`), once `c` is published in the class table: a thread that sees
/// the descriptor's `base` sees the cache. Every class with inline paths
/// uses the same rseq area offset (one per process: `rseq::available`).
pub(super) fn publish(i: usize, c: &Cache) {
    debug_assert_eq!(c.inner.fp.tag, slab::reserved_tag(i));
    let Some((base, rseq_off)) = c.inner.inline_magazines() else {
        return;
    };
    let off = RSEQ_OFF.load(Ordering::Relaxed);
    assert!(
        off == 0 || off == rseq_off,
        "slabscope: the size classes' restartable sequences use more than one rseq area offset"
    );
    RSEQ_OFF.store(rseq_off, Ordering::Relaxed);
    // Release: a thread that sees the base sees RSEQ_OFF.
    CLASSES[i].base.store(base, Ordering::Release);
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
    let off = RSEQ_OFF.load(Ordering::Relaxed);
    // SAFETY: a non-zero base is a live class cache's magazine table (the
    // classes are never destroyed), published after RSEQ_OFF, that cache's
    // rseq_off (publish).
    let p = NonNull::new(unsafe { rseq::pop(base, off) })?;
    if i < ladder::HEADERLESS {
        // SAFETY: p was just popped from headerless class i's magazine: a
        // free object of a headerless slab, now handed out.
        unsafe { slab::hl_mark_allocated(p.as_ptr()) };
    } else {
        // The CPU it was handed out on is its home (see `crate::inbox`).
        let tag = slab::homed_tag(slab::reserved_tag(i), rseq::cpu_id(off));
        // SAFETY: p was just popped from class i's magazine: a free slab
        // object of that cache, now handed out with the cache's tag.
        unsafe { slab::mark_allocated(p.as_ptr(), tag) };
    }
    Some(p)
}

/// Gives `p`, an object class `i`'s general path just handed out, the
/// home its inline pop would have: the CPU it runs on (see
/// `crate::inbox`). An emergency object, or a class without homes, is
/// left as it is.
///
/// # Safety
/// `p` was just handed out by class `i`'s cache.
pub(super) unsafe fn give_home(i: usize, p: NonNull<u8>, c: &Cache) {
    if i < ladder::HEADERLESS || c.inner.inbox.homes() == 0 {
        return;
    }
    let tag = slab::reserved_tag(i);
    // SAFETY: a block of the class: its header is readable (caller).
    if unsafe { slab::state_bits_of(p.as_ptr()) } == tag {
        let cpu = rseq::cpu_id(RSEQ_OFF.load(Ordering::Relaxed));
        // SAFETY: a slab object just handed out (its state says so).
        unsafe { slab::mark_allocated(p.as_ptr(), slab::homed_tag(tag, cpu)) };
    }
}

/// The page map's byte for the word before `ptr`, with the leaf that
/// holds it; `None`, with nothing read outside slabscope's memory, when
/// `ptr` is not 16-aligned or that word's page is not slabscope's.
///
/// Class objects are 16-aligned, so their 8-byte header (or, headerless,
/// the word before them) never straddles a page: that word's page is the
/// one to look up, whether or not the block starts a page.
#[inline(always)]
fn page_of(ptr: *mut u8) -> Option<(&'static ranges::Leaf, u8)> {
    let a = ptr as usize;
    let h = a.wrapping_sub(8);
    if a & 15 != 0 {
        return None;
    }
    let leaf = ranges::leaf(h, false)?;
    Some((leaf, leaf.byte(h)))
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
    let w = window_class(ptr);
    let hl = if w < ladder::HEADERLESS {
        if !in_window_slab(w, ptr) {
            return None;
        }
        w
    } else {
        let (leaf, b) = page_of(ptr)?;
        let hl = ranges::headerless_class(b);
        if hl >= ladder::HEADERLESS {
            // SAFETY: forwarded caller guarantee; leaf and b are ptr's
            // (page_of).
            return unsafe { headered_class(ptr, leaf, b) }.map(|(i, d, _)| (i, d));
        }
        hl
    };
    // The word before the block lies on a headerless slab of class hl:
    // the block is one of its objects if it starts one and carries no
    // free mark (else this is a double free, for the general path).
    // SAFETY: an object's start on a page slabscope mapped (checked).
    if !hl_starts(hl, ptr as usize) || unsafe { slab::hl_is_free(ptr) } {
        return None;
    }
    Some((hl, &CLASSES[hl]))
}

/// The headerless class whose window holds the word before `ptr` (see
/// `os::window`), when it is below [`ladder::HEADERLESS`]: arithmetic on
/// the pointer, no load.
#[inline(always)]
fn window_class(ptr: *mut u8) -> usize {
    window::of((ptr as usize).wrapping_sub(8))
}

/// Whether `ptr`, whose word before lies in class `w`'s window, is
/// 16-aligned and that word's page a live headerless slab of class `w`
/// (the page map's byte: a window's pages are not all slabs).
#[inline(always)]
fn in_window_slab(w: usize, ptr: *mut u8) -> bool {
    let h = (ptr as usize).wrapping_sub(8);
    (ptr as usize).is_multiple_of(16) && ranges::byte(h) == ranges::headerless_slab(w)
}

/// [`class_of`] for a block whose header's page has byte `b` (not a
/// headerless slab's) in `leaf`, with the header's state.
///
/// # Safety
/// As [`class_of`]; `(leaf, b)` is [`page_of`]`(ptr)`.
#[inline(always)]
unsafe fn headered_class(
    ptr: *mut u8,
    leaf: &ranges::Leaf,
    b: u8,
) -> Option<(usize, &'static Class, u16)> {
    if b == 0 {
        return None;
    }
    let h = (ptr as usize).wrapping_sub(8);
    // SAFETY: the header word lies on a page slabscope mapped (checked).
    let state = unsafe { slab::state_bits_of(ptr) };
    if state & TAG_MASK != TAG_BITS {
        return None;
    }
    let i = slab::reserved_tag_index(state) & (SLOTS - 1);
    let d = &CLASSES[i];
    // SAFETY: as above.
    let s = unsafe { slab::slab_addr_of(ptr) };
    // A slab in the block's GiB (all but a few) is looked up in the leaf
    // already loaded. A slab starts a page, and only its first page
    // carries its class (`ranges::mark_class_slab`).
    let at = if ranges::same_leaf(h, s) {
        leaf.byte(s)
    } else {
        ranges::byte(s)
    };
    if at != ranges::class_slab(i) || !ranges::starts_granule(s) {
        return None;
    }
    Some((i, d, state))
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

/// What `kmem::free_hit` did with a pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeHit {
    /// An object of a class, now in the current CPU's magazine, or in
    /// its home CPU's inbox when it has one elsewhere (see `crate::inbox`).
    Pushed,
    /// An object of class `class`, checked and marked free, that its
    /// magazine had no room for (full, closed by a reap, or the sequence
    /// was interrupted): hand it to `kmem::free_refused`.
    Refused {
        /// The object's size class.
        class: usize,
    },
    /// Not an allocated object of a class whose inline path is on (null,
    /// a large or internal block, a foreign pointer, a double free...):
    /// nothing was read outside slabscope's memory and nothing written;
    /// `kmem::free_miss` decides.
    Miss,
}

/// Frees `ptr` when it is an allocated object of a class whose inline path
/// is on, without calling anything: the class's magazine push, or
/// [`FreeHit::Refused`] for the caller to finish with [`push_refused`].
///
/// # Safety
/// As [`class_of`]; when `ptr` is a live block of ours it is not used
/// afterwards.
#[inline(always)]
pub(super) unsafe fn free(ptr: *mut u8) -> FreeHit {
    let w = window_class(ptr);
    if w < ladder::HEADERLESS {
        if !in_window_slab(w, ptr) {
            return FreeHit::Miss;
        }
        // SAFETY: ptr's word before lies on a headerless slab of class w
        // (checked); forwarded caller guarantee.
        return unsafe { hl_free(w, ptr) };
    }
    let Some((leaf, b)) = page_of(ptr) else {
        return FreeHit::Miss;
    };
    let hl = ranges::headerless_class(b);
    if hl < ladder::HEADERLESS {
        // SAFETY: ptr's word before lies on a headerless slab of class hl
        // (its page map byte); forwarded caller guarantee.
        return unsafe { hl_free(hl, ptr) };
    }
    // SAFETY: forwarded caller guarantee; (leaf, b) from page_of.
    let Some((i, d, state)) = (unsafe { headered_class(ptr, leaf, b) }) else {
        return FreeHit::Miss;
    };
    let base = d.base.load(Ordering::Acquire);
    if base == 0 {
        return FreeHit::Miss;
    }
    let off = RSEQ_OFF.load(Ordering::Relaxed);
    // SAFETY: an allocated object of class i (its header's tag, its
    // slab's class), freed by its holder (caller).
    unsafe { slab::mark_free(ptr) };
    if !slab::is_home(state, rseq::cpu_id(off)) {
        // SAFETY: as above: marked free, in no magazine.
        return unsafe { foreign(i, ptr, slab::home_of(state)) };
    }
    // SAFETY: base is class i's published table; ptr is marked free and in
    // no magazine.
    unsafe { push(base, off, i, ptr) }
}

// The page map can name every headerless class, and each has a window.
const _: () = assert!(ladder::HEADERLESS <= ranges::HEADERLESS_CLASSES);
const _: () = assert!(ladder::HEADERLESS <= window::WINDOWS);

/// [`free`] of `ptr`, whose word before lies on a headerless slab of
/// class `i`: pushed if it starts an object there that carries no free
/// mark, and the class's inline path is on; else `Miss`, nothing written.
///
/// # Safety
/// `i` is a headerless class and the page of `ptr - 8` is a live
/// headerless slab of it; when `ptr` is an allocated object it is freed
/// by its holder.
#[inline(always)]
unsafe fn hl_free(i: usize, ptr: *mut u8) -> FreeHit {
    if !hl_starts(i, ptr as usize) {
        return FreeHit::Miss;
    }
    let base = CLASSES[i & (SLOTS - 1)].base.load(Ordering::Acquire);
    if base == 0 {
        return FreeHit::Miss;
    }
    // SAFETY: an object's start on a live headerless slab (checked); its
    // holder, if any, is freeing it (caller). A free mark there already
    // is a double free, for the general path.
    if !unsafe { slab::hl_mark_free_checked(ptr) } {
        return FreeHit::Miss;
    }
    // SAFETY: as in free's path for the other classes.
    unsafe { push(base, RSEQ_OFF.load(Ordering::Relaxed), i, ptr) }
}

/// [`free`] of an object of class `i` whose home is another CPU: to
/// that CPU's inbox (see `crate::inbox`).
///
/// # Safety
/// `ptr` is an object of class `i`, whose descriptor is published, marked
/// free and in no magazine.
#[cold]
#[inline(never)]
unsafe fn foreign(i: usize, ptr: *mut u8, home: usize) -> FreeHit {
    let c = super::class_cache(i).expect("a descriptor is published after its class");
    // SAFETY: ptr is in a slab, so not null.
    let obj = unsafe { NonNull::new_unchecked(ptr) };
    // SAFETY: forwarded caller guarantee.
    unsafe { c.inner.free_foreign(obj, home) };
    FreeHit::Pushed
}

/// Pushes `ptr`, an object of class `i` marked free, on the current CPU's
/// magazine of the class's table `base`, through the rseq area at `off`
/// (the [`RSEQ_OFF`] the caller loaded already).
///
/// # Safety
/// `base` is class `i`'s published magazine table and `off` is
/// [`RSEQ_OFF`]; `ptr` is an object of class `i`, marked free and in no
/// magazine.
#[inline(always)]
unsafe fn push(base: usize, off: isize, i: usize, ptr: *mut u8) -> FreeHit {
    // SAFETY: base and off (RSEQ_OFF) as in `pop`; forwarded caller
    // guarantee.
    if unsafe { rseq::push(base, off, ptr) } {
        FreeHit::Pushed
    } else {
        FreeHit::Refused { class: i }
    }
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
pub(super) unsafe fn push_refused(i: usize, ptr: *mut u8) {
    let c = super::class_cache(i).expect("a descriptor is published after its class");
    // SAFETY: ptr is in a slab, so not null.
    let obj = unsafe { NonNull::new_unchecked(ptr) };
    // SAFETY: forwarded caller guarantee.
    unsafe { c.inner.push_refused(obj) }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::CacheBuilder;

    /// [`free`] as `kmem::free` uses it: whether the inline path took
    /// `p` (pushed, or refused and finished by [`push_refused`]).
    ///
    /// # Safety
    /// As [`free`].
    unsafe fn take(p: *mut u8) -> bool {
        // SAFETY: forwarded caller guarantee.
        match unsafe { free(p) } {
            FreeHit::Pushed => true,
            FreeHit::Refused { class } => {
                // SAFETY: refused by free: marked, in no magazine.
                unsafe { push_refused(class, p) };
                true
            }
            FreeHit::Miss => false,
        }
    }

    /// [`hl_starts`] (a mask or a multiply per class) agrees with the
    /// headerless slab's geometry (`sizing::headerless_geometry`, which
    /// lays out the slabs) on every 16-aligned place of a page, and on the
    /// next page's first byte.
    #[test]
    fn headerless_object_starts_match_the_slab_geometry() {
        for i in 0..ladder::HEADERLESS {
            let size = ladder::size(i) as u64;
            let hl = slab::HL_SLAB as u64;
            let g = crate::sizing::headerless_geometry(size, 16, slab::SLAB_HDR, hl, hl)
                .expect("a headerless class has a headerless geometry");
            assert_eq!(g.first_obj, HL_FIRST as u64, "class {i}");
            let page = 0x7000_0000_0000usize;
            for o in (0..=hl).step_by(16) {
                let want = o >= g.first_obj
                    && (o - g.first_obj).is_multiple_of(size)
                    && (o - g.first_obj) / size < g.slab_objs;
                assert_eq!(
                    hl_starts(i, page + o as usize),
                    want,
                    "class {i} ({size} bytes), offset {o}"
                );
            }
        }
        assert!(
            !hl_starts(4, 0x7000_0000_0040),
            "no headerless class past the last one"
        );
    }

    /// The inline free takes a live class object and nothing else: not the
    /// same object again, not a pointer inside one (even under a forged
    /// header naming a real slab), not another cache's object, not
    /// memory slabscope never mapped, not a large block.
    #[test]
    fn the_inline_free_takes_class_objects_only() {
        let p = super::super::alloc(100).expect("100 bytes");
        let i = ladder::index(100);
        assert!(i >= ladder::HEADERLESS, "a class with headers");
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
        let class = super::super::class_cache(i).expect("built by the alloc");
        assert_eq!(
            Some(RSEQ_OFF.load(Ordering::Relaxed)),
            class.inner.rseq,
            "the hit paths use the class cache's own rseq area offset"
        );
        // SAFETY: p is a live class object.
        let state = unsafe { slab::state_bits_of(p) };
        assert_eq!(slab::without_home(state), slab::reserved_tag(i));
        // SAFETY: p is a live class object, not used afterwards.
        assert!(unsafe { take(p) }, "a live class object");
        // SAFETY: p's header is still slabscope's memory.
        assert_eq!(unsafe { slab::state_bits_of(p) }, slab::OBJ_FREE);
        // SAFETY: detected, not freed (the header says free).
        assert!(!unsafe { take(p) }, "a double free is the general path's");

        let q = super::super::alloc(200).expect("200 bytes").as_ptr();
        let j = ladder::index(200);
        // SAFETY: q is live.
        let slab = unsafe { slab::slab_addr_of(q) };
        // Forge, 64 bytes into q, the header of an object of another class
        // naming q's real slab: the slab's cache is not that class's.
        // (A forged header naming q's own class and slab passes, on this
        // path as on the general one: both check the header, not where
        // the pointer lies in the slab.) The page map tells which class
        // a slab start belongs to (`ranges::class_slab`).
        let inner = q.wrapping_add(64);
        let word = slab as u64 | u64::from(slab::reserved_tag(j + 1)) << 48;
        // SAFETY: the 8 bytes before inner lie inside q's 200.
        unsafe { inner.wrapping_sub(8).cast::<u64>().write(word) };
        // SAFETY: detected, not freed.
        assert!(!unsafe { take(inner) }, "a forged header of another class");
        // Nor a header of q's own class naming a place inside q's slab
        // that is not where the slab starts.
        let word = (slab + 8) as u64 | u64::from(slab::reserved_tag(j)) << 48;
        // SAFETY: as above.
        unsafe { inner.wrapping_sub(8).cast::<u64>().write(word) };
        // SAFETY: detected, not freed.
        let took = unsafe { take(inner) };
        assert!(!took, "a forged header naming no slab start");
        // SAFETY: q is live, not used afterwards.
        assert!(unsafe { take(q) });

        let c = CacheBuilder::new("fast_free_other_cache", 64)
            .build()
            .unwrap();
        let o = c.alloc(crate::flags::KM_SLEEP).unwrap();
        // SAFETY: o is live; the inline path only reads its header.
        assert!(!unsafe { take(o.as_ptr()) }, "another cache's object");
        // SAFETY: o came from c.
        unsafe { c.free(o) };

        let mut local = [0u64; 8];
        let on_stack = local.as_mut_ptr().wrapping_add(2).cast::<u8>();
        // SAFETY: not slabscope's: detected before anything is read.
        assert!(!unsafe { take(on_stack) }, "memory slabscope never mapped");

        let big = super::super::alloc(ladder::MAX_CLASS + 1).unwrap().as_ptr();
        // SAFETY: a live large block; its header's state is not a tag.
        assert!(!unsafe { take(big) }, "a large block");
        // SAFETY: big is ours, unused from now on.
        unsafe { super::super::free(big) };
    }

    /// The inline free of a headerless class takes an allocated object
    /// and nothing else: not the same object again, not a pointer inside
    /// one or at its slab's first byte, not the slab header; and after it
    /// the object carries its free mark.
    #[test]
    fn the_inline_free_of_headerless_classes_checks_place_and_mark() {
        if ladder::HEADERLESS == 0 {
            eprintln!("SKIPPED: no headerless classes on this target; nothing was checked");
            return;
        }
        let p = super::super::alloc(40).expect("40 bytes").as_ptr();
        let i = ladder::index(40);
        assert!(i < ladder::HEADERLESS && ladder::size(i) == 48);
        if CLASSES[i].base.load(Ordering::Acquire) == 0 {
            eprintln!(
                "SKIPPED: the_inline_free_of_headerless_classes_checks_place_and_mark: no \
                 restartable sequences here, so the inline paths are off; nothing was checked"
            );
            // SAFETY: p is ours, unused from now on.
            unsafe { super::super::free(p) };
            return;
        }
        let a = p as usize;
        let page = a & !(slab::HL_SLAB - 1);
        assert_eq!(
            (a - page - HL_FIRST) % 48,
            0,
            "an object start of its one-page slab"
        );
        assert_eq!(
            ranges::headerless_class(ranges::byte(page)),
            i,
            "the page map names the slab's class"
        );
        assert_eq!(window_class(p), i, "the slab lies in its class's window");
        // The window's last page, never made writable this early: not
        // taken, and not read (it would fault).
        let last = (a & !((1 << 30) - 1)) + (1 << 30) - slab::HL_SLAB + HL_FIRST;
        assert_eq!(window_class(last as *mut u8), i);
        // SAFETY: detected by the page map, not read.
        let took = unsafe { take(last as *mut u8) };
        assert!(!took, "a window page not a slab");
        // SAFETY: p is a live object of a headerless slab.
        let marked = unsafe { slab::hl_is_free(p) };
        assert!(!marked, "an allocation clears the free mark");
        // SAFETY: p is live: its bytes are ours to write.
        unsafe { p.write_bytes(0xa5, 48) };
        for inner in [16, 32] {
            // SAFETY: detected (not an object's start), not freed.
            let took = unsafe { take(p.wrapping_add(inner)) };
            assert!(!took, "inside a block, +{inner}");
        }
        // The slab's own first bytes, and its header's last 16-aligned
        // word: no object starts there.
        let slab_start = p.wrapping_sub(a - page);
        for off in [0, 48] {
            // SAFETY: detected, not freed.
            let took = unsafe { take(slab_start.wrapping_add(off)) };
            assert!(!took, "slab byte {off}");
        }
        // SAFETY: p is a live class object, not used afterwards.
        assert!(unsafe { take(p) }, "a live headerless object");
        // SAFETY: p's page is still slabscope's.
        assert!(unsafe { slab::hl_is_free(p) }, "a free sets the free mark");
        // SAFETY: detected, not freed (the mark says free).
        assert!(!unsafe { take(p) }, "a double free is the general path's");
        // The next allocation of the class (p again, unless the thread
        // moved to another CPU's magazine) clears its object's mark.
        let q = super::super::alloc(48).expect("48 bytes").as_ptr();
        // SAFETY: q is live.
        let marked = unsafe { slab::hl_is_free(q) };
        assert!(!marked, "an allocation clears the free mark");
        // SAFETY: q is ours, unused from now on.
        assert!(unsafe { take(q) });
    }

    /// Each headerless class carves its slabs from a window of its own,
    /// so its blocks' class is their address's window; blocks of the
    /// other classes lie in none.
    #[test]
    fn headerless_classes_live_in_their_windows() {
        let sizes = [1, 16, 17, 32, 40, 48, 60, 64, 65, 100, 4000];
        // While another test's thread builds the classes, allocations come
        // from the internal allocator.
        while sizes
            .iter()
            .any(|&n| super::super::class_cache(ladder::index(n)).is_none())
        {
            for n in sizes {
                let p = super::super::alloc(n).expect("n bytes");
                // SAFETY: p is ours, unused from now on.
                unsafe { super::super::free(p.as_ptr()) };
            }
            std::thread::yield_now();
        }
        let blocks: Vec<(usize, *mut u8)> = sizes
            .into_iter()
            .map(|n| {
                (
                    ladder::index(n),
                    super::super::alloc(n).expect("n bytes").as_ptr(),
                )
            })
            .collect();
        for &(i, p) in &blocks {
            let w = window_class(p);
            if i < ladder::HEADERLESS {
                assert_eq!(w, i, "a block of class {i} in window {w}");
            } else {
                assert!(w >= window::WINDOWS, "a block of class {i} in window {w}");
            }
            // SAFETY: p is ours, unused from now on.
            unsafe { super::super::free(p) };
        }
    }

    /// The CPUs this process may run on, lowest first.
    fn allowed_cpus() -> Vec<usize> {
        // SAFETY: all zeroes is the empty set; sched_getaffinity fills it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: set is a cpu_set_t of the size passed.
        if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: c is below CPU_SETSIZE.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect()
    }

    /// Runs `f` on a thread pinned to `cpu`.
    fn on_cpu<T: Send>(cpu: usize, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: all zeroes is the empty set.
                let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
                // SAFETY: cpu is below CPU_SETSIZE (it came from a set).
                unsafe { libc::CPU_SET(cpu, &mut set) };
                // SAFETY: set is a cpu_set_t of the size passed.
                let r = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
                assert_eq!(r, 0, "pinning a thread to CPU {cpu}");
                f()
            })
            .join()
            .expect("the pinned thread")
        })
    }

    /// A block handed out on one CPU and freed on another goes to its
    /// home's inbox, not the freeing CPU's magazine, and its home gets it
    /// back when its magazine runs empty.
    #[test]
    fn a_block_freed_on_another_cpu_goes_home() {
        let cpus = allowed_cpus();
        let (Some(&a), Some(&b)) = (cpus.first(), cpus.get(1)) else {
            eprintln!(
                "SKIPPED: a_block_freed_on_another_cpu_goes_home: this process may run on one \
                 CPU only ({cpus:?}); nothing was checked"
            );
            return;
        };
        // A size no other test here uses, so its class is this test's.
        let size = 6000;
        let i = ladder::index(size);
        let first = super::super::alloc(size).expect("6000 bytes");
        if CLASSES[i].base.load(Ordering::Acquire) == 0 {
            eprintln!(
                "SKIPPED: a_block_freed_on_another_cpu_goes_home: no restartable sequences \
                 here, so no homes; nothing was checked"
            );
            // SAFETY: ours, unused from now on.
            unsafe { super::super::free(first.as_ptr()) };
            return;
        }
        // SAFETY: ours, unused from now on.
        unsafe { super::super::free(first.as_ptr()) };
        let c = super::super::class_cache(i).expect("built");
        assert!(c.inner.inbox.homes() > a.max(b) % slab::HOMES);
        let p = on_cpu(a, || {
            let q = super::super::alloc(size).expect("6000 bytes").as_ptr();
            q.expose_provenance()
        });
        let p = std::ptr::with_exposed_provenance_mut::<u8>(p);
        // SAFETY: p is live.
        let state = unsafe { slab::state_bits_of(p) };
        assert_eq!(slab::without_home(state), slab::reserved_tag(i));
        assert_eq!(
            slab::home_of(state),
            a % slab::HOMES,
            "handed out on CPU {a}"
        );
        let before = c.inner.inbox.len();
        let pa = p.addr();
        on_cpu(b, || {
            // SAFETY: p is live, not used afterwards here.
            unsafe { super::super::free(std::ptr::with_exposed_provenance_mut(pa)) }
        });
        let mut waiting = Vec::new();
        // SAFETY: nothing else uses this class's inboxes (see `size`).
        let walked = unsafe {
            c.inner.inbox.peek(|home, q| {
                waiting.push((home, q.addr()));
                Ok::<(), ()>(())
            })
        };
        assert_eq!(walked, Ok(()));
        assert!(
            waiting.contains(&(a % slab::HOMES, p.addr())),
            "freed on CPU {b}, the block waits in CPU {a}'s inbox: {waiting:x?}"
        );
        assert_eq!(c.inner.inbox.len(), before + 1);
        // SAFETY: p's header is still slabscope's memory.
        assert_eq!(unsafe { slab::state_bits_of(p) }, slab::OBJ_FREE);
        c.validate()
            .expect("the books balance with a block in an inbox");
        // On CPU a, allocations empty the magazine; the refill after that
        // takes the inbox first.
        let got = on_cpu(a, || {
            let mut got = Vec::new();
            for _ in 0..=c.inner.mag_size as usize + 1 {
                let q = super::super::alloc(size).expect("6000 bytes").as_ptr();
                got.push(q.expose_provenance());
                if got.last() == Some(&pa) {
                    break;
                }
            }
            got
        });
        assert_eq!(
            got.last(),
            Some(&pa),
            "CPU {a} got its block back within a magazine's worth of allocations"
        );
        assert_eq!(c.inner.inbox.len(), before);
        on_cpu(a, || {
            for q in got {
                // SAFETY: ours, unused from now on.
                unsafe { super::super::free(std::ptr::with_exposed_provenance_mut(q)) };
            }
        });
        c.validate().expect("the books balance");
    }
}
