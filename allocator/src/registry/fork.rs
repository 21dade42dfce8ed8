//! `fork()`: a forked child has only the thread that called `fork`, so a
//! lock any other thread held at that instant would stay held in the child
//! for good, and work another thread had started (a grow, a reap) would
//! never finish there. glibc's malloc takes all its locks around a fork;
//! so does slabscope, with one `pthread_atfork` registration made when the
//! first cache is created.
//!
//! - **prepare** takes, in the crate's lock order: the grow pool's queue
//!   once no grow is running (`Taskq::prepare_fork`), the cache
//!   registry (no cache is created or destroyed across the fork), then for
//!   each cache every magazine lock, the depot lock and the cache lock, and
//!   last the slab reservation. Threads that try to enter slabscope in the
//!   meantime wait, as they wait for any of those locks.
//! - **parent** releases them all.
//! - **child** first tidies what the vanished threads left in flight: a
//!   reap's `KMC_REAPING` and its reference, a grow's `KMC_GROWING` and
//!   its reference (unless the grow waits in the queue: the child's own
//!   workers run it), the count of threads waiting for a grow. Then it
//!   releases the locks, has the pool start fresh workers for queued grows,
//!   and lets the background reaper and statistics threads, which the
//!   child does not have, start again at its next grow.
//!
//! What another thread held at the fork stays out of the child's reach:
//! the objects it had allocated, and the objects it was moving between a
//! magazine and the slabs outside any lock. They count as allocated there,
//! as in-use objects do. A restartable sequence cut off by the fork never
//! committed, so it changed nothing.
//!
//! A process that has never had a second thread (glibc's
//! `__libc_single_threaded`) has nobody to hold a lock or leave work in
//! flight, and all three handlers do nothing there. (Threads made with a
//! raw `clone`, which glibc does not count, cannot use `malloc` safely on
//! glibc either: they have no thread control block of their own.)
//!
//! As with glibc's malloc, a `fork` from a signal handler that interrupted
//! slabscope code holding a lock would wait in prepare for that lock (in a
//! single-threaded process, the child would find it held). Constructors
//! and destructors run with no slabscope lock held, so they may fork.

use std::cell::RefCell;
use std::sync::{Arc, Once};

use crate::background;
use crate::cache::CacheInner;
use crate::cache::grow::{Job, TASKQ};
use crate::flags::{KMC_GROWING, KMC_REAPING};
use crate::magazine::MagGuard;
use crate::os;
use crate::slab::SlabState;
use crate::sync::MutexGuard;
use crate::taskq::ForkLock;

/// Registers the handlers, once per process (a child inherits them). Not
/// under Miri, which has no `pthread_atfork` (and no `fork`).
pub(crate) fn ensure_handlers() {
    if cfg!(miri) {
        return;
    }
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the handlers are plain functions that touch only
        // slabscope's own process-wide state, which lives until exit.
        let r = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        if r != 0 {
            eprintln!(
                "slabscope: pthread_atfork failed ({}); a child forked while another thread \
                 is inside slabscope may find a lock held forever",
                std::io::Error::from_raw_os_error(r)
            );
        }
    });
}

/// One cache's locks, in the order they were taken.
struct CacheLocks<'a> {
    /// Borrowed from a reference taken out of its `Arc` (`Arc::into_raw`)
    /// so the locks may borrow it for `'static`; given back by
    /// [`Held::release`].
    cache: &'a CacheInner,
    #[allow(dead_code, reason = "held for their Drop")]
    mags: Vec<MagGuard<'a>>,
    #[allow(dead_code, reason = "held for its Drop")]
    depot: MutexGuard<'a, Vec<*mut u8>>,
    state: MutexGuard<'a, SlabState>,
}

impl CacheLocks<'_> {
    /// In the child: ends the reap and the grow that threads which are
    /// gone had in flight. `queued`: a grow of this cache waits in the
    /// pool's queue, and owns GROWING and a reference.
    fn end_orphans(&mut self, queued: bool) {
        let c = self.cache;
        // Each flag comes with a reference (refs >= 1 while it is set).
        if c.flag(KMC_REAPING) {
            c.clear_flag(KMC_REAPING);
            self.state.refs = self.state.refs.saturating_sub(1);
        }
        if c.flag(KMC_GROWING) && !queued {
            c.clear_flag(KMC_GROWING);
            self.state.refs = self.state.refs.saturating_sub(1);
        }
        self.state.grow_waiters = 0;
    }
}

/// Everything prepare took; dropped (unlocked) by parent or child.
struct Held {
    locks: Vec<CacheLocks<'static>>,
    registry: std::sync::MutexGuard<'static, Vec<Arc<CacheInner>>>,
    reserve: os::ReserveLock,
    queue: ForkLock<Job>,
}

impl Held {
    /// Unlocks everything; returns the pool's lock for the caller to
    /// finish with.
    fn release(self) -> ForkLock<Job> {
        let Held {
            locks,
            registry,
            reserve,
            queue,
        } = self;
        drop(reserve);
        for l in locks {
            let p: *const CacheInner = l.cache;
            drop(l);
            // SAFETY: p came from Arc::into_raw in prepare, and the locks
            // that borrowed it are gone.
            drop(unsafe { Arc::from_raw(p) });
        }
        drop(registry);
        queue
    }
}

thread_local! {
    /// What prepare took; the three handlers run on the forking thread.
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

extern "C" fn prepare() {
    // A process that never had a second thread has no thread that could
    // hold a lock across the fork, nor grows or reaps in flight: nothing to
    // take, and nothing written to the pages of every cache's locks, which
    // parent and child would each copy after the fork (about 90 pages of a
    // shell's, a third of what a fork-and-exec costs it).
    if background::single_threaded() {
        return;
    }
    // HELD's first use on this thread registers its destructor, which glibc
    // records with calloc: under the malloc library that calloc is ours,
    // and with the caches' locks held below it could wait on one of them
    // for good. So it is touched before any lock is taken.
    HELD.with(|_| ());
    let queue = TASKQ.prepare_fork();
    let registry = super::lock_registry();
    let mut locks = Vec::with_capacity(registry.len());
    for c in registry.iter() {
        let p = Arc::into_raw(c.clone());
        // SAFETY: the reference count taken by into_raw keeps the cache
        // alive until Held::release, which drops these locks first.
        let c: &'static CacheInner = unsafe { &*p };
        let mags = (0..c.mags.len()).map(|i| c.mags.lock(i)).collect();
        let depot = c.depot.lock();
        let state = c.lock_state();
        locks.push(CacheLocks {
            cache: c,
            mags,
            depot,
            state,
        });
    }
    let reserve = os::lock_reserve();
    HELD.with(|h| {
        *h.borrow_mut() = Some(Held {
            locks,
            registry,
            reserve,
            queue,
        })
    });
}

extern "C" fn parent() {
    if let Some(held) = HELD.with(|h| h.borrow_mut().take()) {
        drop(held.release());
    }
}

extern "C" fn child() {
    let Some(mut held) = HELD.with(|h| h.borrow_mut().take()) else {
        return;
    };
    for l in &mut held.locks {
        let cache: *const CacheInner = l.cache;
        let queued = held
            .queue
            .queued(|j| std::ptr::eq(Arc::as_ptr(&j.cache), cache));
        l.end_orphans(queued);
    }
    held.release().child();
    background::forked();
}
