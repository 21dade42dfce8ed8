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
//! be caught mid-grow: a `pthread_atfork` prepare handler takes the queue
//! lock and waits until no grow is running, and keeps the lock across the
//! fork, so no worker starts one either. The parent's handler lets the
//! workers go on; the child's notes that it has no workers, so the next
//! dispatch starts new ones, which run any grow still queued. Without this
//! a grow running at the fork would stay in flight forever in the child:
//! the cache would fall back to emergency objects and never be destroyed.

use std::cell::RefCell;
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

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                running: 0,
                workers: 0,
            }),
            ready: Condvar::new(),
            idle: Condvar::new(),
        }));
        // SAFETY: the handlers are plain functions that only touch the
        // pool, which lives for the rest of the process.
        let r = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        if r != 0 {
            eprintln!(
                "slabscope: pthread_atfork failed ({}); a forked child may find a grow stuck",
                std::io::Error::from_raw_os_error(r)
            );
        }
        pool
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

thread_local! {
    /// The queue lock, held by the forking thread from `prepare` until
    /// `parent` or `child` (all three run on that thread).
    static FORK_GUARD: RefCell<Option<MutexGuard<'static, Queue>>> = const { RefCell::new(None) };
}

extern "C" fn prepare() {
    let p = pool();
    let mut q = lock(p);
    while q.running > 0 {
        q = p.idle.wait(q).unwrap_or_else(|e| e.into_inner());
    }
    FORK_GUARD.with(|g| *g.borrow_mut() = Some(q));
}

extern "C" fn parent() {
    FORK_GUARD.with(|g| g.borrow_mut().take());
}

extern "C" fn child() {
    FORK_GUARD.with(|g| {
        if let Some(mut q) = g.borrow_mut().take() {
            q.workers = 0;
            // Grows the parent had queued hold GROWING on their caches, so
            // nothing would dispatch again: start workers for them now.
            if !q.jobs.is_empty() {
                start_workers(pool(), &mut q);
            }
        }
    });
}
