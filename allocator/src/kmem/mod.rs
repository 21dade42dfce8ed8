//! General-purpose allocation on size-class caches: SPL's `kmem_alloc()`,
//! `kmem_zalloc()`, `kmem_free()` and `vmem_*()` (`spl-kmem.c`), served
//! the way illumos serves `kmem_alloc` and libumem `malloc`: from a ladder
//! of object caches named `kmem_alloc_<size>` ([`ladder`]), larger requests
//! from mappings of their own, counted as one row `kmem_alloc_large`. The
//! `malloc` library (`slabscope-malloc`) and [`crate::global::SlabscopeAlloc`]
//! are built on the functions here.
//!
//! # Finding the owner from the pointer alone
//!
//! Every block this module hands out but the objects of the headerless
//! classes (16 to 64 bytes, see `ladder`) has a one-word header right
//! before it, the slab objects' header (see `slab`): an allocated class object's
//! names its slab, whose header names its cache; a large mapping's, a block
//! of the internal allocator's ([`InternalAlloc`]) and an aligned interior
//! pointer's carry states of their own. So [`free`], [`realloc`] and
//! [`usable_size`] need no size, no lock and no search: a class object's
//! header carries its class's number (the class cache's reserved tag), so
//! its free is a look in the page map, the header, a second look in the
//! page map (that the slab it names starts a slab of that class), the
//! class's static descriptor and the magazine push (see `fast`, which
//! also serves the allocations that hit a magazine). A headerless class's
//! object is known by its page, which the page map marks as a whole slab
//! of that class, and its place in it; its free mark, in its second word,
//! tells a double free.
//!
//! Before reading a header, [`free`] checks in a page map (the `os`
//! seam's `ranges`, a byte per page) that the pointer and its header lie
//! in memory slabscope mapped: a pointer from another allocator, from before the library was
//! preloaded, or into the middle of nothing, aborts with a message naming
//! it instead of corrupting anything. So does a double free, as the debug
//! checks of caches do.
//!
//! # A malloc lives in a hostile place
//!
//! Building a class allocates (its cache's `Arc`, magazines, name), and
//! in a program whose global allocator or `malloc` is slabscope that
//! allocation comes back here. So while a class is built every allocation
//! of a class not built yet — from the building thread, from the threads
//! it starts, from `pthread_atfork`'s own bookkeeping — comes from the
//! internal allocator, which needs no cache, no thread-local storage and
//! no lock but its own.
//!
//! A class is built at its first allocation, so a class a program never
//! uses costs it nothing: `ls` under the `malloc` library builds 23
//! of the 89. Building takes the registry lock, which slabscope's own code
//! holds while it allocates (the statistics thread, reaps, `fork`
//! handlers); under the `malloc` library that code allocates from the
//! internal allocator, under `libslabscope.so` from the C library's
//! `malloc`, so no build waits for a lock its own thread holds. Under
//! [`crate::global::SlabscopeAlloc`] slabscope's own code allocates from
//! the classes, so there the 89 are built together, at the first
//! allocation (`build_all`), and from then on no allocation creates a
//! cache or takes the registry lock. While a `fork` is in progress the
//! [`crate::global::SlabscopeAlloc`] serves slabscope's own `fork` handler
//! from the internal allocator too (that handler holds every cache lock).
//! The known remainder: an emergency object's bookkeeping and a grow
//! handed to the worker pool allocate while holding a cache lock or
//! the pool's; with a global allocator on the classes (not with the
//! `malloc` library, whose own code uses [`InternalAlloc`]) that allocation
//! may need the same cache, which deadlocks. Both happen only after a grow
//! failed to map memory.
//!
//! # Where slabscope differs from SPL
//!
//! - `kmem_free(ptr, size)` checks `size` against the block (SPL trusts
//!   it) and aborts with a message when it is larger.
//! - A `KM_SLEEP` request above [`ladder::MAX_CLASS`] that the OS refuses
//!   (more than the address space or overcommit allows) returns `None`
//!   instead of retrying forever.
//! - `vmem_*` are the same functions as `kmem_*` (SPL separates virtually
//!   and physically contiguous memory; userspace has only the former).
//!
//! # The largest class
//!
//! [`ladder::MAX_CLASS`] is 128 KiB (glibc's initial `M_MMAP_THRESHOLD`),
//! chosen by measurement on the shared 2-vCPU development VM, with the
//! library preloaded (single runs, a noisy machine: read them as orders of
//! magnitude). A block above the limit costs an `mmap`, its page faults and
//! an `munmap`: churning 16 live blocks of 136 KiB to 256 KiB (each
//! allocated, its first page and last byte written, freed) took 16 to
//! 26 µs per block, against about 50 ns in a class (128 KiB) and 41 to
//! 57 ns on glibc, whose threshold rises after such a free. Raising the
//! limit moves that churn into classes, but every class keeps freed objects
//! in its magazines and depot, touched: `workloads/heap.py` on
//! `PYTHONMALLOC=malloc python3` peaked at 54 MB with the limit at
//! 128 KiB, 52 to 57 MB at 256 KiB and 58 to 70 MB at 1 MiB (glibc:
//! 42 MB); `workloads/sqlite.sql` at 144 to 145 MB with each (glibc:
//! 120 MB). So the limit stays at 128 KiB, and freed mappings are kept
//! for the next blocks (see [`large`]): the same churn then takes 100 to
//! 130 ns per block. Kept mappings hold their touched pages: keeping up
//! to 32 MiB raised heap.py's peak to 60 to 63 MB and sqlite.sql's to
//! 144 MB; 4 MiB left them at 51 to 54 and 138.5 MB. With the class
//! limits below, 4 MiB kept put heap.py at 46.5 MiB (1.11x mimalloc in
//! the same runs) and 1 MiB at 43.9 (1.05x), its time unchanged (1.39x
//! against 1.29 to 1.48 from run to run); sqlite.sql did not move (132.9
//! MiB). Those were fixed amounts kept whatever the program held; what is
//! kept now follows the live large blocks (1 MiB, or half their bytes),
//! which leaves heap.py and sqlite.sql where 1 MiB did and serves a
//! program that keeps many large blocks as the peers do.
//!
//! # Memory
//!
//! SPL sizes slabs, magazines and the depot for a kernel that has a few
//! hot caches; a `malloc` has 89 classes, most of them holding a few
//! objects, and a process pays for whatever a class holds beyond its
//! objects in use. Measured with the library preloaded into redis-server
//! under `workloads/redis.sh` (issue 15; `cache_stats` snapshots read with
//! bpftrace, 2-vCPU VM): 8.6 MiB of slabs for 2.2 MiB of objects in use,
//! 6.2 MiB of it freed objects in magazines, nearly all in the classes
//! from 16 KiB up: their slabs held 8 objects (1 MiB for the 128 KiB
//! class, for one object in use), a refill took a whole slab into a
//! magazine of 64, and building a slab wrote a page of every object.
//! So each class is built with `CLASS_CAPS`: slabs of at most 64 KiB of
//! objects (one object from 32 KiB), magazines of at most 128 KiB of
//! objects (the `magazine_size` tunable, when set, wins) and a depot of at
//! most 128 KiB (or `depot_kb`, when smaller). redis-server then held
//! 4.6 MiB of slabs for the same 2.2 MiB in use. Small classes keep the
//! seed's sizes: their magazines of 256 objects are the fast path.
//!
//! The magazines' cap later went to 256 KiB. At 128 KiB the classes
//! from 2 to 4 KiB had magazines of 32 to 64 objects, and a program that
//! keeps a few hundred of them live per thread (larson) emptied and
//! filled them often enough to trade blocks between CPUs through the
//! depot and the slabs, each trade leaving a block of one thread among
//! another's: larson with each array kept by its thread read 1.13× the
//! best peer, 1.02× with 512 KiB, and 256 KiB gave the same time. The
//! peak RSS of python, sqlite3 and redis-server did not change at 512
//! KiB (bench/ANALYSIS.md, "Larson's two readings").

