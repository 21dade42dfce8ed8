//! One cache: `CacheInner`, its creation (argument checks, sizing) and
//! teardown, the allocation and free entry points and validation. Ports
//! `spl_kmem_cache_create()` and `spl_kmem_cache_destroy()` (less the cache
//! list, which `crate::registry` keeps, with `CacheBuilder::build` and
//! `Cache::destroy`), `spl_kmem_cache_alloc()`, `spl_kmem_cache_free()`,
//! `spl_kmem_cache_inuse()` and `spl_kmem_cache_entry_size()`.
//!
//! The rest of the cache is this module's tree: `magazine` (the fast paths,
//! refill and flush), `grow`, `emergency`, `reap` and `depot`. It imports
//! only the containers below it (`slab`, `depot`, `magazine`, `taskq`,
//! `background`) and never the registry above.
//!
//! # Cache types
//!
//! As in SPL, a cache either uses slabscope's own slabs and magazines
//! (`KMC_KVMEM`) or delegates every object to the system allocator and only
//! counts them (`KMC_SLAB`, SPL's "Linux slab" path). Without either flag the
//! `slab_limit` tunable decides: objects of at most `slab_limit` bytes go to
//! `KMC_SLAB`. The default `slab_limit` is 0 (see [`crate::tunables`]).
//!
//! # Semantics kept from SPL
//!
//! - The constructor runs on **every** allocation and the destructor on every
//!   free (illumos keeps objects constructed while cached; SPL does not).
//!   A constructor returning `false` makes the allocation return `None` (the
//!   object goes back to the cache without the destructor running).
//! - `KM_SLEEP` allocations never fail; `KM_NOSLEEP` ones may return `None`.
//! - Dropping the last [`Cache`] handle destroys the cache when no object
//!   is allocated (SPL caches live until `kmem_cache_destroy`, which a
//!   program without a handle can no longer call). With objects allocated
//!   the cache stays, its memory valid, and stderr says so once with the
//!   cache's name. [`crate::TypedCache`] destroys its cache on drop.
//!
//! # Where slabscope differs
//!
//! - Bad creation arguments return [`Error`] where SPL `VERIFY`s.
//! - [`Cache::destroy`] refuses with [`Error::Busy`] while objects are
//!   allocated, and frees nothing; SPL asserts.
//! - Allocating from a destroyed cache panics with a message (SPL asserts).
//!
//! # Bookkeeping
//!
//! - `slab_total == |partial list| + |complete list|`
//! - `obj_total == Σ slab.objs + obj_emergency`
//! - `obj_alloc == Σ slab.refs` (objects in use or held in magazines;
//!   emergency objects are not counted, as in SPL)
//! - `slab_alloc == #{slab : slab.refs > 0}`, `obj_emergency == |emergency map|`
//! - `mag_objs == Σ magazine fill <= obj_alloc`; every magazine object is a
//!   slab object on no free list and in no other magazine slot
//! - every empty slab is at the tail of the partial list
//!
//! [`Cache::validate`] checks all of it.

use std::alloc::Layout;
use std::ffi::c_void;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};

use slabscope_probes::stats::CacheStats;
use slabscope_probes::{CacheSnapshot, MAX_CPUS, NAME_LEN};

use crate::depot::Depot;
use crate::error::Error;
use crate::flags::{KM_NOSLEEP, KM_PUBLIC_MASK, KMC_DESTROY, KmFlags, SKC_MAGIC, SKM_MAGIC};
use crate::inbox::Inboxes;
use crate::magazine::Mags;
use crate::os;
use crate::sizing::{self, Geometry};
use crate::slab::{self, SlabState};
use crate::sync::{self, AtomicBool, AtomicU64, Condvar, MutexGuard};

mod builder;
mod depot;
mod emergency;
pub(crate) mod grow;
#[cfg(all(test, loom))]
mod loom_tests;
mod magazine;
mod reap;

pub(crate) use builder::ByteCaps;
pub use builder::CacheBuilder;

/// Constructor: `(object, kmflags) -> success`.
pub type Ctor = Box<dyn Fn(NonNull<u8>, u32) -> bool + Send + Sync>;
/// Destructor.
pub type Dtor = Box<dyn Fn(NonNull<u8>) + Send + Sync>;

