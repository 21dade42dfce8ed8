//! The C ABI: SPL's `kmem_cache_*` names, signatures and flag values,
//! declared in `include/slabscope.h`, built into `libslabscope.so` and
//! `libslabscope.a`.
//!
//! | function | SPL | difference |
//! |---|---|---|
//! | `kmem_cache_create(name, size, align, ctor, dtor, reclaim, priv, vmp, flags)` | `spl_kmem_cache_create` | returns NULL on bad arguments (SPL `VERIFY`s); `reclaim` and `vmp` must be NULL |
//! | `kmem_cache_destroy(cache)` | `spl_kmem_cache_destroy` (void) | returns `int`: 0, or `-EBUSY` while objects are allocated (the cache stays valid and nothing is freed) |
//! | `kmem_cache_alloc(cache, kmflags)` | `spl_kmem_cache_alloc` | NULL on kmflags outside `KM_PUBLIC_MASK` |
//! | `kmem_cache_free(cache, obj)` | `spl_kmem_cache_free` | NULL `obj` is a no-op; an object with a NULL or destroyed cache is a bad free (see below) |
//! | `kmem_cache_reap_now(cache)`, `kmem_reap()` | same | |
//! | `kmem_cache_inuse(cache)`, `kmem_cache_entry_size(cache)` | same | |
//! | `kmem_cache_set_move(cache, move)` | same | accepted and ignored, as in SPL |
//!
//! slabscope additions: `slabscope_last_error()`, `slabscope_cache_snapshot()`
//! and `slabscope_proc_slab()`.
//!
//! # Errors
//!
//! A failing call returns NULL (or a negative errno), sets `errno` (`EINVAL`
//! for bad arguments, `ENOSPC` for objects too large, `EBUSY` for destroy
//! with objects allocated) and records a message that
//! `slabscope_last_error()` returns: a NUL-terminated string owned by the
//! calling thread, valid until that thread's next failing slabscope call.
//! With no failure yet it returns an empty string, never NULL.
//!
//! A constructor returns 0 on success (the illumos convention); non-zero
//! makes `kmem_cache_alloc` return NULL. `priv` is passed to the constructor
//! and destructor from whichever thread allocates or frees, so it must be
//! safe to use from any thread.
//!
//! A cache pointer is the cache id the probes report.
//!
//! # Misuse
//!
//! `kmem_cache_free(NULL, obj)` (or a free into a destroyed cache) cannot
//! return the object anywhere: it is lost. It is a bad free, and the debug
//! checks of the cache that handed the object out decide what follows,
//! as they do for other bad frees: that cache is found from the object's
//! header (read only where slabscope mapped it) and named in the message.
//! A debug cache (the default) prints the message on stderr and calls
//! `abort()`; a `KMC_NODEBUG` cache sets `errno` to `EINVAL` and records
//! the message for `slabscope_last_error()`. An object no live cache
//! handed out (a foreign pointer, one already freed) has no cache to turn
//! the checks off: it aborts.
//!
//! A destroyed cache's struct is never freed: `kmem_cache_destroy` returns
//! its slabs to the OS but keeps the struct (a few KiB, its magazine arrays
//! included), so the pointer stays readable and every later call through it
//! is caught: alloc returns NULL, destroy `-EINVAL`, snapshot `-EINVAL`, each
//! with `errno` and a message saying the cache was destroyed; free is a bad
//! free; reap is a no-op and inuse/entry size return 0. It also means a
//! C cache's id is never reused by a later cache. Not caught: a pointer that
//! was never a cache (it is read as one: every entry point but alloc and
//! free checks its alignment and magic first, which catches some; alloc and
//! free read only its flags, to keep their cost to one load), and a call
//! racing with the destroy on another thread.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::mem::ManuallyDrop;
use std::ptr::{self, NonNull};

use slabscope_probes::CacheSnapshot;
use slabscope_probes::flags::{KM_PUBLIC_MASK, KMC_NODEBUG};
use slabscope_rs::raw::{self, FreeHit};
use slabscope_rs::{Cache, CacheBuilder, Error};