mod boot;
mod fast;
pub mod ladder;
pub mod large;
mod owner;

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};

pub use boot::InternalAlloc;
pub use fast::FreeHit;

use crate::cache::{ByteCaps, Cache, CacheBuilder};
use crate::flags::{KM_PUBLIC_MASK, KM_SLEEP, KMC_KVMEM, KmFlags};
use crate::os;
use crate::registry;
use crate::slab;

/// Header state of an aligned pointer inside a larger block (the low bits:
/// the block).
const OBJ_INNER: u16 = 0x14e8;
use large::PREFIX as LARGE_PREFIX;
use owner::{Owner, not_ours, owner};

/// What a class may hold beyond its objects in use (see "Memory" in the
/// module docs): slabs of at most 64 KiB of objects (8 objects up to
/// 8 KiB, one from 32 KiB), magazines of at most 256 KiB of objects, and
/// a depot of at most 128 KiB.
const CLASS_CAPS: ByteCaps = ByteCaps {
    slab: Some(64 << 10),
    magazine: Some(256 << 10),
    depot_kb: Some(128),
};

/// Class `i`'s cache once built (never freed, never unpublished).
static CLASS: [AtomicPtr<Cache>; ladder::CLASSES] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; ladder::CLASSES];

const UNINIT: u8 = 0;
const READY: u8 = 1;
const FAILED: u8 = 2;

