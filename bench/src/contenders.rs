//! The contenders: slabscope's cache API and the allocators people use instead,
//! all behind one small trait so every workload runs the same code for each.
//!
//! The peers that are global allocators (glibc, jemalloc, mimalloc, tcmalloc)
//! cannot all be `#[global_allocator]` of one process, so they are called
//! through their raw C entry points: `libc::malloc`/`free`,
//! `tikv_jemalloc_sys::malloc`/`free` (prefixed `_rjem_` symbols, so they do
//! not displace glibc), `libmimalloc_sys::mi_malloc`/`mi_free`, and tcmalloc's
//! `tc_malloc`/`tc_free` found with `dlopen` (see [`crate::tcmalloc`]). That is
//! how a C program calls them, and how the C harness of the project's
//! performance anchors called them: no size-class hints, no sized free.
//!
//! Each contender is built for one object size, as a slabscope cache is. The
//! bench's own bookkeeping (vectors of pointers) uses the global allocator,
//! which stays glibc's for every contender alike.

use std::ptr::NonNull;

use anyhow::Result;
use lockfree_object_pool::{LinearObjectPool, LinearReusable};

pub use crate::contender::{Contender, Ptr};
use crate::tcmalloc::Tcmalloc;
use crate::workloads::Runner;

/// The contenders, in the order tables list them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Slabscope,
    Glibc,
    Jemalloc,
    Mimalloc,
    Tcmalloc,
    Pool,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Slabscope,
        Kind::Glibc,
        Kind::Jemalloc,
        Kind::Mimalloc,
        Kind::Tcmalloc,
        Kind::Pool,
    ];

    /// Short name used on the command line and in JSON.
    pub const fn key(self) -> &'static str {
        match self {
            Kind::Slabscope => "slabscope",
            Kind::Glibc => "glibc",
            Kind::Jemalloc => "jemalloc",
            Kind::Mimalloc => "mimalloc",
            Kind::Tcmalloc => "tcmalloc",
            Kind::Pool => "pool",
        }
    }

    /// Column heading in BENCHMARKS.md.
    pub const fn label(self) -> &'static str {
        match self {
            Kind::Slabscope => "slabscope",
            Kind::Glibc => "glibc malloc",
            Kind::Jemalloc => "jemalloc",
            Kind::Mimalloc => "mimalloc",
            Kind::Tcmalloc => "tcmalloc",
            Kind::Pool => "object pool",
        }
    }

    pub fn from_key(key: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.key() == key)
    }

    /// Whether this contender is one of the peers slabscope is compared with.
    pub fn is_peer(self) -> bool {
        self != Kind::Slabscope
    }
}

/// Build the contender `kind` for objects of `size` bytes.
pub fn build(kind: Kind, size: usize) -> Result<Box<dyn Runner>> {
    Ok(match kind {
        Kind::Slabscope => Box::new(crate::slab::Slabscope::new(size)?),
        Kind::Glibc => Box::new(Glibc { size }),
        Kind::Jemalloc => Box::new(Jemalloc { size }),
        Kind::Mimalloc => Box::new(Mimalloc { size }),
        Kind::Tcmalloc => Box::new(TcContender {
            tc: Tcmalloc::get()?,
            size,
        }),
        Kind::Pool => Box::new(Pool::new(size)),
    })
}

fn nonnull(p: *mut libc::c_void, who: &str, size: usize) -> Ptr {
    match NonNull::new(p.cast::<u8>()) {
        Some(p) => Ptr(p),
        None => panic!("{who} could not allocate {size} bytes: out of memory"),
    }
}

/// glibc malloc, called as `libc::malloc`/`libc::free`.
#[derive(Debug)]
pub struct Glibc {
    size: usize,
}

impl Contender for Glibc {
    type Obj<'a> = Ptr;

    #[inline]
    fn alloc(&self) -> Ptr {
        // SAFETY: malloc has no preconditions.
        nonnull(
            unsafe { libc::malloc(self.size) },
            "glibc malloc",
            self.size,
        )
    }

    #[inline]
    fn free(&self, obj: Ptr) {
        // SAFETY: obj came from libc::malloc and is freed once.
        unsafe { libc::free(obj.0.as_ptr().cast()) }
    }

    #[inline]
    fn addr(obj: &mut Ptr) -> *mut u8 {
        obj.0.as_ptr()
    }

    fn release(&self) -> &'static str {
        // SAFETY: malloc_trim has no preconditions.
        unsafe { libc::malloc_trim(0) };
        "malloc_trim(0)"
    }
}

