//! The registry: the process-wide list of caches (SPL's
//! `spl_kmem_cache_list`), creating and destroying caches on it, the
//! operations on every cache (`kmem_reap()`, the statistics), and the one
//! place that starts slabscope's process services: the background reaper
//! and statistics threads ([`crate::background`]) and the fork handlers
//! ([`fork`]).
//!
//! [`CacheBuilder::build`] and [`Cache::destroy`] are here, not in
//! `crate::cache`, because they change the list: the cache layer below
//! builds and tears down one cache and knows nothing of the others.

#[cfg(not(loom))]
mod fork;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use slabscope_probes::stats::CacheStats;
use slabscope_probes::{CacheSnapshot, MAX_CPUS};

use crate::background::{Job, REAPER, STATS};
use crate::cache::{Cache, CacheBuilder, CacheInner};
use crate::error::Error;
use crate::tunables::{self, Tunables};

static REGISTRY: Mutex<Vec<Arc<CacheInner>>> = Mutex::new(Vec::new());

/// Every registered cache, in creation order.
pub(crate) fn registered() -> Vec<Arc<CacheInner>> {
    lock_registry().clone()
}

/// The registry, locked: no cache is created or destroyed meanwhile.
pub(crate) fn lock_registry() -> MutexGuard<'static, Vec<Arc<CacheInner>>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the periodic threads the tunables ask for that this process
/// lacks (a forked child restarts them through `background::restart`).
fn ensure_threads(t: &Tunables) {
    REAPER.ensure(Job {
        every_ms: t.reap_interval_ms,
        tick: || {
            for c in registered() {
                c.reap_now(true);
            }
        },
        inline: None,
    });
    if slabscope_probes::ENABLED {
        STATS.ensure(Job {
            every_ms: t.stats_interval_ms,
            tick: || {
                publish();
            },
            inline: Some(fire_stats_now),
        });
    }
}

/// Fires `cache_stats` for every cache whose lock is free at once, and for
/// the extra row: [`publish`]'s probes without its report, and without
/// waiting or allocating. A single-threaded process runs it from an
/// allocation's slow path (see `crate::background`), where this thread may
/// hold the registry's lock or a cache's; a cache it cannot lock now is
/// published the next time.
fn fire_stats_now() {
    let Some(list) = crate::sync::try_locked(REGISTRY.try_lock()) else {
        return;
    };
    for c in list.iter() {
        if let Some(snap) = c.try_snapshot() {
            slabscope_probes::fire::cache_stats(&snap);
        }
    }
    drop(list);
    if let Some(snap) = EXTRA_ROW.get().and_then(|row| row()) {
        slabscope_probes::fire::cache_stats(&snap);
    }
}

impl CacheBuilder {
    /// Validates the arguments, sizes slabs and magazines, registers the
    /// cache and fires `cache_create`. The first cache starts the process
    /// services: the fork handlers (before the cache is on the list a fork
    /// must lock) and the periodic threads.
    pub fn build(self) -> Result<Cache, Error> {
        let t = tunables::get()?;
        let inner = self.create(&t)?;
        #[cfg(not(loom))]
        fork::ensure_handlers();
        lock_registry().push(inner.clone());
        ensure_threads(&t);
        if slabscope_probes::ENABLED {
            slabscope_probes::fire::cache_create(&inner.snapshot());
        }
        Ok(Cache { inner })
    }
}

impl Cache {
    /// Destroys the cache: waits for in-flight grows and reaps, flushes every
    /// magazine, and — only if no object is allocated — returns every slab to
    /// the OS, unregisters the cache and fires `cache_destroy`. Otherwise
    /// returns [`Error::Busy`], frees nothing, and the cache stays usable.
    pub fn destroy(&self) -> Result<(), Error> {
        self.inner.destroy(|| {
            lock_registry().retain(|x| !Arc::ptr_eq(x, &self.inner));
        })
    }
}

impl Drop for Cache {
    /// The last handle destroys the cache if no object is allocated;
    /// otherwise the cache stays (its objects may still be in use) and
    /// stderr says why, once: no handle is left to drop again.
    fn drop(&mut self) {
        if self.inner.handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        match self.destroy() {
            Ok(()) | Err(Error::Destroyed { .. }) => {}
            Err(Error::Busy {
                name,
                obj_alloc,
                obj_emergency,
            }) => eprintln!(
                "slabscope: cache {name:?}: its last handle was dropped with {obj_alloc} objects \
                 and {obj_emergency} emergency objects allocated; the cache stays, with them, \
                 until the process exits. Free them and destroy the cache before dropping its \
                 last handle"
            ),
            Err(e) => eprintln!(
                "slabscope: cache {:?}: its last handle was dropped and destroying it failed: {e}",
                self.inner.name
            ),
        }
    }
}

/// `kmem_reap()`: [`Cache::reap_now`] on every registered cache, in
/// creation order.
pub fn reap() {
    for c in registered() {
        c.reap_now(false);
    }
}

/// Every registered cache's statistics, in creation order.
pub fn all() -> Vec<CacheStats> {
    registered().iter().map(|c| c.stats()).collect()
}

/// A row reported like a cache that is no cache: `kmem`'s
/// `kmem_alloc_large`. The module that keeps it sits above the registry,
/// so it hands its snapshot function down ([`report_row`]) rather than the
/// registry importing it.
static EXTRA_ROW: OnceLock<fn() -> Option<CacheSnapshot>> = OnceLock::new();

/// Makes [`publish`] (and the statistics thread) report `row`'s snapshot
/// after the caches, whenever it returns one. The first call wins.
pub(crate) fn report_row(row: fn() -> Option<CacheSnapshot>) {
    let _ = EXTRA_ROW.set(row);
}

/// Fires `cache_stats` for every registered cache now and returns exactly
/// the values fired, in creation order, then the row `report_row` makes
/// (the `kmem_alloc_large` row, once `kmem_alloc` or malloc has been used).
pub fn publish() -> Vec<CacheStats> {
    let mut all: Vec<CacheStats> = registered()
        .iter()
        .map(|c| {
            let snap = c.snapshot();
            slabscope_probes::fire::cache_stats(&snap);
            let mut s = CacheStats::from(&snap);
            if !c.slab_backed && c.mags.len() > MAX_CPUS {
                // The snapshot carries MAX_CPUS fills; keep the report whole.
                s.mag_fill = c.mag_fill().collect();
            }
            s
        })
        .collect();
    if let Some(snap) = EXTRA_ROW.get().and_then(|row| row()) {
        slabscope_probes::fire::cache_stats(&snap);
        all.push(CacheStats::from(&snap));
    }
    all
}