/// A per-CPU counter on its own cache line (SPL's `skc_linux_alloc`).
#[repr(align(64))]
#[derive(Debug, Default)]
pub(crate) struct PerCpuCount(AtomicI64);

/// What the inline fast path of [`Cache::alloc`] and [`Cache::free`] reads,
/// together on one cache line, with the C ABI's misuse check beside it.
///
/// `destroying == (flags & KMC_DESTROY != 0)` except inside
/// [`CacheInner::destroy`]'s locked steps that set and clear both.
#[repr(C, align(64))]
pub(crate) struct FastPath {
    /// `mags.rseq_base()` when allocation and free may take the inline
    /// path (restartable-sequence magazines, no constructor or destructor),
    /// else 0.
    pub(crate) base: usize,
    /// `rseq`'s offset when the inline path is on (else 0, unused).
    pub(crate) rseq_off: isize,
    /// `slab::alloc_tag(id)` (or the builder's reserved tag), the header
    /// mark of an allocated object.
    pub(crate) tag: u16,
    /// `tag` when the inline free may take an object with that mark, else
    /// 0, which no header holds.
    pub(crate) free_tag: u16,
    /// Whether the objects are headerless (`Geometry::headerless`): an
    /// allocation clears the object's free mark instead of writing `tag`
    /// into a header, and `free_tag` is 0.
    pub(crate) headerless: bool,
    /// `KMC_DESTROY` of the cache's flags, mirrored here so the C ABI's
    /// `kmem_cache_alloc` and `kmem_cache_free` check it on the line they
    /// read anyway (the flags word sits several lines away): set before
    /// the flag, cleared after it.
    destroying: AtomicBool,
}

impl FastPath {
    /// With `inline_rseq` (the rseq area's offset, when the cache has
    /// restartable-sequence magazines and no constructor or destructor) the
    /// inline paths use `base` and `tag`; without, `base` and `free_tag`
    /// are 0 and every allocation and free takes the general path.
    ///
    /// A `headerless` cache's inline paths are off: [`Cache::free`]'s
    /// reads the header word, which in its slabs is the previous object's
    /// last word, and [`Cache::alloc`]'s writes the tag there. Its owner,
    /// `crate::kmem`, has inline paths of its own, which tell its objects
    /// apart first ([`CacheInner::inline_magazines`]).
    fn new(inline_rseq: Option<isize>, base: usize, tag: u16, headerless: bool) -> Self {
        let inline = inline_rseq.is_some() && !headerless;
        FastPath {
            base: if inline { base } else { 0 },
            rseq_off: if inline { inline_rseq.unwrap_or(0) } else { 0 },
            tag,
            free_tag: if inline { tag } else { 0 },
            headerless,
            destroying: AtomicBool::new(false),
        }
    }
}