/// The one-time setup of the first build ([`setup_first`]), or a build that
/// failed (a bad tunable): then every allocation comes from the internal
/// allocator.
static STATE: AtomicU8 = AtomicU8::new(UNINIT);
/// Held while a class is built: meanwhile an allocation of a class not
/// built yet, the build's own among them, comes from the internal
/// allocator.
static BUILDING: AtomicBool = AtomicBool::new(false);
/// Every class is built (see [`build_all`]).
static ALL_BUILT: AtomicBool = AtomicBool::new(false);
/// Set from the `fork` prepare handler until the parent or child handler.
pub(crate) static FORKING: AtomicBool = AtomicBool::new(false);

/// Size class `i`'s cache, once an allocation of the class built it
/// (`i < ladder::CLASSES`).
#[inline(always)]
pub fn class_cache(i: usize) -> Option<&'static Cache> {
    let p = CLASS[i].load(Ordering::Acquire);
    // SAFETY: a published cache is never freed or unpublished.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Class `i`'s cache, building it first if no thread has; `None` while a
/// class is being built (by this thread or another) or when it could not
/// be.
#[inline(always)]
fn class(i: usize) -> Option<&'static Cache> {
    class_cache(i).or_else(|| build(i..i + 1))
}

/// Builds every class (see "A malloc lives in a hostile place" in the
/// module docs), unless that is done: [`crate::global::SlabscopeAlloc`]
/// calls it before each allocation. Another thread's build in progress,
/// or this thread's, leaves it undone for a later call.
#[inline(always)]
pub(crate) fn build_all() {
    if !ALL_BUILT.load(Ordering::Acquire) {
        build_all_slow();
    }
}

#[cold]
#[inline(never)]
fn build_all_slow() {
    if build(0..ladder::CLASSES).is_some() {
        ALL_BUILT.store(true, Ordering::Release);
    }
}

/// Builds the classes of `which` not built yet, under [`BUILDING`];
/// returns the first one's cache. (A range, not a list: nothing may
/// allocate here before `BUILDING` is held.) `None`, building nothing, when another
/// build holds it (the caller takes the internal allocator) or a build
/// failed.
#[cold]
#[inline(never)]
fn build(which: std::ops::Range<usize>) -> Option<&'static Cache> {
    if STATE.load(Ordering::Acquire) == FAILED
        || BUILDING
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        return None;
    }
    let r = build_locked(which);
    BUILDING.store(false, Ordering::Release);
    r
}

fn build_locked(which: std::ops::Range<usize>) -> Option<&'static Cache> {
    if STATE.load(Ordering::Relaxed) == UNINIT {
        setup_first();
    }
    let first = which.start;
    for i in which {
        if class_cache(i).is_some() {
            continue;
        }
        let size = ladder::size(i);
        match CacheBuilder::new(format!("kmem_alloc_{size}"), size)
            .align(ladder::align(i))
            .flags(KMC_KVMEM)
            .reserved_tag(i)
            .byte_caps(CLASS_CAPS)
            .headerless(i < ladder::HEADERLESS)
            .homes(true)
            .build()
        {
            Ok(c) => {
                // Every object 16-aligned: the first, and the stride (see
                // `ladder`); a layout that breaks it is a bug here. So is a
                // headerless class whose objects do not start where the
                // inline free's table says (`fast::HL_FIRST`).
                let g = &c.inner.geo;
                assert!(
                    g.first_obj.is_multiple_of(16) && g.obj_size_full.is_multiple_of(16),
                    "slabscope: size class {size}: objects would not be 16-aligned ({g:?})"
                );
                assert!(
                    g.headerless() == (i < ladder::HEADERLESS)
                        && (!g.headerless() || g.first_obj == fast::HL_FIRST as u64),
                    "slabscope: size class {size}: not the layout the free path expects ({g:?})"
                );
                let c: &'static Cache = Box::leak(Box::new(c));
                CLASS[i].store(std::ptr::from_ref(c).cast_mut(), Ordering::Release);
                fast::publish(i, c);
            }
            Err(e) => {
                use std::io::Write;
                // The classes built so far stay registered, unused.
                let _ = writeln!(
                    std::io::stderr(),
                    "slabscope: cannot build the size classes of kmem_alloc and malloc \
                     ({e}); every allocation of this process comes from slabscope's \
                     internal allocator instead: fix the setting named above"
                );
                STATE.store(FAILED, Ordering::Release);
                return None;
            }
        }
        if STATE.load(Ordering::Relaxed) == UNINIT {
            setup_after_first();
        }
    }
    class_cache(first)
}

