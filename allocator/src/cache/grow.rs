//! Growth: in the allocating thread when that needs no sleep, else on the
//! worker pool, with the bounded wait and deadlock detection. Ports
//! `spl_cache_grow()`, `spl_cache_grow_work()`, `__spl_cache_grow()` and the
//! `spl_kmem_cache` taskq.
//!
//! An allocation that finds no free object anywhere calls [`CacheInner::grow`]:
//!
//! 1. If a reap is running (REAPING) it waits for the reap to finish and
//!    retries: the reap may have left objects behind.
//! 2. If no grow is in flight it sets GROWING and takes a reference (`refs`,
//!    SPL's `skc_ref`) that destroy waits for. Then, with `grow_in_context`
//!    on (the default) and no grow delay injected, it grows the slab itself:
//!    the seed's `__spl_cache_grow(skc, flags | KM_NOSLEEP)` (`grow_start`,
//!    map, link, `grow_done`). On success it ends the grow as a worker would
//!    (below) and returns "look again". On failure a `KM_NOSLEEP` caller
//!    ends the grow and fails (a worker would only repeat the same
//!    non-sleeping attempt); a `KM_SLEEP` caller hands the grow — GROWING
//!    and the reference — to a worker, which may sleep. With
//!    `grow_in_context` off every grow is dispatched, as in the seed. Each
//!    dispatch fires `grow_start` for the worker's attempt.
//! 3. If the cache is DEADLOCKED, it allocates an emergency object
//!    ([`crate::cache::emergency`]) and returns it.
//! 4. Otherwise it waits up to `grow_timeout_ms` for GROWING to clear. If the
//!    grow is still running then, the cache is marked DEADLOCKED and
//!    `obj_deadlock` counted (`deadlock` probe). Either way it returns
//!    "no memory" and the allocation restarts (finding the new slab, or the
//!    DEADLOCKED flag, next time round).
//!
//! A grow — in the allocating thread or on a worker — maps a slab
//! (`fault_slab_fail_permille` fails it; a worker first sleeps
//! `fault_grow_delay_ms`), links it at the partial tail, clears DEADLOCKED,
//! fires `grow_done`, clears GROWING, drops its reference and — on success
//! only, as in the seed — wakes the waiting allocations. So one grow is in
//! flight per cache at a time whichever thread runs it, every mapping
//! attempt is one `grow_start` / `grow_done` pair and one count in
//! `slab_create` or `slab_fail`, and the pairs of a cache never interleave.
//! Wake-ups go only to someone waiting (`grow_waiters` for `grow_cv`, a
//! pending destroy for `state_cv`): a futex wake is a system call even
//! when nobody sleeps, and an in-context grow usually has no waiter.
//!
//! # Departure from the seed: growing in the allocating thread
//!
//! The seed always grows on its taskq and says why, in `spl_cache_grow()`:
//! "It would be nice to reduce the overhead of context switch ... by trying
//! to allocate a new slab in the current process context with KM_NOSLEEP
//! flag. However, this can't be applied to vmem/kvmem due to a bug that
//! spl_vmalloc() doesn't honor gfp flags in page table allocation." (Older
//! SPL did grow in context for non-vmem caches.) Userspace has no such bug:
//! the allocating thread holds no slabscope lock while it maps and touches
//! the slab (the magazine is released before `grow` is called, the cache
//! lock before the mapping), so a slow page fault delays that thread alone
//! and cannot deadlock against the allocator.
//! "Sleeping" is what fault injection simulates: with a grow delay the
//! in-context attempt fails at once, without mapping, and the asynchronous
//! path, deadlock detection and emergency objects run exactly as before.
//!
//! Measured on the cold ramp of issue 7 (one million 64-byte objects from
//! a fresh cache, `slabscope-bench ramp`, pinned, 7 interleaved runs on the
//! shared 2-vCPU reference VM), before any other change: median 224 ns per
//! object (218–238) with every grow handed to a worker — a futex hand-off
//! and a wait per 4 KiB slab of 42 objects — and 80 ns (78–82) growing in
//! context; mimalloc took 6.2–6.8 ns in its fast runs. What remained was one
//! `mmap` and the page faults of each slab; with slabs carved from
//! huge-page reservations (see [`crate::os::map_slab`]) the same ramp takes
//! 15.7 ns against mimalloc's 6.0 (medians of 11 interleaved runs). Of
//! that, perf puts about a third in the magazine fast path (its
//! compare-and-swap), a quarter in clearing the huge pages (an object
//! takes 96 bytes of slab with its header), a fifth in the magazine refill
//! that takes the new slab's objects, and a tenth in the grow itself
//! (mostly writing the 42 object headers and taking the cache lock).
//! Those figures predate the restartable-sequence magazines and the
//! one-word object header; with both, the ramp takes 9.0 ns against
//! mimalloc's 6.0, 1.5× (medians of 11 interleaved runs), and clearing the
//! huge pages is the largest part (about two fifths), then the magazine
//! fast path and the grow (about a fifth each) and the refill (an eighth).
//!
//! `KM_NOSLEEP` differs from the seed in one more point: the seed waits up
//! to HZ/10 for a dispatched grow even for `KM_NOSLEEP` and then returns
//! NULL regardless; slabscope dispatches the grow and returns `None` at once,
//! since the result is the same and the caller asked not to sleep. While
//! DEADLOCKED a `KM_NOSLEEP` allocation still gets an emergency object, as in
//! the seed.
//!
//! # Grows that keep failing
//!
//! When every slab mapping fails at once (`mmap` refused, or
//! `fault_slab_fail_permille` = 1000), the seed never hands a `KM_SLEEP`
//! allocation anything: `spl_cache_grow_work()` clears GROWING and wakes
//! the waiters only `if (error == 0)`, so the waiter in `spl_cache_grow()`
//! sleeps out its `wait_event_timeout(..., HZ / 10)`, finds GROWING clear
//! (so the cache is not DEADLOCKED, and `spl_emergency_alloc()` is never
//! reached) and returns `-ENOMEM`; `spl_cache_refill()` returns NULL and
//! `spl_kmem_cache_alloc()` does `goto restart` for every non-`KM_NOSLEEP`
//! caller. The allocation retries about ten times a second, each retry
//! counted in `slab_fail`, forever. slabscope keeps that by default. The
//! `grow_fail_emergency` tunable bounds it: once that many grows in a row
//! have failed (`fail_streak`, reset by a grow that succeeds), a
//! `KM_SLEEP` allocation takes an emergency object instead of waiting for
//! the next grow. The inspector flags a cache whose grows keep failing.
//!
//! The workers start on the first dispatched grow and live for the rest of
//! the process, like the taskq of a loaded module; a program whose grows
//! all succeed in context never starts them. They hold a cache only while a
//! job for it runs. [`crate::taskq`] keeps the pool, and keeps it
//! consistent across `fork()`.

