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

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

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
    job: OnceLock<(u64, fn())>,
}

impl Periodic {
    const fn new(name: &'static str, what: &'static str, without: &'static str) -> Self {
        Periodic {
            name,
            what,
            without,
            started: AtomicBool::new(false),
            job: OnceLock::new(),
        }
    }

    /// Starts the thread, which runs `tick` every `every_ms` ms, unless
    /// `every_ms` is 0 or this process has started it already.
    pub(crate) fn ensure(&self, every_ms: u64, tick: fn()) {
        if every_ms == 0 || self.started.load(Relaxed) {
            return;
        }
        let _ = self.job.set((every_ms, tick));
        if self.started.swap(true, Relaxed) {
            return;
        }
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
        if let Some(&(every_ms, tick)) = self.job.get() {
            self.ensure(every_ms, tick);
        }
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
