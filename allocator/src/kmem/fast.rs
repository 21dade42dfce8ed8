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
    page_of(ptr).is_some_and(|(_, b)| b == ranges::headerless_slab(w))
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

// The page map can name every headerless class, and each has a window
// whose slabs are headerless slabs.
const _: () = assert!(ladder::HEADERLESS <= ranges::HEADERLESS_CLASSES);
const _: () = assert!(ladder::HEADERLESS <= window::WINDOWS && window::SLAB == slab::HL_SLAB);

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
mod tests;