use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use super::CacheInner;
use crate::flags::{KM_NOSLEEP, KMC_DEADLOCKED, KMC_DESTROY, KMC_GROWING, KMC_REAPING};
use crate::slab::SlabState;
use crate::sync::MutexGuard;
use crate::{os, slab, sync, tunables};

/// What a call to [`CacheInner::grow`] achieved.
#[derive(Debug)]
pub(crate) enum Grow {
    /// An emergency object for the caller.
    Emergency(NonNull<u8>),
    /// Look again: a slab, a reap or a partial slab appeared.
    Again,
    /// Nothing yet (`-ENOMEM`): `KM_SLEEP` retries, `KM_NOSLEEP` fails.
    NoMem,
}

/// A grow handed to the worker pool.
pub(crate) struct Job {
    pub(crate) cache: Arc<CacheInner>,
}

#[cfg(not(loom))]
impl crate::taskq::Job for Job {
    fn run(&self) {
        self.cache.grow_work();
    }
}

/// The grow worker pool (SPL's `spl_kmem_cache` taskq).
#[cfg(not(loom))]
pub(crate) static TASKQ: crate::taskq::Taskq<Job> = crate::taskq::Taskq::new("slabscope-grow");

/// Under loom each grow runs on a loom thread of its own, so the model
/// explores it against the allocating threads (the pool's std threads would
/// be invisible to loom).
#[cfg(loom)]
fn dispatch(job: Job) {
    loom::thread::spawn(move || job.cache.grow_work());
}

#[cfg(not(loom))]
fn dispatch(job: Job) {
    TASKQ.dispatch(job);
}