/// The cache itself (`spl_kmem_cache_t`). Its address is the cache id.
pub(crate) struct CacheInner {
    pub(crate) magic: u32,
    me: Weak<CacheInner>,
    pub(crate) name: String,
    name_buf: [u8; NAME_LEN],
    pub(crate) geo: Geometry,
    flags: AtomicU64,
    /// Magic checks on (no `KMC_NODEBUG`).
    pub(crate) debug: bool,
    /// What the inline fast path reads.
    pub(crate) fp: FastPath,
    /// `KMC_SLAB`: delegate to the system allocator.
    pub(crate) slab_backed: bool,
    ctor: Option<Ctor>,
    dtor: Option<Dtor>,
    state: sync::Mutex<SlabState>,
    /// Woken when a grow added a slab (`skc_waitq`).
    pub(crate) grow_cv: Condvar,
    /// Woken whenever refs drop, a grow ends or a reap ends.
    pub(crate) state_cv: Condvar,
    pub(crate) mags: Mags,
    /// `mags.rseq_base()`, for every sequence outside the inline path.
    pub(crate) mag_base: usize,
    /// Objects between the magazines and the slabs (see [`crate::depot`]).
    pub(crate) depot: Depot,
    /// Objects freed on a CPU other than their home, waiting for it (see
    /// [`crate::inbox`]); no homes unless the builder asked
    /// ([`CacheBuilder::homes`]) and the magazines use restartable
    /// sequences.
    pub(crate) inbox: Inboxes,
    /// The rseq area offset when the magazines use restartable sequences
    /// (see [`crate::magazine::rseq`]); `None`: they use their lock.
    pub(crate) rseq: Option<isize>,
    pub(crate) mag_size: u32,
    pub(crate) mag_refill: u32,
    /// Mirror of `obj_emergency` for the free path.
    pub(crate) emergency_live: AtomicU64,
    /// [`Cache`] handles alive, the C ABI's `kmem_cache_t *` included
    /// (internal references, such as a grow worker's, are not handles).
    /// The last one dropped destroys the cache (see `registry`).
    pub(crate) handles: std::sync::atomic::AtomicUsize,
    sys_count: Box<[PerCpuCount]>,
    /// Layout of objects that do not live in a slab (`KMC_SLAB` objects and
    /// emergency objects): the object and a header, whose state tells the
    /// inline free that it is not a slab object.
    pub(crate) obj_layout: Layout,
    /// loom models only: the grow wait expires instead of waiting for the
    /// grow (see [`crate::sync::wait_timeout_while`]).
    #[cfg(loom)]
    pub(crate) loom_wait_expires: std::sync::atomic::AtomicBool,
    /// loom models only: every grow goes to a worker, as with
    /// `grow_in_context = 0` (see [`crate::cache::grow`]).
    #[cfg(loom)]
    pub(crate) loom_async_only: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for CacheInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.name)
            .field("id", &format_args!("{:#x}", self.id()))
            .field("flags", &format_args!("{:#x}", self.flags()))
            .field("geometry", &self.geo)
            .finish_non_exhaustive()
    }
}

impl CacheInner {
    #[inline(always)]
    pub(crate) fn id(&self) -> u64 {
        self as *const Self as u64
    }

    /// The magazine table and rseq offset an inline path may push to and
    /// pop from (restartable-sequence magazines, no constructor or
    /// destructor), whether or not this cache's own inline paths use them
    /// (a headerless cache's do not: see [`FastPath::new`]).
    pub(crate) fn inline_magazines(&self) -> Option<(usize, isize)> {
        let hooks = self.ctor.is_some() || self.dtor.is_some();
        self.rseq.filter(|_| !hooks).map(|off| (self.mag_base, off))
    }

    pub(crate) fn arc(&self) -> Arc<CacheInner> {
        self.me.upgrade().expect("a live cache is owned by an Arc")
    }

    pub(crate) fn lock_state(&self) -> MutexGuard<'_, SlabState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[inline]
    pub(crate) fn flags(&self) -> u64 {
        self.flags.load(Ordering::SeqCst)
    }

    #[inline]
    pub(crate) fn flag(&self, bit: u64) -> bool {
        self.flags() & bit != 0
    }

    pub(crate) fn set_flag(&self, bit: u64) {
        self.flags.fetch_or(bit, Ordering::SeqCst);
    }

    pub(crate) fn clear_flag(&self, bit: u64) {
        self.flags.fetch_and(!bit, Ordering::SeqCst);
    }

    /// Whether a destroy has begun: [`FastPath::destroying`], the mirror of
    /// `KMC_DESTROY` on the fast-path line.
    #[inline(always)]
    pub(crate) fn destroy_begun(&self) -> bool {
        self.fp.destroying.load(Ordering::SeqCst)
    }

    /// Panics when the cache was destroyed (SPL: `ASSERT(!KMC_DESTROY)`).
    pub(crate) fn check_alive(&self, st: &SlabState) {
        if st.destroyed {
            used_after_destroy(&self.name);
        }
    }

    /// O(1) consistency checks at cheap points, debug builds only.
    #[inline]
    pub(crate) fn debug_check(&self, st: &SlabState) {
        if cfg!(debug_assertions) {
            let c = &st.c;
            debug_assert!(c.obj_alloc + c.obj_emergency <= c.obj_total, "{c:?}");
            debug_assert!(c.slab_alloc <= c.slab_total, "{c:?}");
            debug_assert_eq!(c.slab_total, st.partial.len() + st.complete.len());
            debug_assert_eq!(c.obj_emergency, st.emergency.len() as u64);
        }
    }

