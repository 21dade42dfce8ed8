//! The grow worker pool: SPL's `spl_kmem_cache` taskq, `kmem_threads`
//! threads that run dispatched jobs. It knows nothing of caches: a job is
//! anything that implements [`Job`]; the cache's grows (`cache/grow.rs`)
//! are its one user, through one static [`Taskq`].
//!
//! The workers start on the first dispatch and live for the rest of the
//! process, like the taskq of a loaded module. They hold a cache only while
//! a grow for it runs.
//!
//! # fork()
//!
//! A forked child has none of its parent's threads, so the pool must not
//! be caught mid-grow: the fork handlers' prepare handler calls
//! [`Taskq::prepare_fork`], which takes the queue lock and waits until no grow is
//! running, and keeps the lock across the fork, so no worker starts one
//! either. In the parent the workers then go on; the child notes that it
//! has no workers, so the next dispatch starts new ones, and starts them at
//! once for any grow still queued. Without this a grow running at the fork
//! would stay in flight forever in the child: the cache would fall back to
//! emergency objects and never be destroyed.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::tunables;

/// Work for the pool.
pub(crate) trait Job: Send + 'static {
    /// Runs the job on a worker.
    fn run(&self);
}

struct Queue<J> {
    jobs: VecDeque<J>,
    /// Grows being run by a worker right now.
    running: usize,
    /// Workers alive in this process (0 in a forked child until the next
    /// dispatch).
    workers: u32,
}

/// A worker pool whose threads are named `{name}-{i}`.
pub(crate) struct Taskq<J> {
    name: &'static str,
    queue: Mutex<Queue<J>>,
    /// A job was queued.
    ready: Condvar,
    /// `running` dropped to 0 (a fork is waiting for it).
    idle: Condvar,
}

impl<J> Taskq<J> {
    /// A pool with no workers yet.
    pub(crate) const fn new(name: &'static str) -> Self {
        Taskq {
            name,
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                running: 0,
                workers: 0,
            }),
            ready: Condvar::new(),
            idle: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue<J>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<J: Job> Taskq<J> {
    /// Queues `job` for a worker, starting the workers first if this
    /// process has none.
    pub(crate) fn dispatch(&'static self, job: J) {
        let mut q = self.lock();
        if q.workers == 0 {
            self.start_workers(&mut q);
        }
        q.jobs.push_back(job);
        drop(q);
        self.ready.notify_one();
    }

    fn start_workers(&'static self, q: &mut Queue<J>) {
        for i in 0..tunables::current().kmem_threads {
            std::thread::Builder::new()
                .name(format!("{}-{i}", self.name))
                .spawn(move || self.worker())
                .expect("slabscope: cannot start a grow worker thread (out of threads or memory)");
            q.workers += 1;
        }
    }

    fn worker(&'static self) {
        loop {
            let job = {
                let mut q = self.lock();
                loop {
                    if let Some(j) = q.jobs.pop_front() {
                        q.running += 1;
                        break j;
                    }
                    q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            job.run();
            let mut q = self.lock();
            q.running -= 1;
            if q.running == 0 {
                self.idle.notify_all();
            }
        }
    }

    /// Before a fork: the queue lock, once no job is running.
    pub(crate) fn prepare_fork(&'static self) -> ForkLock<J> {
        let mut q = self.lock();
        while q.running > 0 {
            q = self.idle.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        ForkLock { pool: self, q }
    }
}

/// The queue lock, held from [`Taskq::prepare_fork`] across a fork.
pub(crate) struct ForkLock<J: 'static> {
    pool: &'static Taskq<J>,
    q: MutexGuard<'static, Queue<J>>,
}

impl<J: Job> ForkLock<J> {
    /// Whether a queued job matches `f` (a worker of the child will run it).
    pub(crate) fn queued(&self, f: impl Fn(&J) -> bool) -> bool {
        self.q.jobs.iter().any(f)
    }

    /// In the child: it has no workers; start some for the jobs the
    /// parent had queued (a queued grow holds GROWING on its cache, so
    /// nothing would dispatch again).
    pub(crate) fn child(mut self) {
        self.q.workers = 0;
        if !self.q.jobs.is_empty() {
            self.pool.start_workers(&mut self.q);
        }
    }
}
