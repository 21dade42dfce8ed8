//! slabscope's periodic threads: the background reaper (`reap_interval_ms`)
//! and the `cache_stats` publisher (`stats_interval_ms`). Each starts with
//! the first cache that asks for it, at most once per process, and again
//! in a forked child, which has none of its parent's threads ([`forked`];
//! the child's next grow starts them, through [`restart`]).
//!
//! This module knows nothing of caches: what each thread does every
//! interval is a plain function the registry hands to [`Periodic::ensure`],
//! and [`restart`] runs again what was handed over, so the grow path can
//! restart the threads without naming the registry above it.
//!
//! # No thread in a single-threaded process
//!
//! The statistics thread would make every program on the `malloc` library
//! multithreaded from its first allocation, and some programs must stay
//! single-threaded: `unshare(CLONE_NEWUSER)` fails with `EINVAL` in a
//! process with a second thread, so `unshare -U`, and the sandboxes and
//! container runtimes that start the same way, broke when preloaded. So
//! while the process has never had a second thread (glibc's
//! `__libc_single_threaded`, which the first `pthread_create` clears for
//! good, in forked children too), the publisher is deferred: every
//! allocation slow path calls [`due`], which runs the registry's
//! non-blocking publisher at most once per interval, and starts the thread
//! as soon as the program has started one of its own. (A single-threaded
//! program that stops allocating stops publishing: nothing in it changes
//! meanwhile but what the frees put back.) The reaper, off unless asked
//! for, is a thread as soon as it is asked for.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::os;

/// One periodic thread.
pub(crate) struct Periodic {
    /// The thread's name.
    name: &'static str,
    /// What it is, and what the program does without it, for the message
    /// when it cannot start.
    what: &'static str,
    without: &'static str,
    /// Whether this process has started it.
    started: AtomicBool,
    /// The interval and the work it was first asked to run, for
    /// [`restart`] (read without a lock: a forked child may restart it).
    job: OnceLock<Job>,
    /// Whether the thread is deferred: [`due`] runs the job's `inline`.
    deferred: AtomicBool,
    /// Coarse ms before which [`due`] does not run `inline` again.
    next_ms: AtomicU64,
}

/// What a periodic thread runs.
#[derive(Clone, Copy)]
pub(crate) struct Job {
    /// Its interval.
    pub(crate) every_ms: u64,
    /// What the thread runs every interval.
    pub(crate) tick: fn(),
    /// What an allocation slow path runs instead, at most once per
    /// interval, while the process is single-threaded (see the module
    /// docs): work that neither waits for a lock nor allocates. `None`:
    /// the thread is never deferred.
    pub(crate) inline: Option<fn()>,
}

impl Periodic {
    const fn new(name: &'static str, what: &'static str, without: &'static str) -> Self {
        Periodic {
            name,
            what,
            without,
            started: AtomicBool::new(false),
            job: OnceLock::new(),
            deferred: AtomicBool::new(false),
            next_ms: AtomicU64::new(0),
        }
    }