/// What the first build does before its cache: the `kmem_alloc_large`
/// row, and the internal allocator's `fork` handlers. Prepare handlers run
/// in the reverse order of registration, parent and child ones in order.
/// The internal allocator's lock is registered first, so it is taken after
/// every other prepare handler has run (the cache layer's, registered by
/// the first cache, allocates) and released before the others' parent and
/// child handlers; this module's ([`setup_after_first`]) is registered
/// last, so [`FORKING`] is set before any of them runs and cleared after
/// all. The statistics publisher, which the first class starts (a thread,
/// or deferred to the slow paths: see `crate::background`), reports the
/// `kmem_alloc_large` row with the caches.
fn setup_first() {
    registry::report_row(large_snapshot);
    if !cfg!(miri) {
        // SAFETY: plain functions touching only this module's statics.
        unsafe {
            libc::pthread_atfork(
                Some(boot::fork_prepare),
                Some(boot::fork_release),
                Some(boot::fork_release),
            )
        };
    }
}

/// What the first build does after its cache (see [`setup_first`]).
fn setup_after_first() {
    if !cfg!(miri) {
        // SAFETY: plain functions touching only this module's statics.
        unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_release), Some(fork_child)) };
    }
    STATE.store(READY, Ordering::Release);
}

extern "C" fn fork_prepare() {
    FORKING.store(true, Ordering::SeqCst);
}

extern "C" fn fork_release() {
    FORKING.store(false, Ordering::SeqCst);
}

/// The child's handler: also frees [`BUILDING`], which a thread the child
/// does not have may have held (its class, not published, is built again
/// when asked for).
extern "C" fn fork_child() {
    BUILDING.store(false, Ordering::SeqCst);
    FORKING.store(false, Ordering::SeqCst);
}

/// `size` bytes (at least 1), 16-aligned, uninitialised; `None` when the
/// OS refuses memory (or, with `KM_NOSLEEP`, when a class has none free at
/// once).
#[inline]
fn alloc_flags(size: usize, kmflags: u32) -> Option<NonNull<u8>> {
    if size <= ladder::MAX_CLASS {
        let i = ladder::index(size);
        if let Some(p) = fast::pop(i) {
            return Some(p);
        }
        return alloc_class(i, size, kmflags);
    }
    large::alloc(size, false)
}

/// [`alloc_flags`] of class `i` when the inline pop missed: the class's
/// general path (refill, grow), or the internal allocator until the
/// classes are built (building them first if no thread has).
#[inline(never)]
fn alloc_class(i: usize, size: usize, kmflags: u32) -> Option<NonNull<u8>> {
    if let Some(c) = class(i) {
        let p = c.alloc(kmflags)?;
        // SAFETY: p was just handed out by class i's cache.
        unsafe { fast::give_home(i, p, c) };
        return Some(p);
    }
    boot::alloc(size)
}

/// `malloc`: `size` bytes (0 is served as 1), 16-aligned; `None` when the
/// OS refuses memory.
#[inline]
pub fn alloc(size: usize) -> Option<NonNull<u8>> {
    alloc_flags(size, KM_SLEEP)
}

