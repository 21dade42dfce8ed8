//! The trait every allocator under test implements, and the raw object
//! pointer most of them hand out. At the bottom of the bench: the
//! contenders (`contenders`, `slab`) implement it and the workloads drive
//! it, so neither needs the other.

use std::ptr::NonNull;

/// One allocator under test, bound to one object size.
pub trait Contender: Sync {
    /// What an allocation hands out and a free takes back.
    type Obj<'a>: Send
    where
        Self: 'a;

    /// Allocate one object (never fails: an allocator that runs out aborts the bench).
    fn alloc(&self) -> Self::Obj<'_>;

    /// Give one object back.
    fn free<'a>(&'a self, obj: Self::Obj<'a>);

    /// The object's first byte, written by the workloads so that every
    /// contender hands out memory that is really usable.
    fn addr(obj: &mut Self::Obj<'_>) -> *mut u8;

    /// Hand free memory back to the system the way this allocator offers it
    /// (slabscope: `reap_now`; glibc: `malloc_trim`; jemalloc: purge every
    /// arena; mimalloc: `mi_collect(true)`; tcmalloc:
    /// `MallocExtension_ReleaseFreeMemory`). Returns what was called.
    fn release(&self) -> &'static str;

    /// The cache's counters, for slabscope; peers have none.
    fn slab_stats(&self) -> Option<slabscope::stats::CacheStats> {
        None
    }
}

/// A raw object pointer that may cross threads (producer/consumer).
#[derive(Debug)]
pub struct Ptr(pub NonNull<u8>);

// SAFETY: the pointer is to heap memory that any thread may use and free; the
// workloads hand each object to exactly one thread at a time.
unsafe impl Send for Ptr {}
