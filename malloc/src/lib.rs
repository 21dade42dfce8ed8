//! slabscope as a program's `malloc`: `libslabscope_malloc.so` and `.a`.
//!
//! ```sh
//! LD_PRELOAD=target/release/libslabscope_malloc.so python3 script.py
//! sudo slabscope --pid "$(pgrep -n python3)"   # its kmem_alloc_* classes
//! ```
//!
//! or link with `-lslabscope_malloc`. Every block comes from slabscope's
//! `kmem_alloc_<size>` size classes or, above 128 KiB, from a mapping of
//! its own (the `kmem_alloc_large` row); see `slabscope::kmem`.
//!
//! # What is exported, and what is not
//!
//! `malloc`, `free`, `calloc`, `realloc`, `reallocarray`, `posix_memalign`,
//! `aligned_alloc`, `memalign`, `valloc`, `pvalloc`, `malloc_usable_size`
//! and `malloc_trim` (which reaps every cache: empty slabs go back to the
//! OS). glibc's `mallopt`, `mallinfo`, `mallinfo2`, `malloc_info` and
//! `malloc_stats` are not replaced: they still answer for glibc's own heap,
//! which no longer serves the program (none of python3, sqlite3 and
//! redis-server imports them; `sudo slabscope --pid` is how to see this
//! heap). `__libc_malloc` and friends are glibc's internal names, which
//! glibc itself no longer calls for the program's blocks.
//!
//! # Behaviour at the edges, as glibc
//!
//! - `malloc(0)` returns a unique block (of 16 usable bytes); `free(NULL)`
//!   does nothing.
//! - `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and
//!   returns NULL.
//! - `calloc` and `reallocarray` whose product overflows, and requests no
//!   mapping can hold, return NULL with `errno` `ENOMEM`.
//! - `posix_memalign` returns `EINVAL` for an alignment that is not a
//!   power of two multiple of `sizeof(void *)`; `aligned_alloc` and
//!   `memalign` return NULL with `EINVAL` for one that is not a power of two.
//! - `free` of a pointer slabscope did not hand out (from another
//!   allocator, or not the start of a block) and double frees print
//!   `slabscope: free(0x...): ...` and abort, where glibc would usually
//!   corrupt its heap first.
//! - A single-threaded program stays single-threaded, as on glibc:
//!   slabscope's statistics publisher waits for the program's own first
//!   thread and runs from its allocations until then (see
//!   `slabscope::background` in the allocator), so
//!   `unshare(CLONE_NEWUSER)`, which needs one thread, still works.
//!
//! # The library's own allocations
//!
//! slabscope's own Rust code (cache creation, the registry, the reaper and
//! statistics threads, the probes' snapshots) allocates too; here its
//! global allocator is slabscope's internal allocator
//! ([`slabscope::kmem::InternalAlloc`]), so none of it re-enters the size
//! classes it serves, and no lock slabscope holds is ever wanted again by
//! an allocation it makes.

use std::ffi::{c_int, c_void};
use std::ptr::{self, NonNull};

use slabscope::kmem;

#[global_allocator]
static INTERNAL: kmem::InternalAlloc = kmem::InternalAlloc;

fn set_errno(e: c_int) {
    // SAFETY: __errno_location has no preconditions.
    let slot = unsafe { libc::__errno_location() };
    // SAFETY: it points at this thread's errno.
    unsafe { *slot = e };
}

fn out(p: Option<NonNull<u8>>) -> *mut c_void {
    match p {
        Some(p) => p.as_ptr().cast(),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

// `malloc` and `free` run their magazine hit without a call and reach
// every other path by a jump: each slow path is a `#[cold]` `extern "C"`
// function called in tail position, so the hit needs no stack frame.
// `extern "C"` because a Rust function may unwind, and a call that may
// unwind out of an `extern "C"` function (which aborts instead) cannot be
// a jump: it needs the abort's landing pad, and with it a frame on every
// path. These abort on a panic themselves, as the exported functions do.

/// `malloc`.
#[unsafe(no_mangle)]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    match kmem::alloc_hit(size) {
        Some(p) => p.as_ptr().cast(),
        None => malloc_miss(size),
    }
}

/// [`malloc`] past the magazine hit: the class's refill or grow, a large
/// block, or the classes' construction; errno on failure.
#[cold]
#[inline(never)]
extern "C" fn malloc_miss(size: usize) -> *mut c_void {
    out(kmem::alloc(size))
}