/// [`alloc`]'s magazine hit and nothing else: an object of `size`'s
/// class popped from the current CPU's magazine, or `None` (a size above
/// the classes, an empty or busy magazine, classes not built yet) for the
/// caller to take [`alloc`]. Calls nothing, so the malloc library's
/// `malloc` reaches its slow path by a jump and runs its hit without a
/// stack frame.
#[inline(always)]
pub fn alloc_hit(size: usize) -> Option<NonNull<u8>> {
    if size <= ladder::HEADERLESS_MAX {
        // Its own copy of the pop, for the most frequent requests: the
        // class is known to be one of the first four, so which mark to
        // write is decided here, not after the pop.
        fast::pop(ladder::index(size))
    } else if size <= ladder::MAX_CLASS {
        fast::pop(ladder::index(size))
    } else {
        None
    }
}

/// From the internal allocator, whatever the state of the classes (for the
/// global allocator while a `fork` is in progress).
pub(crate) fn alloc_internal(size: usize, align: usize) -> Option<NonNull<u8>> {
    aligned_with(size, align, boot::alloc)
}

/// `calloc` without the multiplication: `size` zeroed bytes. Fresh
/// mappings are zero already and are not written again.
#[inline]
pub fn zalloc(size: usize) -> Option<NonNull<u8>> {
    if size > ladder::MAX_CLASS {
        return large::alloc(size, true);
    }
    if class(ladder::index(size)).is_none() {
        // While a class is built (its magazines among it): the internal
        // allocator writes only blocks it had handed out before.
        return boot::alloc_zeroed(size);
    }
    let p = alloc(size)?;
    // SAFETY: p is a fresh block of at least size bytes.
    unsafe { p.as_ptr().write_bytes(0, size) };
    Some(p)
}

/// `size` bytes aligned to `align` (a power of two; at most 16 costs
/// nothing extra).
pub fn alloc_aligned(size: usize, align: usize) -> Option<NonNull<u8>> {
    aligned_with(size, align, alloc)
}

/// [`zalloc`] aligned to `align` (a power of two).
pub fn zalloc_aligned(size: usize, align: usize) -> Option<NonNull<u8>> {
    aligned_with(size, align, zalloc)
}

/// `size` bytes aligned to `align` from `f`, which returns 16-aligned
/// blocks: above 16, a block `align` bytes larger and a pointer inside it,
/// whose own header names the block.
pub(crate) fn aligned_with(
    size: usize,
    align: usize,
    f: fn(usize) -> Option<NonNull<u8>>,
) -> Option<NonNull<u8>> {
    debug_assert!(align.is_power_of_two());
    if align <= 16 {
        return f(size);
    }
    // Never a headerless class's block: the word before the pointer inside
    // it must be read as its header (see `owner`).
    let block = f(size.checked_add(align)?.max(ladder::HEADERLESS_MAX + 1))?;
    let b = block.as_ptr() as usize;
    // At least 16 past the block start (both are multiples of 16), so the
    // header lies inside the block after the block's own header; at most
    // `align` past it, so `size` bytes fit.
    let p = (b + 1).next_multiple_of(align);
    let inner = block.as_ptr().wrapping_add(p - b);
    // SAFETY: the word before `inner` is inside the block, past its header.
    unsafe { slab::set_foreign_header(inner, b, OBJ_INNER) };
    NonNull::new(inner)
}

/// `free`: returns a block of [`alloc`], [`zalloc`], [`alloc_aligned`] or
/// [`realloc`]. Null is ignored. Anything else aborts with a message.
///
/// # Safety
/// `ptr` is null or a live block of this module, not used afterwards.
#[inline]
pub unsafe fn free(ptr: *mut u8) {
    // SAFETY: forwarded caller guarantee (a pointer not ours is detected).
    match unsafe { free_hit(ptr) } {
        FreeHit::Pushed => {}
        // SAFETY: refused by free_hit: marked free, in no magazine.
        FreeHit::Refused { class } => unsafe { free_refused(class, ptr) },
        // SAFETY: forwarded caller guarantee; the inline path left it alone.
        FreeHit::Miss => unsafe { free_miss(ptr) },
    }
}

/// [`free`]'s magazine hit and nothing else: a class object checked (see
/// `fast`) and pushed on the current CPU's magazine, or refused by a full
/// one after it was checked and marked free ([`free_refused`] finishes
/// it), or left alone ([`free_miss`] decides). Calls nothing, so the
/// malloc library's `free` reaches both by a jump.
///
/// # Safety
/// As [`free`].
#[inline(always)]
pub unsafe fn free_hit(ptr: *mut u8) -> FreeHit {
    // SAFETY: forwarded caller guarantee (a pointer not ours is detected,
    // not dereferenced).
    unsafe { fast::free(ptr) }
}