/// jemalloc from `tikv-jemalloc-sys` (its symbols are prefixed, so it lives
/// beside glibc's malloc).
#[derive(Debug)]
pub struct Jemalloc {
    size: usize,
}

impl Contender for Jemalloc {
    type Obj<'a> = Ptr;

    #[inline]
    fn alloc(&self) -> Ptr {
        // SAFETY: malloc has no preconditions.
        let p = unsafe { tikv_jemalloc_sys::malloc(self.size) };
        nonnull(p, "jemalloc", self.size)
    }

    #[inline]
    fn free(&self, obj: Ptr) {
        // SAFETY: obj came from tikv_jemalloc_sys::malloc and is freed once.
        unsafe { tikv_jemalloc_sys::free(obj.0.as_ptr().cast()) }
    }

    #[inline]
    fn addr(obj: &mut Ptr) -> *mut u8 {
        obj.0.as_ptr()
    }

    fn release(&self) -> &'static str {
        // MALLCTL_ARENAS_ALL is 4096: "arena.4096.purge" purges every arena.
        let name = c"arena.4096.purge";
        // SAFETY: a purge takes no old or new value; the name is NUL terminated.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        if rc != 0 {
            eprintln!("jemalloc: mallctl(arena.4096.purge) failed with {rc}");
        }
        "mallctl(\"arena.4096.purge\")"
    }
}

/// The jemalloc version string, e.g. `5.3.0-...`.
pub fn jemalloc_version() -> String {
    let mut v: *const libc::c_char = std::ptr::null();
    let mut len = size_of::<*const libc::c_char>();
    // SAFETY: "version" reads a `const char *` into v; len is its size.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"version".as_ptr(),
            (&raw mut v).cast(),
            &raw mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 || v.is_null() {
        return "unknown".into();
    }
    // SAFETY: jemalloc returned a static NUL-terminated string.
    let s = unsafe { std::ffi::CStr::from_ptr(v) };
    s.to_string_lossy().into_owned()
}

/// mimalloc from `libmimalloc-sys`, the `mimalloc` crate's C layer.
#[derive(Debug)]
pub struct Mimalloc {
    size: usize,
}

impl Contender for Mimalloc {
    type Obj<'a> = Ptr;

    #[inline]
    fn alloc(&self) -> Ptr {
        // SAFETY: mi_malloc has no preconditions.
        let p = unsafe { libmimalloc_sys::mi_malloc(self.size) };
        nonnull(p, "mimalloc", self.size)
    }

    #[inline]
    fn free(&self, obj: Ptr) {
        // SAFETY: obj came from mi_malloc and is freed once.
        unsafe { libmimalloc_sys::mi_free(obj.0.as_ptr().cast()) }
    }

    #[inline]
    fn addr(obj: &mut Ptr) -> *mut u8 {
        obj.0.as_ptr()
    }

    fn release(&self) -> &'static str {
        // SAFETY: mi_collect has no preconditions.
        unsafe { libmimalloc_sys::mi_collect(true) };
        "mi_collect(true)"
    }
}

/// mimalloc's version as `major.minor.patch`.
pub fn mimalloc_version() -> String {
    // SAFETY: mi_version has no preconditions.
    let v = unsafe { libmimalloc_sys::mi_version() };
    // MI_MALLOC_VERSION: major, then two digits of minor, two of patch.
    format!("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100)
}

/// tcmalloc (gperftools' minimal build) reached through `dlopen`.
#[derive(Debug)]
pub struct TcContender {
    tc: &'static Tcmalloc,
    size: usize,
}

impl Contender for TcContender {
    type Obj<'a> = Ptr;

    #[inline]
    fn alloc(&self) -> Ptr {
        // SAFETY: tc_malloc has malloc's contract: no preconditions.
        let p = unsafe { (self.tc.malloc)(self.size) };
        nonnull(p, "tcmalloc", self.size)
    }

    #[inline]
    fn free(&self, obj: Ptr) {
        // SAFETY: obj came from tc_malloc and is freed once.
        unsafe { (self.tc.free)(obj.0.as_ptr().cast()) }
    }

    #[inline]
    fn addr(obj: &mut Ptr) -> *mut u8 {
        obj.0.as_ptr()
    }

    fn release(&self) -> &'static str {
        // SAFETY: ReleaseFreeMemory has no preconditions.
        unsafe { (self.tc.release_free_memory)() };
        "MallocExtension_ReleaseFreeMemory()"
    }
}

