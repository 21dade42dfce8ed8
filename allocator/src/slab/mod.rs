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
//! # Where the rest is
//!
//! - `header`: the one-word object header before each object (its
//!   state, the tags that name a cache or a size class and its home CPU).
//! - `headerless`: the small classes' one-page slabs, whose objects have
//!   no header, and the free mark that takes its place.
//! - `list`: the intrusive list of slabs the cache's lists are made of.
//! - `check`: the debug checks of a pointer handed back and of a free
//!   object taken.
//! - `validate`: the walk that checks the bookkeeping below.
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

mod check;
mod header;
mod headerless;
mod list;
mod validate;

#[cfg(test)]
mod tests;

pub(crate) use check::{check_free, check_obj_result};
use check::{check_taken, corrupt};
use header::{
    ADDR_MASK, hdr_of, header_word, next_free, owner_fields, set_next_free, slab_of, state_bits,
    word_of,
};
pub(crate) use header::{
    HOMES, OBJ_EMERGENCY, OBJ_FREE, OBJ_SYSTEM, ObjHdr, RESERVED_TAG, alloc_tag, class_of_tag,
    header_of, home_of, homed_tag, init_slabless_header, is_home, live_slab_cache, mark_allocated,
    mark_free, reserved_tag, reserved_tag_index, set_foreign_header, slab_addr_of, state_bits_of,
    state_of, without_home,
};
pub(crate) use headerless::{
    HL_SLAB, hl_is_free, hl_key_init, hl_mark_allocated, hl_mark_free, hl_mark_free_checked,
};
use headerless::{hl_slab_of, hl_starts_obj};
pub(crate) use list::SlabList;
use list::relink;

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

/// Bytes of the slab header before alignment.
pub(crate) const SLAB_HDR: u64 = size_of::<Slab>() as u64;
/// Bytes of the object header before alignment.
pub(crate) const OBJ_HDR: u64 = size_of::<ObjHdr>() as u64;
// Object 0 of an 8-aligned cache starts at SLAB_HDR + OBJ_HDR: `kmem`'s
// 8-aligned classes need that on a multiple of 16.
const _: () = assert!((SLAB_HDR + OBJ_HDR).is_multiple_of(16));

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
        // built now, free and unlisted, with its free mark (see
        // `headerless`), so no object of a headerless slab is unbuilt.
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