/// The rest of a free that [`free_hit`] refused: the class cache's own
/// remedies for a full or closed magazine.
///
/// # Safety
/// `ptr` and `class` are what [`free_hit`] returned [`FreeHit::Refused`]
/// for, and `ptr` was not freed again since.
#[cold]
pub unsafe fn free_refused(class: usize, ptr: *mut u8) {
    // SAFETY: forwarded caller guarantee.
    unsafe { fast::push_refused(class, ptr) }
}

/// [`free`] of everything its inline path (`fast`) does not take: null,
/// objects of classes whose inline path is off or not yet built, blocks of
/// other kinds, and whatever is not a live block of ours (which aborts
/// here with a message).
///
/// # Safety
/// As [`free`], for a pointer [`free_hit`] returned [`FreeHit::Miss`] for.
#[inline(never)]
pub unsafe fn free_miss(ptr: *mut u8) {
    let Some(p) = NonNull::new(ptr) else {
        return;
    };
    // SAFETY: forwarded caller guarantee.
    match unsafe { owner("free", ptr) } {
        Owner::Class(_, c) | Owner::Emergency(_, c) => {
            // SAFETY: an object of this class (its header and slab say so).
            unsafe { c.free(p) }
        }
        // SAFETY: forwarded caller guarantee; the header says what it is.
        other => unsafe { free_other(ptr, other) },
    }
}

#[cold]
unsafe fn free_other(ptr: *mut u8, owner: Owner) {
    match owner {
        // SAFETY: a live large block (its header says so) with a mapping
        // of len bytes, unused from now on (caller).
        Owner::Large(len) => unsafe { large::free(ptr, len) },
        // SAFETY: the block the aligned pointer is inside, owned alike.
        Owner::Inner(block) => unsafe { free(block) },
        // SAFETY: a live internal block (its header says so).
        Owner::Boot(state, addr) => unsafe { boot::free(ptr, state, addr) },
        Owner::Class(..) | Owner::Emergency(..) => unreachable!("handled by free"),
    }
}

/// `malloc_usable_size`: bytes usable at `ptr` (0 for null).
///
/// # Safety
/// `ptr` is null or a live block of this module.
pub unsafe fn usable_size(ptr: *mut u8) -> usize {
    // SAFETY: forwarded caller guarantee.
    if let Some(i) = unsafe { fast::class(ptr) } {
        return ladder::size(i);
    }
    if ptr.is_null() {
        return 0;
    }
    // SAFETY: forwarded caller guarantee.
    match unsafe { owner("malloc_usable_size", ptr) } {
        Owner::Class(i, _) | Owner::Emergency(i, _) => ladder::size(i),
        Owner::Large(len) => len - LARGE_PREFIX,
        Owner::Inner(block) => {
            // SAFETY: the block is live as ptr is.
            let whole = unsafe { usable_size(block) };
            whole - (ptr as usize - block as usize)
        }
        Owner::Boot(state, addr) => boot::usable(state, addr),
    }
}