/// A Rust object pool: `lockfree-object-pool`'s `LinearObjectPool` of
/// fixed-size buffers (the faster of the two pools in the project's anchors).
/// A pool never gives memory back while it lives; [`Contender::release`] is
/// a no-op for it.
pub struct Pool {
    pool: LinearObjectPool<Box<[u8]>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    fn new(size: usize) -> Pool {
        Pool {
            pool: LinearObjectPool::new(move || vec![0u8; size].into_boxed_slice(), |_| {}),
        }
    }
}

/// One pooled buffer on loan.
pub struct Loan<'a>(LinearReusable<'a, Box<[u8]>>);

// SAFETY: a loan is a `&LinearObjectPool` (the pool is Sync) plus exclusive
// access to one buffer; returning it from another thread is what the pool's
// lock-free free list is for.
unsafe impl Send for Loan<'_> {}

impl Contender for Pool {
    type Obj<'a> = Loan<'a>;

    #[inline]
    fn alloc(&self) -> Loan<'_> {
        Loan(self.pool.pull())
    }

    #[inline]
    fn free<'a>(&'a self, obj: Loan<'a>) {
        drop(obj)
    }

    #[inline]
    fn addr(obj: &mut Loan<'_>) -> *mut u8 {
        obj.0.as_mut_ptr()
    }

    fn release(&self) -> &'static str {
        "nothing (a pool keeps its objects)"
    }
}

/// Not an allocator: hands out the same buffer every time. Run under
/// callgrind it counts what the harness itself executes per operation, so
/// the report can say how much of every contender's figure is harness.
#[derive(Debug)]
pub struct Baseline {
    buf: NonNull<[u8]>,
}

// SAFETY: the buffer is owned by the Baseline; the harness only writes single
// bytes into it with volatile stores, from one thread at a time.
unsafe impl Sync for Baseline {}
// SAFETY: as above; ownership of the buffer moves with the Baseline.
unsafe impl Send for Baseline {}

impl Baseline {
    pub fn new(size: usize) -> Baseline {
        let b: Box<[u8]> = vec![0u8; size.max(1)].into_boxed_slice();
        Baseline {
            buf: NonNull::from(Box::leak(b)),
        }
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        // SAFETY: buf came from Box::leak in new and is dropped once.
        drop(unsafe { Box::from_raw(self.buf.as_ptr()) });
    }
}

impl Contender for Baseline {
    type Obj<'a> = Ptr;

    #[inline]
    fn alloc(&self) -> Ptr {
        Ptr(self.buf.cast::<u8>())
    }

    #[inline]
    fn free(&self, obj: Ptr) {
        std::hint::black_box(obj);
    }

    #[inline]
    fn addr(obj: &mut Ptr) -> *mut u8 {
        obj.0.as_ptr()
    }

    fn release(&self) -> &'static str {
        "nothing"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocate 200 objects, fill each completely with its own byte, check
    /// that no two overlap (each still holds its byte), free them.
    fn hands_out_disjoint_objects<C: Contender>(c: &C, size: usize, who: &str) {
        let mut objs: Vec<C::Obj<'_>> = (0..200).map(|_| c.alloc()).collect();
        for (i, o) in objs.iter_mut().enumerate() {
            // SAFETY: the object is live and `size` bytes long.
            unsafe { std::ptr::write_bytes(C::addr(o), i as u8, size) };
        }
        for (i, o) in objs.iter_mut().enumerate() {
            let p = C::addr(o);
            // SAFETY: as above; the bytes were written just now.
            let bytes = unsafe { std::slice::from_raw_parts(p, size) };
            assert!(
                bytes.iter().all(|&b| b == i as u8),
                "{who}: object {i} of {size} B was overwritten by another"
            );
        }
        for o in objs {
            c.free(o);
        }
        c.release();
    }

    #[test]
    fn every_contender_hands_out_disjoint_usable_objects() {
        for size in [64, 4096, 128 << 10] {
            hands_out_disjoint_objects(&Glibc { size }, size, "glibc");
            hands_out_disjoint_objects(&Jemalloc { size }, size, "jemalloc");
            hands_out_disjoint_objects(&Mimalloc { size }, size, "mimalloc");
            hands_out_disjoint_objects(&Pool::new(size), size, "pool");
            let slab = crate::slab::Slabscope::new(size).expect("slabscope cache builds");
            hands_out_disjoint_objects(&slab, size, "slabscope");
            match Tcmalloc::get() {
                Ok(tc) => hands_out_disjoint_objects(&TcContender { tc, size }, size, "tcmalloc"),
                Err(e) => eprintln!("SKIPPING tcmalloc: {e:#}"),
            }
        }
    }

    #[test]
    fn kinds_round_trip_through_their_keys() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_key(k.key()), Some(k), "{k:?}");
        }
        assert_eq!(Kind::from_key("nonsense"), None);
    }
}