// `kmem_alloc`, `vmem_alloc` and their frees.
mod kmem;
pub use kmem::{kmem_alloc, kmem_free, kmem_zalloc, vmem_alloc, vmem_free, vmem_zalloc};

/// Opaque cache type of the C ABI (`kmem_cache_t`).
#[repr(C)]
#[derive(Debug)]
pub struct KmemCache {
    _opaque: [u8; 0],
}

/// `spl_kmem_ctor_t`.
pub type SplCtor =
    Option<unsafe extern "C" fn(obj: *mut c_void, priv_: *mut c_void, kmflags: c_int) -> c_int>;
/// `spl_kmem_dtor_t`.
pub type SplDtor = Option<unsafe extern "C" fn(obj: *mut c_void, priv_: *mut c_void)>;
/// The reclaim callback (must be NULL).
pub type SplReclaim = Option<unsafe extern "C" fn(priv_: *mut c_void)>;
/// The move callback of `kmem_cache_set_move` (ignored).
pub type SplMove = Option<
    unsafe extern "C" fn(
        old: *mut c_void,
        new: *mut c_void,
        size: usize,
        priv_: *mut c_void,
    ) -> c_int,
>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn fail(errno: c_int, msg: &str) {
    let msg = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = msg);
    // SAFETY: __errno_location has no preconditions.
    let slot = unsafe { libc::__errno_location() };
    // SAFETY: it points at this thread's errno.
    unsafe { *slot = errno };
}

fn errno_of(e: &Error) -> c_int {
    match e {
        Error::TooLarge { .. } => libc::ENOSPC,
        Error::Busy { .. } => libc::EBUSY,
        _ => libc::EINVAL,
    }
}

/// The message of this thread's last failing slabscope call ("" if none).
#[unsafe(no_mangle)]
pub extern "C" fn slabscope_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// `priv` of a C cache, shared with the callbacks on any thread.
#[derive(Clone, Copy)]
struct Priv(*mut c_void);
// SAFETY: the C caller promises `priv` may be used from any thread (module docs).
unsafe impl Send for Priv {}
// SAFETY: as above.
unsafe impl Sync for Priv {}

/// Why a C cache pointer cannot be used. Small and without data, so the
/// checks cost the alloc and free paths nothing but the loads.
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
enum Misuse {
    Null,
    /// `kmem_cache_destroy` returned 0 for it (its struct is kept).
    Destroyed,
    /// Its magic is not a cache's.
    NotACache,
}

impl Misuse {
    /// What went wrong, after `what: ` (the function called).
    #[cold]
    fn message(self, what: &str, c: *mut KmemCache) -> String {
        match self {
            Misuse::Null => format!("{what}: NULL cache: pass a cache from kmem_cache_create"),
            Misuse::Destroyed => {
                let name = NonNull::new(c.cast::<c_void>()).map(|p| {
                    // SAFETY: `borrow` found a destroyed cache at c, whose
                    // struct is kept for good.
                    unsafe { as_cache(p) }.name().to_owned()
                });
                format!(
                    "{what}: cache {:?} ({c:p}) was destroyed: a cache pointer is dead \
                     once kmem_cache_destroy returns 0",
                    name.unwrap_or_default()
                )
            }
            Misuse::NotACache => {
                format!("{what}: {c:p} is not a cache from kmem_cache_create (its magic is wrong)")
            }
        }
    }
}

/// The cache at a pointer from `kmem_cache_create`, without touching its
/// reference count.
///
/// # Safety
/// `c` came from [`Cache::into_raw`] in `kmem_cache_create`; that reference
/// is never released (`kmem_cache_destroy` keeps it).
#[inline(always)]
unsafe fn as_cache(c: NonNull<c_void>) -> ManuallyDrop<Cache> {
    // SAFETY: caller guarantee; ManuallyDrop keeps the reference.
    ManuallyDrop::new(unsafe { Cache::from_raw(c) })
}

