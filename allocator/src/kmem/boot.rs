//! The internal allocator: memory for slabscope itself while the size
//! classes cannot serve it.
//!
//! A program whose `malloc` or `#[global_allocator]` is slabscope asks
//! slabscope for memory while slabscope is building its own size classes
//! (each cache's `Arc`, magazines and name), while a `fork` handler holds
//! every cache lock, and — in the `LD_PRELOAD` library, whose own Rust
//! code uses [`InternalAlloc`] as its global allocator — whenever
//! slabscope's own code allocates. None of that may enter a size class: the
//! class may be the one being built, or its lock may be held by this very
//! thread. So it comes from here: blocks of 32 B to 64 KiB (a power of two
//! each, the object and a 16-byte prefix) carved from 1 MiB chunks of the
//! `os` seam's `mmap`, kept on one free list per size under a spin lock
//! that is held for a few instructions and never across a call that could
//! allocate; larger blocks are mappings of their own. Nothing here calls
//! `malloc`, takes a lock of the caches, or needs thread-local storage.
//!
//! Every block carries the same one-word header as slab objects (right
//! before the object), in a state of its own, so [`super::free`] routes it
//! here from the pointer alone. A `fork` handler holds the lock across
//! `fork()` (see [`super::setup_first`] for the order of the handlers).

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{os, slab};

/// Header state of a block handed out (the low bits: its size class).
pub(super) const BOOT_USED: u16 = 0xb00a;
/// Header state of a block on a free list.
pub(super) const BOOT_FREE: u16 = 0xb00c;
/// Header state of a block that is a mapping of its own (the low bits: the
/// mapping's length).
pub(super) const BOOT_MAPPED: u16 = 0xb00e;

/// Bytes before every object: the header word and one spare word.
const PREFIX: usize = 16;
/// The smallest block, `1 << MIN_SHIFT` bytes.
const MIN_SHIFT: u32 = 5;
/// The largest carved block, `1 << MAX_SHIFT` bytes.
const MAX_SHIFT: u32 = 16;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
/// Bytes of each chunk blocks are carved from.
const CHUNK: usize = 1 << 20;

struct State {
    free: [*mut u8; CLASSES],
    next: usize,
    end: usize,
}

struct Boot {
    lock: AtomicBool,
    state: std::cell::UnsafeCell<State>,
}

// SAFETY: `state` is only touched with `lock` held (see `with`).
unsafe impl Sync for Boot {}

static BOOT: Boot = Boot {
    lock: AtomicBool::new(false),
    state: std::cell::UnsafeCell::new(State {
        free: [ptr::null_mut(); CLASSES],
        next: 0,
        end: 0,
    }),
};

fn lock() {
    let mut spins = 0u32;
    while BOOT
        .lock
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins += 1;
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            // SAFETY: sched_yield has no preconditions and does not allocate.
            unsafe { libc::sched_yield() };
        }
    }
}

fn unlock() {
    BOOT.lock.store(false, Ordering::Release);
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    lock();
    // SAFETY: the lock is held, so this is the only reference to the state.
    let r = f(unsafe { &mut *BOOT.state.get() });
    unlock();
    r
}

/// `fork` handlers: the lock is held across `fork()` so the child never
/// finds it held by a thread it does not have.
pub(super) extern "C" fn fork_prepare() {
    lock();
}

/// See [`fork_prepare`]; in the parent and the child alike.
pub(super) extern "C" fn fork_release() {
    unlock();
}

fn class_of(total: usize) -> u32 {
    total.next_power_of_two().trailing_zeros().max(MIN_SHIFT)
}

/// `size` bytes aligned to 16 (smaller alignments are implied). `None` when
/// the OS refuses memory.
pub(super) fn alloc(size: usize) -> Option<NonNull<u8>> {
    alloc_block(size, false)
}

/// [`alloc`], zero-filled. Only a block that was used before is written:
/// one carved from a chunk, or a mapping of its own, is still as the
/// kernel zero-filled it, so its pages stay untouched until used (what
/// lets a cache's magazines cost nothing for slots never filled).
pub(super) fn alloc_zeroed(size: usize) -> Option<NonNull<u8>> {
    alloc_block(size, true)
}

