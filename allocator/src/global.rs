//! slabscope as a Rust program's global allocator: every `Box`, `Vec` and
//! `String` on the `kmem_alloc_*` size classes (see [`crate::kmem`]), so
//! `sudo slabscope --pid N` and the bpftrace one-liners show the program's
//! heap by size class, with no other change to the program.
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: slabscope::SlabscopeAlloc = slabscope::SlabscopeAlloc;
//!
//! fn main() {
//!     let v: Vec<u64> = (0..1000).collect(); // from kmem_alloc_8192
//!     println!("{}", v.iter().sum::<u64>());
//! }
//! ```
//!
//! Alignments up to 16 cost nothing; larger ones take a block `align`
//! bytes larger. `realloc` stays in place while the new size fits the
//! block and uses more than half of it. While a `fork` is in progress,
//! slabscope's own `fork` handler (which holds every cache lock) is
//! served by the internal allocator.
//!
//! slabscope's own allocations come back to the classes too, so nothing
//! slabscope does may allocate while it holds a lock an allocation can
//! need: the classes are built before anything is served from them, a
//! depot's vector is sized when its cache is built, and the `fork` handler
//! is served apart (see [`crate::kmem`] for the rare paths that remain).
//! The classes are built at the program's first allocation, before
//! `main`, and that fixes the tunables (see [`crate::tunables`]): a
//! program on this allocator sets them with `SLABSCOPE_*` environment
//! variables; [`tunables::set`](crate::tunables::set) in `main` is too late
//! and returns [`Error::TunablesFrozen`](crate::Error::TunablesFrozen).
//!
//! One diagnostic breaks the rule: [`Cache::validate`](crate::Cache::validate)
//! allocates while it holds every lock of the cache it checks, so it must
//! not check a size class of the allocator it runs on.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::{self, NonNull};
use std::sync::atomic::Ordering;

use crate::kmem;

/// The global allocator on slabscope's size classes.
#[derive(Debug, Default, Clone, Copy)]
pub struct SlabscopeAlloc;

// SAFETY: blocks are at least `layout.size()` bytes and aligned as asked
// (kmem's classes and mappings are 16-aligned, `alloc_aligned` handles
// more), live until `dealloc`, and `realloc` keeps the contents up to the
// smaller size.
unsafe impl GlobalAlloc for SlabscopeAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if kmem::FORKING.load(Ordering::Relaxed) {
            return forking(layout);
        }
        kmem::build_all();
        let p = if layout.align() <= 16 {
            kmem::alloc(layout.size())
        } else {
            kmem::alloc_aligned(layout.size(), layout.align())
        };
        p.map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: ptr came from this allocator (GlobalAlloc contract).
        unsafe { kmem::free(ptr) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !kmem::FORKING.load(Ordering::Relaxed) {
            kmem::build_all();
            let p = if layout.align() <= 16 {
                kmem::zalloc(layout.size())
            } else {
                kmem::zalloc_aligned(layout.size(), layout.align())
            };
            return p.map_or(ptr::null_mut(), NonNull::as_ptr);
        }
        // SAFETY: forwarded caller guarantee.
        let p = unsafe { self.alloc(layout) };
        if !p.is_null() {
            // SAFETY: p is a fresh block of layout.size() bytes.
            unsafe { p.write_bytes(0, layout.size()) };
        }
        p
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= 16 && !kmem::FORKING.load(Ordering::Relaxed) {
            kmem::build_all();
            // SAFETY: ptr is a live block of this allocator (caller).
            return unsafe { kmem::realloc(ptr, new_size) }
                .map_or(ptr::null_mut(), NonNull::as_ptr);
        }
        // SAFETY: the new layout is valid (GlobalAlloc::realloc contract).
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: forwarded caller guarantee.
        let q = unsafe { self.alloc(new) };
        if !q.is_null() {
            // SAFETY: both blocks are live and at least the copied length.
            unsafe { ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size)) };
            // SAFETY: ptr is not used after a successful realloc.
            unsafe { self.dealloc(ptr, layout) };
        }
        q
    }
}

#[cold]
fn forking(layout: Layout) -> *mut u8 {
    kmem::alloc_internal(layout.size(), layout.align()).map_or(ptr::null_mut(), NonNull::as_ptr)
}