/// Borrows the cache behind a C pointer without touching its reference
/// count; refuses NULL, a destroyed cache and a struct without a cache's
/// magic.
///
/// # Safety
/// `c` is NULL or a pointer from `kmem_cache_create` (destroyed or not:
/// destroyed caches' structs are kept, see the module docs).
#[inline(always)]
unsafe fn borrow(c: *mut KmemCache) -> Result<ManuallyDrop<Cache>, Misuse> {
    let Some(p) = NonNull::new(c.cast::<c_void>()) else {
        return Err(Misuse::Null);
    };
    // SAFETY: c came from kmem_cache_create, whose struct is never freed
    // (the check refuses a misaligned pointer before reading).
    if !unsafe { raw::is_cache(p) } {
        return Err(Misuse::NotACache);
    }
    // SAFETY: c came from kmem_cache_create (caller) and carries its magic.
    let cache = unsafe { as_cache(p) };
    if cache.is_destroyed() {
        return Err(Misuse::Destroyed);
    }
    Ok(cache)
}

/// `kmem_cache_free` through a pointer `borrow` refused: the object is lost
/// (module docs, "Misuse").
#[cold]
#[inline(never)]
extern "C" fn free_misused(m: Misuse, cache: *mut KmemCache, obj: NonNull<u8>) {
    let mut msg = m.message(&format!("kmem_cache_free of {obj:p}"), cache);
    // SAFETY: owner_of reads only memory slabscope mapped.
    let checks = match unsafe { raw::owner_of(obj) } {
        Some((name, flags)) => {
            msg.push_str(&format!(" (it is an object of cache {name:?})"));
            flags & KMC_NODEBUG == 0
        }
        None => {
            msg.push_str(" (no live cache handed it out)");
            true
        }
    };
    lost_object(checks, &msg);
}

/// A free that cannot return its object: with `abort` (the object's cache
/// has debug checks) as the debug checks treat a bad free, else `errno`
/// and the message.
#[cold]
fn lost_object(abort: bool, msg: &str) {
    if abort {
        eprintln!(
            "slabscope: {msg}. Aborting: the object is lost. Pass the cache the object was \
             allocated from; run under a debugger to find the caller."
        );
        std::process::abort();
    }
    fail(libc::EINVAL, &format!("{msg}: the object is lost"));
}

/// `kmem_cache_create`: see the module docs.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string; `ctor`/`dtor` are NULL or valid
/// functions that accept `priv_` from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kmem_cache_create(
    name: *const c_char,
    size: usize,
    align: usize,
    ctor: SplCtor,
    dtor: SplDtor,
    reclaim: SplReclaim,
    priv_: *mut c_void,
    vmp: *mut c_void,
    flags: c_int,
) -> *mut KmemCache {
    let name = if name.is_null() {
        String::new()
    } else {
        // SAFETY: caller passes a NUL-terminated string.
        match unsafe { CStr::from_ptr(name) }.to_str() {
            Ok(s) => s.to_owned(),
            Err(_) => {
                fail(libc::EINVAL, &Error::NameNotUtf8.to_string());
                return ptr::null_mut();
            }
        }
    };
    for (set, what) in [
        (reclaim.is_some(), "reclaim callback"),
        (!vmp.is_null(), "vmp"),
    ] {
        if set {
            let e = Error::Unsupported { name, what };
            fail(errno_of(&e), &e.to_string());
            return ptr::null_mut();
        }
    }
    let p = Priv(priv_);
    let mut b = CacheBuilder::new(name, size)
        .align(align)
        .flags(u64::from(flags as u32));
    if let Some(ctor) = ctor {
        b = b.ctor(move |obj: NonNull<u8>, kmflags: u32| {
            let p = p;
            // SAFETY: the C caller supplied a valid constructor for its objects.
            unsafe { ctor(obj.as_ptr().cast(), p.0, kmflags as c_int) == 0 }
        });
    }
    if let Some(dtor) = dtor {
        b = b.dtor(move |obj: NonNull<u8>| {
            let p = p;
            // SAFETY: the C caller supplied a valid destructor for its objects.
            unsafe { dtor(obj.as_ptr().cast(), p.0) }
        });
    }
    match b.build() {
        Ok(c) => c.into_raw().as_ptr().cast::<KmemCache>(),
        Err(e) => {
            fail(errno_of(&e), &e.to_string());
            ptr::null_mut()
        }
    }
}