fn alloc_block(size: usize, zero: bool) -> Option<NonNull<u8>> {
    let total = size.checked_add(PREFIX)?;
    if total > 1 << MAX_SHIFT {
        return alloc_mapped(total);
    }
    let k = class_of(total);
    let i = (k - MIN_SHIFT) as usize;
    let (block, reused) = with(|s| {
        let b = s.free[i];
        if !b.is_null() {
            // A free block's first object word links the list.
            let link = b.wrapping_add(PREFIX).cast::<*mut u8>();
            // SAFETY: b is a free block of ours, at least 32 bytes.
            s.free[i] = unsafe { link.read() };
            return Some((b, true));
        }
        let len = 1usize << k;
        if s.end - s.next < len {
            // The chunk's tail (less than one block) is left unused.
            let c = os::mmap_anon(CHUNK)?;
            s.next = c.as_ptr() as usize;
            s.end = s.next + CHUNK;
        }
        let b = ptr::with_exposed_provenance_mut::<u8>(s.next);
        s.next += len;
        Some((b, false))
    })?;
    // SAFETY: the block is 1 << k >= 32 bytes of ours, 16-aligned, so the
    // object is inside it and its header word is the block's second word.
    let obj = unsafe { block.add(PREFIX) };
    if zero && reused {
        // SAFETY: the object's 1 << k - PREFIX >= size bytes are ours.
        unsafe { obj.write_bytes(0, size) };
    }
    // SAFETY: as above.
    unsafe { slab::set_foreign_header(obj, k as usize, BOOT_USED) };
    NonNull::new(obj)
}

#[cold]
fn alloc_mapped(total: usize) -> Option<NonNull<u8>> {
    let len = total.checked_next_multiple_of(os::page_size())?;
    let base = os::mmap_anon(len)?;
    // SAFETY: the mapping is len >= PREFIX bytes.
    let obj = unsafe { base.as_ptr().add(PREFIX) };
    // SAFETY: the header word is the mapping's second word.
    unsafe { slab::set_foreign_header(obj, len, BOOT_MAPPED) };
    NonNull::new(obj)
}

/// Bytes usable at `obj`, a block of this allocator in state `state` whose
/// header names `addr`.
pub(super) fn usable(state: u16, addr: usize) -> usize {
    match state {
        BOOT_USED => (1 << addr) - PREFIX,
        _ => addr - PREFIX,
    }
}

/// Returns a block. The caller read `state` and `addr` from its header and
/// checked that `state` is [`BOOT_USED`] or [`BOOT_MAPPED`].
///
/// # Safety
/// `obj` is a live block of this allocator, not used afterwards.
pub(super) unsafe fn free(obj: *mut u8, state: u16, addr: usize) {
    if state == BOOT_MAPPED {
        let base = obj.wrapping_sub(PREFIX);
        // SAFETY: the block is a mapping of `addr` bytes starting PREFIX
        // before obj (caller), unused from now on.
        unsafe { os::munmap_range(base, addr) };
        return;
    }
    let i = (addr as u32 - MIN_SHIFT) as usize;
    // SAFETY: obj is a live block (caller): its header is writable.
    unsafe { slab::set_foreign_header(obj, addr, BOOT_FREE) };
    with(|s| {
        // SAFETY: the object's first word is ours (>= 16 bytes) and links
        // the free list from now on.
        unsafe { obj.cast::<*mut u8>().write(s.free[i]) };
        // SAFETY: obj is PREFIX bytes into its block.
        s.free[i] = unsafe { obj.sub(PREFIX) };
    });
}

/// The internal allocator as a global allocator: the `LD_PRELOAD` library
/// declares it its `#[global_allocator]`, so slabscope's own `Vec`s,
/// `Arc`s and threads never enter the size classes they serve.
/// Alignments above 16 take an over-sized block, as `aligned_alloc` does.
#[derive(Debug, Default, Clone, Copy)]
pub struct InternalAlloc;

// SAFETY: blocks are at least `layout.size()` bytes, aligned as asked
// (`super::aligned_with`), and stay valid until freed through the header
// dispatch of `super::free`, which routes them back here.
unsafe impl GlobalAlloc for InternalAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        super::aligned_with(layout.size(), layout.align(), alloc)
            .map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        super::aligned_with(layout.size(), layout.align(), alloc_zeroed)
            .map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: ptr came from alloc above (GlobalAlloc contract).
        unsafe { super::free(ptr) };
    }
}
