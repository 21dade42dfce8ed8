//! slabscope's periodic threads: the background reaper (`reap_interval_ms`)
//! and the `cache_stats` publisher (`stats_interval_ms`). Each starts with
//! the first cache that asks for it, at most once per process, and again
//! in a forked child, which has none of its parent's threads ([`forked`];
//! the child's next grow starts them).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use crate::cache::registered;
use crate::tunables::Tunables;

/// One periodic thread.
struct Periodic {
    /// The thread's name.
    name: &'static str,
    /// What it is, and what the program does without it, for the message
    /// when it cannot start.
    what: &'static str,
    without: &'static str,
    /// Whether this process has started it.
    started: AtomicBool,
}

impl Periodic {
    const fn new(name: &'static str, what: &'static str, without: &'static str) -> Self {
        Periodic {
            name,
            what,
            without,
            started: AtomicBool::new(false),
        }
    }

    /// Starts the thread, which runs `tick` every `every_ms` ms, unless
    /// `every_ms` is 0 or this process has started it already.
    fn ensure(&self, every_ms: u64, tick: fn()) {
        if every_ms == 0 || self.started.load(Relaxed) || self.started.swap(true, Relaxed) {
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
}

static REAPER: Periodic = Periodic::new(
    "slabscope-reap",
    "the background reaper",
    "caches are reaped only on request",
);

static STATS: Periodic = Periodic::new(
    "slabscope-stats",
    "the cache_stats thread",
    "call stats::publish() instead",
);

/// Starts the threads the tunables ask for that this process lacks.
/// Called when a cache is created and when one grows.
pub(crate) fn ensure(t: &Tunables) {
    REAPER.ensure(t.reap_interval_ms, || {
        for c in registered() {
            c.reap_now(true);
        }
    });
    if slabscope_probes::ENABLED {
        STATS.ensure(t.stats_interval_ms, || {
            crate::stats::publish();
        });
    }
}

/// In a forked child: it has neither thread; the next [`ensure`] starts
/// them again.
#[cfg(not(loom))]
pub(crate) fn forked() {
    REAPER.started.store(false, Relaxed);
    STATS.started.store(false, Relaxed);
}