/// `kmem_cache_destroy`: 0, or `-EBUSY` (objects still allocated; nothing
/// freed, the cache stays valid), or `-EINVAL` for NULL.
///
/// # Safety
/// `cache` is NULL or a pointer from `kmem_cache_create`; after a 0 return
/// it is dead (later calls through it are reported, see "Misuse").
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kmem_cache_destroy(cache: *mut KmemCache) -> c_int {
    // SAFETY: forwarded caller guarantee.
    let c = match unsafe { borrow(cache) } {
        Ok(c) => c,
        Err(m) => {
            fail(libc::EINVAL, &m.message("kmem_cache_destroy", cache));
            return -libc::EINVAL;
        }
    };
    match c.destroy() {
        // The reference kmem_cache_create handed out stays: the struct
        // outlives the destroy so later calls through the pointer are
        // caught rather than read freed memory (module docs, Misuse).
        Ok(()) => 0,
        Err(e) => {
            let errno = errno_of(&e);
            fail(errno, &e.to_string());
            -errno
        }
    }
}

// The exported alloc and free run their magazine hit without a call and
// reach every other path by a jump: each slow path is a `#[cold]`
// `extern "C"` function called in tail position. `extern "C"` because a
// Rust function may unwind, and a call that may unwind out of an
// `extern "C"` function (which aborts instead) cannot be a jump: it needs
// the abort's landing pad, and with it a stack frame on every path, the
// hit's included. These functions abort on a panic themselves, as the
// exported ones did.

/// `kmem_cache_alloc`: an object, or NULL (KM_NOSLEEP with nothing free,
/// constructor failure, bad kmflags).
///
/// # Safety
/// `cache` is NULL or a pointer from `kmem_cache_create` (a destroyed one
/// is reported).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kmem_cache_alloc(cache: *mut KmemCache, kmflags: c_int) -> *mut c_void {
    // The misuse checks cost a live cache one load from the line the hit
    // reads anyway, not the magic and alignment checks of `borrow` (about
    // 2 ns per alloc and free pair when measured with them); a cache whose
    // destroy has begun takes every check, out of line.
    let Some(p) = NonNull::new(cache.cast::<c_void>()) else {
        return alloc_misused(Misuse::Null, cache);
    };
    // SAFETY: cache came from kmem_cache_create, whose struct is never freed.
    if unsafe { raw::destroy_begun(p) } {
        // SAFETY: forwarded caller guarantee.
        return unsafe { alloc_checked(cache, kmflags) };
    }
    if kmflags as u32 & !KM_PUBLIC_MASK != 0 {
        return bad_kmflags(p, kmflags);
    }
    // SAFETY: as in `borrow`; its destroy has not begun.
    match unsafe { raw::alloc_hit(p) } {
        Some(obj) => obj.as_ptr().cast(),
        // SAFETY: as above.
        None => unsafe { alloc_miss(p, kmflags) },
    }
}

/// [`kmem_cache_alloc`] past the magazine hit, on a live cache with good
/// `kmflags`.
///
/// # Safety
/// As [`as_cache`].
#[cold]
#[inline(never)]
unsafe extern "C" fn alloc_miss(p: NonNull<c_void>, kmflags: c_int) -> *mut c_void {
    // SAFETY: forwarded caller guarantee.
    let c = unsafe { as_cache(p) };
    alloc_from(&c, kmflags)
}

/// `kmem_cache_alloc` through a pointer `borrow` refused: errno, message,
/// NULL.
#[cold]
#[inline(never)]
extern "C" fn alloc_misused(m: Misuse, cache: *mut KmemCache) -> *mut c_void {
    fail(libc::EINVAL, &m.message("kmem_cache_alloc", cache));
    opaque_null()
}

/// NULL, in a way the optimizer cannot see through. A slow path whose
/// return value it knows is called, not jumped to (the caller sets the
/// constant itself after the call), and that call then needs a stack
/// frame on every path of the exported function, the hit included.
#[inline(always)]
fn opaque_null() -> *mut c_void {
    std::hint::black_box(ptr::null_mut())
}