    fn sys_count(&self) -> u64 {
        self.sys_count
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum::<i64>()
            .max(0) as u64
    }

    fn sys_count_add(&self, d: i64) {
        let i = os::current_cpu() % self.sys_count.len();
        self.sys_count[i].0.fetch_add(d, Ordering::Relaxed);
    }

    /// The probes' snapshot of this cache, taken under the cache lock.
    pub(crate) fn snapshot_locked(&self, st: &SlabState) -> CacheSnapshot {
        let mut s = CacheSnapshot::ZERO;
        s.cache_id = self.id();
        s.flags = self.flags();
        s.obj_size = self.geo.obj_size;
        s.obj_align = self.geo.obj_align;
        s.obj_size_full = self.geo.obj_size_full;
        s.slab_size = self.geo.slab_size;
        s.slab_objs = self.geo.slab_objs;
        s.mag_size = self.mag_size;
        s.mag_refill = self.mag_refill;
        s.name = self.name_buf;
        if self.slab_backed {
            s.obj_alloc = self.sys_count();
            return s;
        }
        s.ncpus = self.mags.len().min(MAX_CPUS) as u32;
        s.counters = st.c;
        for (i, f) in self.mag_fill().enumerate() {
            s.mag_objs += u64::from(f);
            if i < MAX_CPUS {
                s.mag_fill[i] = f;
            }
        }
        let depot = self.depot.len();
        s.mag_objs += depot as u64;
        s.depot_objs = depot.try_into().unwrap_or(u32::MAX);
        s.mag_objs += self.inbox.len() as u64;
        s
    }

    pub(crate) fn snapshot(&self) -> CacheSnapshot {
        let st = self.lock_state();
        self.snapshot_locked(&st)
    }

    /// [`Self::snapshot`], unless the cache's lock is held (perhaps by
    /// this thread): `None` rather than wait.
    pub(crate) fn try_snapshot(&self) -> Option<CacheSnapshot> {
        let st = sync::try_locked(self.state.try_lock())?;
        Some(self.snapshot_locked(&st))
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let mut s = CacheStats::from(&self.snapshot());
        if !self.slab_backed {
            s.mag_fill = self.mag_fill().collect();
        }
        s
    }