    /// Starts the thread, which runs `job.tick` every `job.every_ms` ms,
    /// unless that is 0 or this process has started it already; defers it
    /// instead while the process is single-threaded, if the job can be
    /// (see the module docs).
    pub(crate) fn ensure(&self, job: Job) {
        let Job { every_ms, tick, .. } = job;
        if every_ms == 0 || self.started.load(Relaxed) {
            return;
        }
        let _ = self.job.set(job);
        if job.inline.is_some() && single_threaded() {
            // The first turn one interval from now, as the thread's: a
            // program that exits sooner never pays for one. (Every cache
            // built calls this; only the first sets the time.)
            self.defer(os::coarse_ms(), every_ms);
            return;
        }
        if self.started.swap(true, Relaxed) {
            return;
        }
        self.deferred.store(false, Relaxed);
        let every = Duration::from_millis(every_ms);
        let spawned = std::thread::Builder::new()
            .name(self.name.into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    tick();
                }
            });
        if let Err(e) = spawned {
            eprintln!(
                "slabscope: cannot start {} ({e}); {}",
                self.what, self.without
            );
        }
    }

    /// [`Self::ensure`] with what it was first asked to run, if anything.
    fn restart(&self) {
        if self.started.load(Relaxed) {
            return;
        }
        if let Some(&job) = self.job.get() {
            self.ensure(job);
        }
    }

    /// The deferred thread's turn (see [`due`]): the thread, if the process
    /// has one of its own now; else `inline`, if its interval has passed.
    #[cold]
    #[inline(never)]
    fn run_deferred(&self) {
        let Some(&Job {
            every_ms,
            inline: Some(inline),
            ..
        }) = self.job.get()
        else {
            return;
        };
        if !single_threaded() {
            self.restart();
            return;
        }
        if self.claim_turn(os::coarse_ms(), every_ms) {
            inline();
        }
    }

    /// Defers the thread, its first turn `every_ms` after `now`; only the
    /// first call of a process sets the time (every cache built calls it).
    fn defer(&self, now: u64, every_ms: u64) {
        if !self.deferred.swap(true, Relaxed) {
            self.next_ms.store(now + every_ms, Relaxed);
        }
    }

    /// Whether a deferred turn is due at `now`; if so, it is claimed, and
    /// the next is `every_ms` later. Claimed before it runs: the inline
    /// work may allocate, and so come back here, as may a signal handler.
    fn claim_turn(&self, now: u64, every_ms: u64) -> bool {
        let next = self.next_ms.load(Relaxed);
        now >= next
            && self
                .next_ms
                .compare_exchange(next, now + every_ms, Relaxed, Relaxed)
                .is_ok()
    }
}

/// Whether the process has never had a thread but the one that started
/// it: glibc's `__libc_single_threaded` (Miri, which cannot read it,
/// counts as multithreaded, as slabscope behaved before it asked).
pub(crate) fn single_threaded() -> bool {
    if cfg!(miri) {
        return false;
    }
    unsafe extern "C" {
        /// Nonzero until the process first creates a thread (glibc 2.32,
        /// `<sys/single_threaded.h>`); a forked child inherits it.
        static __libc_single_threaded: std::ffi::c_char;
    }
    // SAFETY: a byte glibc defines for every process and writes only when
    // it creates a thread; read as volatile, since glibc writes it behind
    // the compiler's back.
    unsafe { std::ptr::read_volatile(&raw const __libc_single_threaded) != 0 }
}

/// Called on every allocation slow path: runs the periodic work a
/// single-threaded process defers (see the module docs). One load when
/// nothing is deferred. The caller may hold a slabscope lock (under
/// `SlabscopeAlloc`, slabscope's own code allocates from the classes): the
/// deferred work only tries locks, never waits for one.
#[inline]
pub(crate) fn due() {
    if STATS.deferred.load(Relaxed) {
        STATS.run_deferred();
    }
}

/// The background reaper.
pub(crate) static REAPER: Periodic = Periodic::new(
    "slabscope-reap",
    "the background reaper",
    "caches are reaped only on request",
);

/// The `cache_stats` publisher.
pub(crate) static STATS: Periodic = Periodic::new(
    "slabscope-stats",
    "the cache_stats thread",
    "call stats::publish() instead",
);

/// Starts again the threads this process was asked for and lacks (in a
/// forked child). Called when a cache grows.
pub(crate) fn restart() {
    REAPER.restart();
    STATS.restart();
}

/// In a forked child: it has neither thread; the next [`restart`] starts
/// them again.
#[cfg(not(loom))]
pub(crate) fn forked() {
    REAPER.started.store(false, Relaxed);
    STATS.started.store(false, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deferred_turn_comes_once_per_interval_from_the_first_cache() {
        let p = Periodic::new("test", "a test", "nothing");
        p.defer(10_000, 1000);
        // Caches built later do not push the first turn back.
        p.defer(10_500, 1000);
        p.defer(10_999, 1000);
        assert!(!p.claim_turn(10_999, 1000));
        assert!(p.claim_turn(11_000, 1000));
        assert!(!p.claim_turn(11_000, 1000), "claimed once");
        assert!(!p.claim_turn(11_999, 1000));
        assert!(p.claim_turn(12_500, 1000));
        assert!(!p.claim_turn(13_499, 1000));
        assert!(p.claim_turn(13_500, 1000));
    }
}