/// `realloc`: `ptr` (null: a new block) resized to `size` bytes, in place
/// when the new size fits the block and uses more than half of it (a
/// class object that shrinks to half its class or less, or a mapping,
/// moves; mimalloc keeps blocks by the same rule); otherwise a new block
/// with the old contents, and the old one freed. `None` (the old block
/// untouched) when the OS refuses memory. `size` 0 is served as 1;
/// `malloc`'s `realloc(p, 0)` frees before calling this.
///
/// # Safety
/// `ptr` is null or a live block of this module; on `Some` it is not used
/// afterwards (unless returned).
pub unsafe fn realloc(ptr: *mut u8, size: usize) -> Option<NonNull<u8>> {
    // The common case, a class object: kept when the new size fits it
    // and uses more than half of it (`keeps`), else moved.
    // SAFETY: forwarded caller guarantee.
    if let Some(i) = unsafe { fast::class(ptr) } {
        if keeps(ladder::size(i), size) {
            // SAFETY: ptr is a class object (checked), so not null.
            return Some(unsafe { NonNull::new_unchecked(ptr) });
        }
        let q = alloc(size)?;
        // SAFETY: both blocks are live, distinct, and at least the copied
        // length long.
        unsafe { std::ptr::copy_nonoverlapping(ptr, q.as_ptr(), ladder::size(i).min(size)) };
        // SAFETY: forwarded caller guarantee.
        unsafe { free(ptr) };
        return Some(q);
    }
    let Some(p) = NonNull::new(ptr) else {
        return alloc(size);
    };
    // SAFETY: forwarded caller guarantee.
    let owner = unsafe { owner("realloc", ptr) };
    let (usable, keep) = match owner {
        Owner::Class(i, _) => (ladder::size(i), keeps(ladder::size(i), size)),
        Owner::Large(len) => {
            let u = len - LARGE_PREFIX;
            (u, keeps(u, size))
        }
        Owner::Emergency(i, _) => (ladder::size(i), false),
        // SAFETY: forwarded caller guarantee.
        Owner::Inner(_) => (unsafe { usable_size(ptr) }, false),
        Owner::Boot(state, addr) => (boot::usable(state, addr), false),
    };
    if keep {
        return Some(p);
    }
    if let Owner::Large(len) = owner
        && size > ladder::MAX_CLASS
    {
        // SAFETY: a large block of ours (its header says so), live.
        return unsafe { large::remap(ptr, len, size) };
    }
    let q = alloc(size)?;
    // SAFETY: both blocks are live, distinct, and at least the copied
    // length long.
    unsafe { std::ptr::copy_nonoverlapping(ptr, q.as_ptr(), usable.min(size)) };
    // SAFETY: forwarded caller guarantee.
    unsafe { free(ptr) };
    Some(q)
}

/// Whether [`realloc`] keeps a block of `usable` bytes for `size`: it
/// fits, and more than half of it is used. A class object that grows
/// within its class stays; one that shrinks to a smaller class stays
/// while it is at least half used, which saves the copy and the free of
/// a program that trims its buffers (python's strings and lists do).
#[inline(always)]
fn keeps(usable: usize, size: usize) -> bool {
    size <= usable && size > usable / 2
}

fn check_kmflags(what: &str, kmflags: u32) {
    assert!(
        kmflags & !KM_PUBLIC_MASK == 0,
        "slabscope: {what}: allocation flags {kmflags:#x} have bits outside \
         KM_PUBLIC_MASK ({KM_PUBLIC_MASK:#x}): pass KM_SLEEP or KM_NOSLEEP"
    );
}

/// SPL's `kmem_alloc()`: `size` bytes from the class that fits (16-aligned),
/// or a mapping of their own above [`ladder::MAX_CLASS`]. `KM_SLEEP`
/// requests wait for memory and fail only as the module docs say;
/// `KM_NOSLEEP` ones may return `None`.
///
/// ```
/// use slabscope::{flags, kmem};
/// let p = kmem::kmem_alloc(100, flags::KM_SLEEP).expect("KM_SLEEP");
/// // SAFETY: p is 100 bytes of ours.
/// unsafe { p.as_ptr().write_bytes(7, 100) };
/// // SAFETY: p came from kmem_alloc(100) and is not used again.
/// unsafe { kmem::kmem_free(p, 100) };
/// ```
///
/// # Panics
/// On kmflags outside `KM_PUBLIC_MASK`.
pub fn kmem_alloc(size: usize, kmflags: impl Into<KmFlags>) -> Option<NonNull<u8>> {
    let kmflags = kmflags.into().bits();
    check_kmflags("kmem_alloc", kmflags);
    alloc_flags(size, kmflags)
}

/// SPL's `kmem_zalloc()`: [`kmem_alloc`], zeroed.
///
/// # Panics
/// As [`kmem_alloc`].
pub fn kmem_zalloc(size: usize, kmflags: impl Into<KmFlags>) -> Option<NonNull<u8>> {
    let kmflags = kmflags.into().bits();
    check_kmflags("kmem_zalloc", kmflags);
    if size > ladder::MAX_CLASS {
        return large::alloc(size, true);
    }
    let p = alloc_flags(size, kmflags)?;
    // SAFETY: p is a fresh block of at least size bytes.
    unsafe { p.as_ptr().write_bytes(0, size) };
    Some(p)
}