impl CacheInner {
    /// `spl_cache_grow()`: see the module docs.
    pub(crate) fn grow(self: &CacheInner, kmflags: u32) -> Grow {
        // A forked child starts the background threads it lacks here. The
        // registry configured them (`background::restart` runs what it set
        // up), so this layer names no module above it.
        crate::background::restart();
        let mut st = self.lock_state();
        self.check_alive(&st);
        if self.flag(KMC_REAPING) {
            while self.flag(KMC_REAPING) {
                st = self.state_cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            return Grow::Again;
        }
        // Someone else's grow landed while we were getting here.
        if !st.partial.is_empty() {
            return Grow::Again;
        }
        if !self.flag(KMC_GROWING) {
            self.set_flag(KMC_GROWING);
            st.refs += 1;
            if self.grows_in_context() {
                // `__spl_cache_grow(skc, flags | KM_NOSLEEP)` in this thread.
                let snap = slabscope_probes::ENABLED.then(|| self.snapshot_locked(&st));
                drop(st);
                if let Some(snap) = snap {
                    slabscope_probes::fire::grow_start(&snap);
                }
                let (locked, result) = self.grow_slab();
                st = locked;
                if result == 0 {
                    self.end_grow(st, result);
                    return Grow::Again;
                }
                if kmflags & KM_NOSLEEP != 0 {
                    // A worker would make the same non-sleeping attempt
                    // again (the seed's worker grows with the caller's
                    // flags); the caller asked not to wait for it.
                    self.end_grow(st, result);
                    st = self.lock_state();
                } else {
                    // Hand this grow, GROWING and its reference, to a
                    // worker, which may sleep.
                    st = self.dispatch_locked(st);
                }
            } else {
                st = self.dispatch_locked(st);
            }
        }
        if self.flag(KMC_DEADLOCKED) {
            drop(st);
            return self.emergency_alloc();
        }
        if kmflags & KM_NOSLEEP != 0 {
            return Grow::NoMem;
        }
        let tun = tunables::current();
        // Not in the seed (module docs, "Grows that keep failing").
        let bound = u64::from(tun.grow_fail_emergency);
        if bound > 0 && st.fail_streak >= bound {
            drop(st);
            return self.emergency_alloc();
        }
        let timeout = Duration::from_millis(tun.grow_timeout_ms);
        #[cfg(loom)]
        let expires = self
            .loom_wait_expires
            .load(std::sync::atomic::Ordering::Relaxed);
        #[cfg(not(loom))]
        let expires = false;
        st.grow_waiters += 1;
        let (mut st, timed_out) = sync::wait_timeout_while(
            &self.grow_cv,
            st,
            timeout,
            expires,
            || self.lock_state(),
            |_| self.flag(KMC_GROWING),
        );
        st.grow_waiters -= 1;
        if timed_out && self.flag(KMC_GROWING) {
            self.set_flag(KMC_DEADLOCKED);
            st.c.obj_deadlock += 1;
            let snap = slabscope_probes::ENABLED.then(|| self.snapshot_locked(&st));
            drop(st);
            if let Some(snap) = snap {
                slabscope_probes::fire::deadlock(&snap);
            }
        }
        Grow::NoMem
    }

    /// Whether this grow may first be tried in the allocating thread: the
    /// `grow_in_context` tunable, unless a grow delay is injected (a delayed
    /// grow stands for memory only a sleeping allocation gets, so the
    /// non-sleeping attempt fails at once, before mapping anything).
    fn grows_in_context(&self) -> bool {
        #[cfg(loom)]
        if self
            .loom_async_only
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return false;
        }
        tunables::current().grow_in_context != 0 && tunables::fault::grow_delay_ms() == 0
    }