/// [`kmem_cache_alloc`] on a cache whose destroy has begun: every check of
/// [`borrow`] (it may still be live: the destroy may have returned `Busy`).
///
/// # Safety
/// As [`borrow`].
#[cold]
#[inline(never)]
unsafe extern "C" fn alloc_checked(cache: *mut KmemCache, kmflags: c_int) -> *mut c_void {
    // SAFETY: forwarded caller guarantee.
    match unsafe { borrow(cache) } {
        Ok(c) => {
            let kmflags_ok = kmflags as u32 & !KM_PUBLIC_MASK == 0;
            if kmflags_ok {
                alloc_from(&c, kmflags)
            } else {
                bad_kmflags_of(c.name(), kmflags)
            }
        }
        Err(m) => alloc_misused(m, cache),
    }
}

/// The allocation, on a cache found usable, with good `kmflags`.
#[inline(always)]
fn alloc_from(c: &Cache, kmflags: c_int) -> *mut c_void {
    c.alloc(kmflags as u32)
        .map_or(ptr::null_mut(), |p| p.as_ptr().cast())
}

/// [`kmem_cache_alloc`]'s caller error of a live cache (bad `kmflags`).
#[cold]
#[inline(never)]
extern "C" fn bad_kmflags(p: NonNull<c_void>, kmflags: c_int) -> *mut c_void {
    // SAFETY: kmem_cache_alloc's caller passed a cache from
    // kmem_cache_create, whose struct is never freed.
    let c = unsafe { as_cache(p) };
    bad_kmflags_of(c.name(), kmflags)
}

/// errno and the message of a bad `kmflags`, NULL.
#[cold]
fn bad_kmflags_of(name: &str, kmflags: c_int) -> *mut c_void {
    fail(
        libc::EINVAL,
        &format!(
            "kmem_cache_alloc: cache {name:?}: kmflags {:#x} have bits outside KM_PUBLIC_MASK: \
             pass KM_SLEEP or KM_NOSLEEP",
            kmflags as u32
        ),
    );
    opaque_null()
}

/// `kmem_cache_free`; NULL `obj` is a no-op; a NULL or destroyed `cache`
/// with an object is a bad free (module docs, "Misuse").
///
/// # Safety
/// `cache` is NULL or a pointer from `kmem_cache_create`; `obj` is NULL or
/// an object of that cache not freed since and not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kmem_cache_free(cache: *mut KmemCache, obj: *mut c_void) {
    let Some(obj) = NonNull::new(obj.cast::<u8>()) else {
        return;
    };
    // As in kmem_cache_alloc: one load beside the hit's.
    let Some(p) = NonNull::new(cache.cast::<c_void>()) else {
        return free_misused(Misuse::Null, cache, obj);
    };
    // SAFETY: cache came from kmem_cache_create, whose struct is never freed.
    if unsafe { raw::destroy_begun(p) } {
        // SAFETY: forwarded caller guarantee.
        return unsafe { free_checked(cache, obj) };
    }
    // SAFETY: as in `borrow`, its destroy has not begun; obj: forwarded
    // caller guarantee.
    match unsafe { raw::free_hit(p, obj) } {
        FreeHit::Pushed => {}
        // SAFETY: free_hit refused this object after marking it.
        FreeHit::Refused => unsafe { free_refused(p, obj) },
        // SAFETY: free_hit left it alone; forwarded caller guarantee.
        FreeHit::Miss => unsafe { free_miss(p, obj) },
    }
}

/// [`kmem_cache_free`]'s object that the magazine hit checked and marked
/// but had no room for.
///
/// # Safety
/// As [`raw::push_refused`].
#[cold]
#[inline(never)]
unsafe extern "C" fn free_refused(p: NonNull<c_void>, obj: NonNull<u8>) {
    // SAFETY: forwarded caller guarantee.
    unsafe { raw::push_refused(p, obj) }
}

/// [`kmem_cache_free`] past the magazine hit, on a live cache.
///
/// # Safety
/// As [`kmem_cache_free`], with `p` its cache.
#[cold]
#[inline(never)]
unsafe extern "C" fn free_miss(p: NonNull<c_void>, obj: NonNull<u8>) {
    // SAFETY: forwarded caller guarantee.
    let c = unsafe { as_cache(p) };
    // SAFETY: forwarded caller guarantee.
    unsafe { c.free(obj) }
}