    /// The work of [`Cache::destroy`] (which is in `crate::registry`, as it
    /// changes the process-wide list): `unregister` takes the cache out of
    /// the registry once it is committed to go.
    pub(crate) fn destroy(&self, unregister: impl FnOnce()) -> Result<(), Error> {
        let c = self;
        let mut st = c.lock_state();
        if st.destroyed || c.flag(KMC_DESTROY) {
            return Err(Error::Destroyed {
                name: c.name.clone(),
            });
        }
        c.fp.destroying.store(true, Ordering::SeqCst);
        c.set_flag(KMC_DESTROY);
        while st.refs > 0 {
            st = c.state_cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        drop(st);
        if !c.slab_backed {
            c.flush_all(false);
            c.drain_depot();
            c.drain_inboxes();
        }
        let mut st = c.lock_state();
        let (obj_alloc, obj_emergency) = if c.slab_backed {
            (c.sys_count(), 0)
        } else {
            (st.c.obj_alloc, st.c.obj_emergency)
        };
        if obj_alloc > 0 || obj_emergency > 0 {
            c.clear_flag(KMC_DESTROY);
            c.fp.destroying.store(false, Ordering::SeqCst);
            return Err(Error::Busy {
                name: c.name.clone(),
                obj_alloc,
                obj_emergency,
            });
        }
        st.destroyed = true;
        let snap = slabscope_probes::ENABLED.then(|| c.snapshot_locked(&st));
        let r = st.unlink_empty(&c.geo, 0, 0);
        debug_assert!(st.partial.is_empty() && st.complete.is_empty());
        let after = slabscope_probes::ENABLED.then(|| c.snapshot_locked(&st));
        drop(st);
        // Out of the registry before cache_destroy fires, so the stats
        // thread never reports the cache after it.
        unregister();
        if let Some(snap) = snap {
            slabscope_probes::fire::cache_destroy(&snap);
        }
        let (slabs, objs) = (r.slabs, r.objs);
        // SAFETY: every slab of the cache is empty and unlinked.
        unsafe { r.release(&c.geo) };
        if let Some(after) = after
            && slabs > 0
        {
            slabscope_probes::fire::slab_reclaim(&after, slabs, objs);
        }
        Ok(())
    }

    /// Gives an object back without running the destructor (constructor
    /// failure, and the tail of [`Cache::free`]).
    ///
    /// # Safety
    /// `obj` was allocated from this cache and is not used afterwards.
    #[inline(always)]
    unsafe fn release(&self, obj: NonNull<u8>) {
        if self.slab_backed {
            // SAFETY: forwarded caller guarantee.
            unsafe { self.sys_free(obj) };
            return;
        }
        // SAFETY: forwarded caller guarantee.
        if unsafe { self.emergency_free(obj) } {
            return;
        }
        // SAFETY: not an emergency object, so a slab object of this cache.
        unsafe { self.mag_free(obj) }
    }

    /// Frees a `KMC_SLAB` object.
    ///
    /// # Safety
    /// As [`Self::release`].
    #[cold]
    #[inline(never)]
    unsafe fn sys_free(&self, obj: NonNull<u8>) {
        // SAFETY: KMC_SLAB objects come from slabless_alloc.
        unsafe { self.slabless_free(obj) };
        self.sys_count_add(-1);
    }

    /// An object outside any slab (`KMC_SLAB` and emergency objects), from
    /// the system allocator: `obj_layout` bytes, the object at `hdr_room`
    /// after their start and its header, in `state`, right before it.
    pub(crate) fn slabless_alloc(&self, state: u16) -> Option<NonNull<u8>> {
        // SAFETY: obj_layout has a non-zero size.
        let base = NonNull::new(unsafe { std::alloc::alloc(self.obj_layout) })?;
        // SAFETY: the room is less than obj_layout's size (the object's
        // bytes follow it).
        let obj = unsafe { base.add(slabless_room(&self.geo) as usize) };
        // SAFETY: the header is the 8 bytes before obj, inside the block and
        // 8-aligned (obj is aligned like the cache's objects, at least 8).
        unsafe { slab::init_slabless_header(obj.as_ptr(), state) };
        Some(obj)
    }

    /// Returns an object of [`Self::slabless_alloc`].
    ///
    /// # Safety
    /// `obj` came from `slabless_alloc` of this cache and is not used again.
    pub(crate) unsafe fn slabless_free(&self, obj: NonNull<u8>) {
        // SAFETY: obj is slabless_room bytes into a block of obj_layout
        // (caller).
        let base = unsafe { obj.sub(slabless_room(&self.geo) as usize) };
        // SAFETY: base came from std::alloc::alloc with obj_layout.
        unsafe { std::alloc::dealloc(base.as_ptr(), self.obj_layout) };
    }
}

/// Bytes before an object outside any slab (emergency and `KMC_SLAB`
/// objects) for its header: the slab objects' room, or, for a headerless
/// cache, whose slab objects have none, the header rounded up to the
/// alignment (an emergency object is told apart by its header).
fn slabless_room(g: &Geometry) -> u64 {
    if g.headerless() {
        sizing::p2roundup(slab::OBJ_HDR, g.obj_align)
    } else {
        g.hdr_room()
    }
}

#[cold]
#[inline(never)]
fn used_after_destroy(name: &str) -> ! {
    panic!("slabscope: cache {name:?} was used after it was destroyed")
}

#[cold]
#[inline(never)]
fn bad_kmflags(name: &str, kmflags: u32) -> ! {
    panic!(
        "slabscope: cache {name:?}: allocation flags {kmflags:#x} have bits outside \
         KM_PUBLIC_MASK ({KM_PUBLIC_MASK:#x}): pass KM_SLEEP or KM_NOSLEEP"
    )
}

/// How a cache's magazines are kept private to their CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MagazineProtocol {
    /// Restartable sequences: plain loads and stores, restarted by the
    /// kernel on preemption or migration.
    Rseq,
    /// A one-byte lock taken with compare-and-swap.
    Lock,
}