/// `free`.
///
/// # Safety
/// `ptr` is NULL or a live block of this library, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: forwarded caller guarantee (a foreign pointer is detected,
    // not dereferenced).
    match unsafe { kmem::free_hit(ptr.cast()) } {
        kmem::FreeHit::Pushed => {}
        // SAFETY: refused by free_hit after it checked and marked ptr.
        kmem::FreeHit::Refused { class } => unsafe { free_refused(class, ptr) },
        // SAFETY: forwarded caller guarantee; free_hit left it alone.
        kmem::FreeHit::Miss => unsafe { free_miss(ptr) },
    }
}

/// [`free`] of a class object whose magazine had no room.
///
/// # Safety
/// As [`kmem::free_refused`].
#[cold]
#[inline(never)]
unsafe extern "C" fn free_refused(class: usize, ptr: *mut c_void) {
    // SAFETY: forwarded caller guarantee.
    unsafe { kmem::free_refused(class, ptr.cast()) }
}

/// [`free`] of everything its hit does not take: NULL, large and internal
/// blocks, and every pointer that is not a live block of ours (which
/// aborts with a message).
///
/// # Safety
/// As [`kmem::free_miss`].
#[cold]
#[inline(never)]
unsafe extern "C" fn free_miss(ptr: *mut c_void) {
    // SAFETY: forwarded caller guarantee.
    unsafe { kmem::free_miss(ptr.cast()) }
}

/// `calloc`: zeroed; fresh mappings are not written again.
#[unsafe(no_mangle)]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(total) => out(kmem::zalloc(total)),
        None => out(None),
    }
}

/// `realloc`.
///
/// # Safety
/// `ptr` is NULL or a live block of this library; after a non-NULL
/// return (or a NULL return with `size` 0) it is not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    if size == 0 && !ptr.is_null() {
        // SAFETY: forwarded caller guarantee.
        unsafe { kmem::free(ptr.cast()) };
        return ptr::null_mut();
    }
    // SAFETY: forwarded caller guarantee.
    out(unsafe { kmem::realloc(ptr.cast(), size) })
}

/// `reallocarray`: `realloc(ptr, n * size)`, or NULL with `ENOMEM` (and
/// `ptr` untouched) when the product overflows.
///
/// # Safety
/// As [`realloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarded caller guarantee.
        Some(total) => unsafe { realloc(ptr, total) },
        None => out(None),
    }
}

fn aligned(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    out(kmem::alloc_aligned(size, align))
}

/// `posix_memalign`: 0, `EINVAL` (bad alignment) or `ENOMEM`; `*out` is
/// set only on success.
///
/// # Safety
/// `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || !align.is_multiple_of(size_of::<*mut c_void>()) {
        return libc::EINVAL;
    }
    match kmem::alloc_aligned(size, align) {
        Some(p) => {
            // SAFETY: forwarded caller guarantee.
            unsafe { *out = p.as_ptr().cast() };
            0
        }
        None => libc::ENOMEM,
    }
}

/// `aligned_alloc` (C11; like glibc, any size is accepted).
#[unsafe(no_mangle)]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    aligned(align, size)
}

/// `memalign`.
#[unsafe(no_mangle)]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    aligned(align, size)
}

/// `valloc`: page aligned.
#[unsafe(no_mangle)]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    aligned(page(), size)
}

/// `pvalloc`: page aligned, the size rounded up to whole pages.
#[unsafe(no_mangle)]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let p = page();
    match size.max(1).checked_next_multiple_of(p) {
        Some(s) => aligned(p, s),
        None => out(None),
    }
}

fn page() -> usize {
    kmem::page_size()
}

/// `malloc_usable_size`: bytes usable at `ptr` (0 for NULL).
///
/// # Safety
/// `ptr` is NULL or a live block of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    // SAFETY: forwarded caller guarantee.
    unsafe { kmem::usable_size(ptr.cast()) }
}

/// `malloc_trim`: reaps every cache (magazines flushed, empty slabs
/// unmapped) and unmaps the large mappings kept for reuse; returns 1 when
/// memory went back to the OS, as glibc does.
#[unsafe(no_mangle)]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    c_int::from(kmem::reap_and_trim())
}