/// [`kmem_cache_free`] into a cache whose destroy has begun: every check
/// of [`borrow`].
///
/// # Safety
/// As [`kmem_cache_free`].
#[cold]
#[inline(never)]
unsafe extern "C" fn free_checked(cache: *mut KmemCache, obj: NonNull<u8>) {
    // SAFETY: forwarded caller guarantee.
    match unsafe { borrow(cache) } {
        // SAFETY: forwarded caller guarantee.
        Ok(c) => unsafe { c.free(obj) },
        Err(m) => free_misused(m, cache, obj),
    }
}

/// `kmem_cache_reap_now`.
///
/// # Safety
/// `cache` is NULL or a pointer from `kmem_cache_create` (a destroyed one
/// is ignored).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kmem_cache_reap_now(cache: *mut KmemCache) {
    // SAFETY: forwarded caller guarantee.
    if let Ok(c) = unsafe { borrow(cache) } {
        c.reap_now();
    }
}

/// `kmem_reap`: reaps every cache.
#[unsafe(no_mangle)]
pub extern "C" fn kmem_reap() {
    slabscope_rs::reap();
}

/// `kmem_cache_inuse` (see [`Cache::inuse`]).
///
/// # Safety
/// `cache` is NULL or a pointer from `kmem_cache_create` (a destroyed one
/// is ignored).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kmem_cache_inuse(cache: *mut KmemCache) -> u64 {
    // SAFETY: forwarded caller guarantee.
    unsafe { borrow(cache) }.map_or(0, |c| c.inuse())
}

/// `kmem_cache_entry_size`.
///
/// # Safety
/// `cache` is NULL or a pointer from `kmem_cache_create` (a destroyed one
/// is ignored).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kmem_cache_entry_size(cache: *mut KmemCache) -> u64 {
    // SAFETY: forwarded caller guarantee.
    unsafe { borrow(cache) }.map_or(0, |c| c.entry_size())
}

/// `kmem_cache_set_move`: accepted and ignored, as in SPL.
#[unsafe(no_mangle)]
pub extern "C" fn kmem_cache_set_move(_cache: *mut KmemCache, _move: SplMove) {}

/// Fills `*out` with the cache's current snapshot (the struct the probes
/// pass). Returns 0, or `-EINVAL` for NULL arguments.
///
/// # Safety
/// `cache` is NULL or a pointer from `kmem_cache_create` (a destroyed one
/// is reported); `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn slabscope_cache_snapshot(
    cache: *mut KmemCache,
    out: *mut CacheSnapshot,
) -> c_int {
    // SAFETY: forwarded caller guarantee.
    let c = match unsafe { borrow(cache) } {
        Ok(c) => c,
        Err(m) => {
            fail(libc::EINVAL, &m.message("slabscope_cache_snapshot", cache));
            return -libc::EINVAL;
        }
    };
    if out.is_null() {
        fail(libc::EINVAL, "slabscope_cache_snapshot: NULL output");
        return -libc::EINVAL;
    }
    // SAFETY: out is writable (caller).
    unsafe { out.write(c.snapshot()) };
    0
}

/// Writes the `/proc/spl/kmem/slab` text for every cache into `buf` (at most
/// `len` bytes, NUL included, like `snprintf`) and returns the full length
/// without the NUL. `buf` may be NULL when `len` is 0.
///
/// # Safety
/// `buf` is writable for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn slabscope_proc_slab(buf: *mut c_char, len: usize) -> usize {
    let text = slabscope_rs::stats::proc_slab_text(&slabscope_rs::stats::all());
    if !buf.is_null() && len > 0 {
        let n = text.len().min(len - 1);
        // SAFETY: buf has len >= n + 1 writable bytes (caller).
        unsafe { ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n) };
        // SAFETY: as above, n < len.
        unsafe { buf.wrapping_add(n).write(0) };
    }
    text.len()
}

// Caches need loom's runtime under cfg(loom); these run in normal builds.
#[cfg(all(test, not(loom)))]
mod tests;