    /// Dispatches the grow the caller started (GROWING set, a reference
    /// held, both now the job's) to the worker pool, firing `grow_start`.
    /// Takes the cache lock and gives it back.
    fn dispatch_locked<'a>(
        &'a self,
        mut st: MutexGuard<'a, SlabState>,
    ) -> MutexGuard<'a, SlabState> {
        st.grow_dispatches += 1;
        let snap = slabscope_probes::ENABLED.then(|| self.snapshot_locked(&st));
        let me = self.arc();
        drop(st);
        // Fire before dispatching: the worker's grow_done must never
        // precede its grow_start (tracers pair them to time grows).
        if let Some(snap) = snap {
            slabscope_probes::fire::grow_start(&snap);
        }
        dispatch(Job { cache: me });
        self.lock_state()
    }

    /// `spl_cache_grow_work()`, on a worker thread.
    pub(crate) fn grow_work(&self) {
        let delay_ms = tunables::fault::grow_delay_ms();
        if delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(delay_ms));
        }
        let (st, result) = self.grow_slab();
        self.end_grow(st, result);
    }

    /// `__spl_cache_grow()`: maps one slab (`fault_slab_fail_permille`
    /// fails it), links it at the partial tail, clears DEADLOCKED and fires
    /// `grow_done`. Runs without the cache lock, with GROWING set and the
    /// grow's reference held; returns the lock, GROWING still set, and the
    /// result: 0 or `-ENOMEM`.
    fn grow_slab(&self) -> (MutexGuard<'_, SlabState>, i64) {
        let len = self.geo.slab_size as usize;
        let class = slab::class_of_tag(self.fp.tag);
        let base = if os::fault_roll(tunables::fault::slab_fail_permille()) {
            None
        } else {
            let t = tunables::current();
            let reserve = t.slab_reserve_kb as usize * 1024;
            // Huge pages only for a cache of small objects that has grown
            // past a reservation of slabs (see `os::SlabPages`).
            let slabs = self.lock_state().c.slab_total as usize;
            let pages = os::SlabPages::of(
                self.geo.obj_size_full as usize,
                slabs * len,
                reserve,
                t.slab_huge_pages == 1,
            );
            // A headerless size class's slabs come from its window (see
            // `os::window`).
            let window = class.filter(|_| self.geo.headerless() && t.slab_windows == 1);
            os::map_slab(len, reserve, pages, window)
        };
        let sks = base.map(|b| {
            // SAFETY: a fresh mapping of slab_size bytes, ours alone.
            let s = unsafe { slab::init_slab(b, &self.geo, self.id()) };
            // A size class's slab is marked in the page map before any of
            // its objects is handed out, for `kmem`'s inline free.
            if let Some(i) = class {
                os::ranges::mark_class_slab(b.as_ptr() as usize, i, self.geo.headerless());
            }
            (b, s)
        });
        let mut st = self.lock_state();
        let result = match sks {
            Some((b, _)) if st.destroyed => {
                // Only an allocation racing destroy (a caller's bug) gets
                // here; unmapping under the lock keeps this path simple.
                // SAFETY: the mapping was never linked anywhere.
                unsafe { os::unmap_pages(b, len) };
                -i64::from(libc::ENOMEM)
            }
            Some((_, s)) => {
                // SAFETY: s is a fresh slab of this cache on no list.
                unsafe { st.add_slab(&self.geo, s) };
                // Every setter holds the cache lock, as we do: test first
                // and skip the locked read-modify-write when it is clear.
                if self.flag(KMC_DEADLOCKED) {
                    self.clear_flag(KMC_DEADLOCKED);
                }
                st.fail_streak = 0;
                0
            }
            None => {
                st.c.slab_fail += 1;
                st.fail_streak += 1;
                -i64::from(libc::ENOMEM)
            }
        };
        // Fire while GROWING is still set, so this grow's grow_done precedes
        // the next grow_start of the cache (tracers pair them by cache).
        if slabscope_probes::ENABLED {
            slabscope_probes::fire::grow_done(&self.snapshot_locked(&st), result);
        }
        (st, result)
    }

    /// The end of `spl_cache_grow_work()`: drops the grow's reference,
    /// clears GROWING and — on success only, as in the seed — wakes the
    /// allocations waiting for the grow. Each condition variable is
    /// notified only when someone waits on it (a futex wake is a system
    /// call even when nobody sleeps): `grow_cv` when an allocation waits
    /// for this grow, `state_cv` when destroy waits for the reference.
    fn end_grow(&self, mut st: MutexGuard<'_, SlabState>, result: i64) {
        st.refs -= 1;
        self.clear_flag(KMC_GROWING);
        self.debug_check(&st);
        let wake_growers = result == 0 && st.grow_waiters > 0;
        let wake_destroy = self.flag(KMC_DESTROY);
        drop(st);
        if wake_growers {
            self.grow_cv.notify_all();
        }
        if wake_destroy {
            self.state_cv.notify_all();
        }
    }
}

impl crate::Cache {
    /// Grows this cache handed to the grow workers so far; every other grow
    /// (`slab_create + slab_fail` counts them all) ran in the allocating
    /// thread. For tests of `grow_in_context` (feature `testing`).
    #[cfg(feature = "testing")]
    pub fn grow_dispatches(&self) -> u64 {
        self.inner.lock_state().grow_dispatches
    }
}