/// A cache handle: cheap to clone, `Send + Sync`. See the module docs.
///
/// Dropping the last handle (every clone, and the pointer
/// [`Cache::into_raw`] made, count) destroys the cache as [`Cache::destroy`]
/// does when no object is allocated. With objects still allocated it frees
/// nothing, since the program may still use them: the cache stays, and
/// stderr says once, with the cache's name, how many objects keep it.
pub struct Cache {
    pub(crate) inner: Arc<CacheInner>,
}

impl Clone for Cache {
    fn clone(&self) -> Cache {
        self.inner.handles.fetch_add(1, Ordering::Relaxed);
        Cache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl Cache {
    /// Allocates one object and runs the constructor (`kmem_cache_alloc`).
    /// `None` only with `KM_NOSLEEP` when no object is free and no grow has
    /// finished, or when the constructor fails.
    ///
    /// `kmflags` is [`KmFlags`] (`KmFlags::NOSLEEP`) or the SPL constants'
    /// `u32` (`flags::KM_NOSLEEP`).
    ///
    /// # Panics
    /// On kmflags outside `KM_PUBLIC_MASK`, and on a destroyed cache.
    #[inline]
    pub fn alloc(&self, kmflags: impl Into<KmFlags>) -> Option<NonNull<u8>> {
        let kmflags = kmflags.into().bits();
        let c = &*self.inner;
        if kmflags & !KM_PUBLIC_MASK != 0 {
            bad_kmflags(&c.name, kmflags);
        }
        if c.fp.base != 0
            && let Some(p) = c.rseq_alloc_fast()
        {
            return Some(p);
        }
        alloc_general(c, kmflags)
    }

    /// Runs the destructor and returns the object to the cache
    /// (`kmem_cache_free`).
    ///
    /// # Safety
    /// `obj` was returned by [`Cache::alloc`] of this cache (or a clone of
    /// this handle), has not been freed since, and is not used afterwards.
    #[inline]
    pub unsafe fn free(&self, obj: NonNull<u8>) {
        // SAFETY: forwarded caller guarantee.
        if !unsafe { self.inner.fast_free(obj) } {
            // SAFETY: forwarded caller guarantee; fast_free left it alone.
            unsafe { free_general(&self.inner, obj) }
        }
    }

    /// `kmem_cache_reap_now`: flushes the current CPU's magazine and returns
    /// empty slabs to the OS; fires `reap`.
    pub fn reap_now(&self) {
        self.inner.reap_now(false);
    }

    /// Every counter of this cache now.
    pub fn stats(&self) -> CacheStats {
        self.inner.stats()
    }

    /// How this cache's per-CPU magazines are kept private to their CPU
    /// (see the `magazine_rseq` tunable). `None` for `KMC_SLAB` caches,
    /// which have no magazines.
    pub fn magazine_protocol(&self) -> Option<MagazineProtocol> {
        let c = &*self.inner;
        if c.slab_backed {
            None
        } else if c.rseq.is_some() {
            Some(MagazineProtocol::Rseq)
        } else {
            Some(MagazineProtocol::Lock)
        }
    }

    /// The cache id: its address, as probes report it.
    pub fn id(&self) -> u64 {
        self.inner.id()
    }

    /// The cache name, as given at creation.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// `KMC_*` flags, state bits included.
    pub fn flags(&self) -> u64 {
        self.inner.flags()
    }

    /// `kmem_cache_inuse`: SPL returns `obj_total` (objects the cache holds,
    /// free ones in slabs included). For `KMC_SLAB` caches, whose `obj_total`
    /// SPL never maintains, this returns the objects allocated.
    ///
    /// It is not the number of objects the program holds: right after
    /// freeing its only object a program still sees the slab's capacity
    /// here (the object went to a per-CPU magazine, and the slab stays). That
    /// count is [`Cache::held`].
    pub fn inuse(&self) -> u64 {
        let c = &*self.inner;
        if c.slab_backed {
            c.sys_count()
        } else {
            c.lock_state().c.obj_total
        }
    }

    /// Objects the program holds: allocated and not yet freed, emergency
    /// objects included. In SPL's counters, `obj_alloc - mag_objs +
    /// obj_emergency` (`obj_alloc` counts the objects parked in magazines
    /// and the depot too, and leaves out emergency objects).
    ///
    /// Read under the cache lock, summing every CPU's magazine (O(CPUs)).
    /// Exact while no other thread allocates from or frees to this cache;
    /// with others doing so, a value the count had during the call.
    pub fn held(&self) -> u64 {
        let s = self.inner.snapshot();
        s.counters.obj_alloc.saturating_sub(s.mag_objs) + s.counters.obj_emergency
    }

    /// `kmem_cache_entry_size`: the object size requested at creation.
    pub fn entry_size(&self) -> u64 {
        self.inner.geo.obj_size
    }

    /// Whether [`Cache::destroy`] succeeded on this cache (the C ABI keeps
    /// destroyed caches' structs to report later use: see `slabscope-capi`).
    #[inline]
    pub fn is_destroyed(&self) -> bool {
        self.inner.flag(KMC_DESTROY) && self.destroy_committed()
    }

    /// The locked half of [`Cache::is_destroyed`], out of the C ABI's
    /// alloc and free paths.
    #[cold]
    #[inline(never)]
    fn destroy_committed(&self) -> bool {
        self.inner.lock_state().destroyed
    }

    /// Walks every list and magazine and checks the bookkeeping equations
    /// (see the module docs). Takes every magazine lock and the cache lock.
    /// [`Error::Corrupt`] names the first equation that does not hold.
    pub fn validate(&self) -> Result<(), Error> {
        self.check().map_err(|what| Error::Corrupt {
            name: self.inner.name.clone(),
            what,
        })
    }

    /// The walk of [`Cache::validate`]: what broke, as text.
    fn check(&self) -> Result<(), String> {
        let c = &*self.inner;
        if c.magic != SKC_MAGIC {
            return Err(format!("cache magic {:#x}", c.magic));
        }
        if c.slab_backed {
            return Ok(());
        }
        let guards = c.lock_all_mags();
        // Held to the end: a refill may take from the depot without a
        // magazine lock.
        let depot = c.depot.lock();
        let st = c.lock_state();
        let free = st.validate(&c.geo, c.id())?;
        let mut seen = std::collections::HashSet::new();
        let mut mag_objs = 0u64;
        // One object a magazine, the depot or an inbox holds: a free slab
        // object of this cache, on no slab free list, held in one place.
        let mut held = |place: &dyn std::fmt::Display, p: *mut u8, twice: &str| {
            // SAFETY: held objects are slab objects of this cache (checked
            // right here via the header's magic and address).
            unsafe { slab::check_obj_result(&c.geo, p) }
                .map_err(|e| format!("{place}: {p:p}: {e}"))?;
            if free.contains(&(p as usize)) {
                return Err(format!("{place}: {p:p} is also on a slab free list"));
            }
            if !seen.insert(p as usize) {
                return Err(format!("{p:p} {twice}"));
            }
            mag_objs += 1;
            Ok(())
        };
        for (cpu, g) in guards.iter().enumerate() {
            // Never opened: all zero, holding nothing.
            let unused = g.magic() == 0 && g.avail() == 0;
            if !unused && (g.magic() != SKM_MAGIC || g.avail() > c.mag_size) {
                return Err(format!("magazine {cpu}: bad magic or fill {}", g.avail()));
            }
            for p in g.objects() {
                held(
                    &format_args!("magazine {cpu}"),
                    p,
                    "is in two magazine slots",
                )?;
            }
        }
        for &p in depot.iter() {
            held(&"depot", p, "is in the depot twice, or also in a magazine")?;
        }
        // SAFETY: takers of an inbox run a magazine's refill (the magazine
        // locks held here close the sequences that would start one), and
        // a full inbox's objects go to the depot and the slabs, whose
        // locks are held here too.
        unsafe {
            c.inbox.peek(|home, p| {
                held(
                    &format_args!("inbox {home}"),
                    p,
                    "is in an inbox twice, or also elsewhere",
                )
            })
        }?;
        if depot.len() > c.depot.max() || depot.len() != c.depot.len() {
            return Err(format!(
                "depot holds {} objects: over its {} or not its count {}",
                depot.len(),
                c.depot.max(),
                c.depot.len()
            ));
        }
        if mag_objs > st.c.obj_alloc {
            return Err(format!(
                "magazines hold {mag_objs} objects but obj_alloc is {}",
                st.c.obj_alloc
            ));
        }
        if c.emergency_live.load(Ordering::Relaxed) != st.c.obj_emergency {
            return Err("emergency mirror differs from obj_emergency".into());
        }
        Ok(())
    }

    /// Strong references to the cache: handles, the registry's, and any a
    /// grow job or background pass holds right now (for leak tests; feature
    /// `testing`).
    #[cfg(feature = "testing")]
    pub fn ref_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Whether two handles name the same cache.
    pub fn same_cache(&self, other: &Cache) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The probes' snapshot of this cache now: what every probe passes and
    /// what the C ABI's `slabscope_cache_snapshot()` fills in.
    pub fn snapshot(&self) -> CacheSnapshot {
        self.inner.snapshot()
    }

    /// Turns this handle into a raw pointer for a foreign owner (the C
    /// ABI's `kmem_cache_t *`): its address is [`Cache::id`], and the
    /// handle's reference moves into it until [`Cache::from_raw`] takes it
    /// back.
    #[inline]
    pub fn into_raw(self) -> NonNull<c_void> {
        // The handle moves into the pointer: not dropped, the count stays.
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again, so its Arc moves
        // out exactly once.
        let inner = unsafe { std::ptr::read(&this.inner) };
        let p = Arc::into_raw(inner).cast_mut().cast::<c_void>();
        NonNull::new(p).expect("Arc::into_raw is never null")
    }

    /// Takes back the reference [`Cache::into_raw`] gave out.
    ///
    /// # Safety
    /// `ptr` came from [`Cache::into_raw`] and its reference has not been
    /// taken back yet; afterwards `ptr` must not be used again unless another
    /// reference to the cache keeps it alive.
    // Inline: the C ABI (another crate) rebuilds the handle on every
    // kmem_cache_alloc/free, whose fast paths must make no call.
    #[inline]
    pub unsafe fn from_raw(ptr: NonNull<c_void>) -> Cache {
        // SAFETY: ptr came from Arc::into_raw of an Arc<CacheInner> whose
        // reference the caller hands back.
        let inner = unsafe { Arc::from_raw(ptr.as_ptr().cast_const().cast::<CacheInner>()) };
        Cache { inner }
    }
}

// The paths past `Cache::alloc`'s and `Cache::free`'s inline fast paths take
// the `CacheInner`, not the `Cache`: a `&Cache` is the address of the handle,
// which a caller holding only the inner pointer (the C ABI, whose
// `kmem_cache_t *` is that pointer) must first store on its stack, and that
// store, with the frame around it, would sit on every call's fast path.

/// [`Cache::alloc`] past the inline fast path.
#[inline(never)]
fn alloc_general(c: &CacheInner, kmflags: u32) -> Option<NonNull<u8>> {
    crate::background::due();
    let obj = if c.slab_backed {
        sys_alloc(c, kmflags)?
    } else {
        c.mag_alloc(kmflags)?
    };
    if let Some(ctor) = &c.ctor
        && !ctor(obj, kmflags)
    {
        // SAFETY: obj was just allocated from this cache and is dropped here.
        unsafe { c.release(obj) };
        return None;
    }
    Some(obj)
}

#[cold]
fn sys_alloc(c: &CacheInner, kmflags: u32) -> Option<NonNull<u8>> {
    if c.flag(KMC_DESTROY) && c.lock_state().destroyed {
        used_after_destroy(&c.name);
    }
    loop {
        if let Some(p) = c.slabless_alloc(slab::OBJ_SYSTEM) {
            c.sys_count_add(1);
            return Some(p);
        }
        if kmflags & KM_NOSLEEP != 0 {
            return None;
        }
        std::thread::yield_now();
    }
}

/// [`Cache::free`] past the inline fast path: caches with a destructor,
/// `KMC_SLAB` caches, locked magazines, and every object whose header
/// does not carry the inline path's mark (emergency objects, and the
/// double frees and foreign pointers the debug checks then report).
///
/// # Safety
/// As [`Cache::free`].
#[inline(never)]
unsafe fn free_general(c: &CacheInner, obj: NonNull<u8>) {
    if let Some(dtor) = &c.dtor {
        dtor(obj);
    }
    // SAFETY: forwarded caller guarantee.
    unsafe { c.release(obj) }
}
