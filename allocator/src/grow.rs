//! Asynchronous growth: the worker pool, the bounded wait, deadlock
//! detection. Ports `spl_cache_grow()`, `spl_cache_grow_work()`,
//! `__spl_cache_grow()` and the `spl_kmem_cache` taskq.
//!
//! An allocation that finds no free object anywhere calls [`CacheInner::grow`]:
//!
//! 1. If a reap is running (REAPING) it waits for the reap to finish and
//!    retries: the reap may have left objects behind.
//! 2. If no grow is in flight it sets GROWING and dispatches one grow to the
//!    pool of `kmem_threads` workers (`grow_start` probe). The job holds a
//!    reference (`refs`, SPL's `skc_ref`) that destroy waits for.
//! 3. If the cache is DEADLOCKED, it allocates an emergency object
//!    ([`crate::emergency`]) and returns it.
//! 4. Otherwise it waits up to `grow_timeout_ms` for GROWING to clear. If the
//!    grow is still running then, the cache is marked DEADLOCKED and
//!    `obj_deadlock` counted (`deadlock` probe). Either way it returns
//!    "no memory" and the allocation restarts (finding the new slab, or the
//!    DEADLOCKED flag, next time round).
//!
//! A worker maps a slab (`fault_grow_delay_ms` and `fault_slab_fail_permille`
//! inject delays and failures here), links it at the partial tail, clears
//! DEADLOCKED, clears GROWING, drops its reference and — on success only, as
//! in the seed — wakes the waiting allocations (`grow_done` probe).
//!
//! `KM_NOSLEEP` differs from the seed in one point: the seed waits up to HZ/10
//! for the grow even for `KM_NOSLEEP` and then returns NULL regardless;
//! slabscope dispatches the grow and returns `None` at once, since the
//! result is the same and the caller asked not to sleep. While DEADLOCKED a
//! `KM_NOSLEEP` allocation still gets an emergency object, as in the seed.
//!
//! The workers start on the first grow and live for the rest of the process,
//! like the taskq of a loaded module. They hold a cache only while a job for
//! it runs.

#[cfg(not(loom))]
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::Arc;
#[cfg(not(loom))]
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use crate::cache::CacheInner;
use crate::flags::{KM_NOSLEEP, KMC_DEADLOCKED, KMC_GROWING, KMC_REAPING};
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

struct Job {
    cache: Arc<CacheInner>,
}

#[cfg(not(loom))]
struct Pool {
    queue: Mutex<VecDeque<Job>>,
    ready: Condvar,
}

#[cfg(not(loom))]
fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
        }));
        for i in 0..tunables::current().kmem_threads {
            std::thread::Builder::new()
                .name(format!("slabscope-grow-{i}"))
                .spawn(move || worker(pool))
                .expect("slabscope: cannot start a grow worker thread (out of threads or memory)");
        }
        pool
    })
}

#[cfg(not(loom))]
fn worker(pool: &'static Pool) {
    loop {
        let job = {
            let mut q = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(j) = q.pop_front() {
                    break j;
                }
                q = pool.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        job.cache.grow_work();
    }
}

/// Under loom each grow runs on a loom thread of its own, so the model
/// explores it against the allocating threads (the pool's std threads would
/// be invisible to loom).
#[cfg(loom)]
fn dispatch(job: Job) {
    loom::thread::spawn(move || job.cache.grow_work());
}

#[cfg(not(loom))]
fn dispatch(job: Job) {
    let p = pool();
    p.queue
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push_back(job);
    p.ready.notify_one();
}

impl CacheInner {
    /// `spl_cache_grow()`: see the module docs.
    pub(crate) fn grow(self: &CacheInner, kmflags: u32) -> Grow {
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
            let snap = slabscope_probes::ENABLED.then(|| self.snapshot_locked(&st));
            let me = self.arc();
            drop(st);
            // Fire before dispatching: the worker's grow_done must never
            // precede its grow_start (tracers pair them to time grows).
            if let Some(snap) = snap {
                slabscope_probes::fire::grow_start(&snap);
            }
            dispatch(Job { cache: me });
            st = self.lock_state();
        }
        if self.flag(KMC_DEADLOCKED) {
            drop(st);
            return self.emergency_alloc();
        }
        if kmflags & KM_NOSLEEP != 0 {
            return Grow::NoMem;
        }
        let timeout = Duration::from_millis(tunables::current().grow_timeout_ms);
        #[cfg(loom)]
        let expires = self
            .loom_wait_expires
            .load(std::sync::atomic::Ordering::Relaxed);
        #[cfg(not(loom))]
        let expires = false;
        let (mut st, timed_out) = sync::wait_timeout_while(
            &self.grow_cv,
            st,
            timeout,
            expires,
            || self.lock_state(),
            |_| self.flag(KMC_GROWING),
        );
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

    /// `spl_cache_grow_work()` + `__spl_cache_grow()`, on a worker thread.
    fn grow_work(&self) {
        let delay_ms = tunables::fault::grow_delay_ms();
        if delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(delay_ms));
        }
        let base = if os::fault_roll(tunables::fault::slab_fail_permille()) {
            None
        } else {
            os::map_pages(self.geo.slab_size as usize)
        };
        // SAFETY: a fresh mapping of slab_size bytes, ours alone.
        let sks = base.map(|b| (b, unsafe { slab::init_slab(b, &self.geo, self.id()) }));
        let mut st = self.lock_state();
        let mut orphan = None;
        let result = match sks {
            Some((b, _)) if st.destroyed => {
                orphan = Some(b);
                -i64::from(libc::ENOMEM)
            }
            Some((_, s)) => {
                // SAFETY: s is a fresh slab of this cache on no list.
                unsafe { st.add_slab(s) };
                self.clear_flag(KMC_DEADLOCKED);
                0
            }
            None => {
                st.c.slab_fail += 1;
                -i64::from(libc::ENOMEM)
            }
        };
        // Fire while GROWING is still set, so this grow's grow_done precedes
        // the next grow_start of the cache (tracers pair them by cache).
        if slabscope_probes::ENABLED {
            slabscope_probes::fire::grow_done(&self.snapshot_locked(&st), result);
        }
        st.refs -= 1;
        self.clear_flag(KMC_GROWING);
        self.debug_check(&st);
        drop(st);
        if result == 0 {
            self.grow_cv.notify_all();
        }
        self.state_cv.notify_all();
        if let Some(b) = orphan {
            // SAFETY: the mapping was never linked anywhere.
            unsafe { os::unmap_pages(b, self.geo.slab_size as usize) };
        }
    }
}