/// SPL's `kmem_free()`. Aborts with a message when `size` is larger than
/// the block or `ptr` is not a live block of this module.
///
/// # Safety
/// `ptr` came from [`kmem_alloc`] or [`kmem_zalloc`] and is not used
/// afterwards.
pub unsafe fn kmem_free(ptr: NonNull<u8>, size: usize) {
    // SAFETY: forwarded caller guarantee (a bad pointer aborts).
    let usable = unsafe { usable_size(ptr.as_ptr()) };
    if size > usable {
        not_ours(
            "kmem_free",
            ptr.as_ptr(),
            "the size passed is larger than the block: pass the size given to kmem_alloc",
        );
    }
    // SAFETY: forwarded caller guarantee.
    unsafe { free(ptr.as_ptr()) }
}

/// SPL's `vmem_alloc()`: the same as [`kmem_alloc`] here.
///
/// # Panics
/// As [`kmem_alloc`].
pub fn vmem_alloc(size: usize, kmflags: impl Into<KmFlags>) -> Option<NonNull<u8>> {
    kmem_alloc(size, kmflags)
}

/// SPL's `vmem_zalloc()`: the same as [`kmem_zalloc`] here.
///
/// # Panics
/// As [`kmem_alloc`].
pub fn vmem_zalloc(size: usize, kmflags: impl Into<KmFlags>) -> Option<NonNull<u8>> {
    kmem_zalloc(size, kmflags)
}

/// SPL's `vmem_free()`: the same as [`kmem_free`] here.
///
/// # Safety
/// As [`kmem_free`], for a block of [`vmem_alloc`] or [`vmem_zalloc`].
pub unsafe fn vmem_free(ptr: NonNull<u8>, size: usize) {
    // SAFETY: forwarded caller guarantee.
    unsafe { kmem_free(ptr, size) }
}

/// The `kmem_alloc_large` row: blocks above [`ladder::MAX_CLASS`] live now
/// and the bytes their mappings hold (mappings kept for reuse not counted).
pub fn large_stats() -> (u64, u64) {
    let (count, bytes, ..) = large::stats();
    (count, bytes)
}

/// Returns the mappings kept for reuse to the OS (`malloc_trim`); returns
/// their bytes.
pub fn trim() -> u64 {
    large::trim()
}

/// The name of the row of blocks above the largest class.
pub const LARGE_ROW: &str = "kmem_alloc_large";

/// The `kmem_alloc_large` row as the probes and the inspector show a
/// cache, once the classes or a large block exist: live blocks are its
/// allocated objects (`obj_alloc`), live and kept mappings its objects
/// (`obj_total`), the live blocks' mean mapping its object size, and the
/// pages mapped, kept ones included, its slabs (`slab_size` is the page
/// size, so the `/proc` size column, `slab_size * slab_total`, is the
/// bytes mapped). Its id is the address of a static of this module, unique
/// in the process like a cache's.
pub fn large_snapshot() -> Option<slabscope_probes::CacheSnapshot> {
    static ROW_ID: u8 = 0;
    let (count, bytes, kept, kept_bytes, used) = large::stats();
    if STATE.load(Ordering::Acquire) != READY && !used {
        return None;
    }
    let page = os::page_size() as u64;
    let mut s = slabscope_probes::CacheSnapshot::ZERO;
    s.cache_id = &ROW_ID as *const u8 as u64;
    s.name = slabscope_probes::name_buf(LARGE_ROW.as_bytes());
    s.flags = KMC_KVMEM;
    s.obj_align = 16;
    s.obj_size = bytes.checked_div(count).unwrap_or(0);
    s.obj_size_full = s.obj_size;
    s.slab_size = page;
    s.slab_total = (bytes + kept_bytes) / page;
    s.slab_alloc = bytes / page;
    s.obj_total = count + kept;
    s.obj_alloc = count;
    Some(s)
}

/// The page size, for the malloc library's page-aligned calls (`valloc`,
/// `pvalloc`).
pub fn page_size() -> usize {
    os::page_size()
}

/// `malloc_trim`: reaps every cache (magazines flushed, empty slabs
/// unmapped) and unmaps the large mappings kept for reuse ([`trim`]);
/// whether that returned memory to the OS.
pub fn reap_and_trim() -> bool {
    let before = os::mapped_bytes();
    registry::reap();
    let kept = trim();
    kept > 0 || os::mapped_bytes() < before
}

/// The size classes built so far, as `(class, cache)`, smallest first.
pub fn built_classes() -> impl Iterator<Item = (usize, &'static Cache)> {
    (0..ladder::CLASSES).filter_map(|i| class_cache(i).map(|c| (i, c)))
}
