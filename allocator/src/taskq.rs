//! The grow worker pool: SPL's `spl_kmem_cache` taskq, `kmem_threads`
//! threads that run dispatched grows ([`crate::grow`]).
//!
//! The workers start on the first dispatch and live for the rest of the
//! process, like the taskq of a loaded module. They hold a cache only while
//! a grow for it runs.
//!
//! # fork()
//!
//! A forked child has none of its parent's threads, so the pool must not
//! be caught mid-grow: [`crate::fork`]'s prepare handler calls
//! [`prepare_fork`], which takes the queue lock and waits until no grow is
//! running, and keeps the lock across the fork, so no worker starts one
//! either. In the parent the workers then go on; the child notes that it
//! has no workers, so the next dispatch starts new ones, and starts them at
//! once for any grow still queued. Without this a grow running at the fork
//! would stay in flight forever in the child: the cache would fall back to
//! emergency objects and never be destroyed.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use crate::grow::Job;
use crate::tunables;

struct Queue {
    jobs: VecDeque<Job>,
    /// Grows being run by a worker right now.
    running: usize,
    /// Workers alive in this process (0 in a forked child until the next
    /// dispatch).
    workers: u32,
}

struct Pool {
    queue: Mutex<Queue>,
    /// A job was queued.
    ready: Condvar,
    /// `running` dropped to 0 (a fork is waiting for it).
    idle: Condvar,
}

static POOL: OnceLock<&'static Pool> = OnceLock::new();

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        Box::leak(Box::new(Pool {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                running: 0,
                workers: 0,
            }),
            ready: Condvar::new(),
            idle: Condvar::new(),
        }))
    })
}

fn lock(p: &'static Pool) -> MutexGuard<'static, Queue> {
    p.queue.lock().unwrap_or_else(|e| e.into_inner())
}

/// Queues `job` for a worker, starting the workers first if this process
/// has none.
pub(crate) fn dispatch(job: Job) {
    let p = pool();
    let mut q = lock(p);
    if q.workers == 0 {
        start_workers(p, &mut q);
    }
    q.jobs.push_back(job);
    drop(q);
    p.ready.notify_one();
}

fn start_workers(p: &'static Pool, q: &mut Queue) {
    for i in 0..tunables::current().kmem_threads {
        std::thread::Builder::new()
            .name(format!("slabscope-grow-{i}"))
            .spawn(move || worker(p))
            .expect("slabscope: cannot start a grow worker thread (out of threads or memory)");
        q.workers += 1;
    }
}

fn worker(p: &'static Pool) {
    loop {
        let job = {
            let mut q = lock(p);
            loop {
                if let Some(j) = q.jobs.pop_front() {
                    q.running += 1;
                    break j;
                }
                q = p.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        job.cache.grow_work();
        let mut q = lock(p);
        q.running -= 1;
        if q.running == 0 {
            p.idle.notify_all();
        }
    }
}

/// The queue lock, held from [`prepare_fork`] across a fork.
pub(crate) struct ForkLock(MutexGuard<'static, Queue>);

impl ForkLock {
    /// Whether a grow of `cache` waits in the queue (a worker of the child
    /// will run it).
    pub(crate) fn queued(&self, cache: &crate::cache::CacheInner) -> bool {
        self.0
            .jobs
            .iter()
            .any(|j| std::ptr::eq(std::sync::Arc::as_ptr(&j.cache), cache))
    }

    /// In the child: it has no workers; start some for the grows the
    /// parent had queued, which hold GROWING on their caches, so nothing
    /// would dispatch again.
    pub(crate) fn child(mut self) {
        self.0.workers = 0;
        if !self.0.jobs.is_empty() {
            start_workers(pool(), &mut self.0);
        }
    }
}

/// Before a fork: the queue lock, once no grow is running (`None` when
/// this process never dispatched a grow).
pub(crate) fn prepare_fork() -> Option<ForkLock> {
    let p = POOL.get()?;
    let mut q = lock(p);
    while q.running > 0 {
        q = p.idle.wait(q).unwrap_or_else(|e| e.into_inner());
    }
    Some(ForkLock(q))
}
