//! Reaping: `spl_kmem_cache_reap_now()`, `spl_kmem_reap()`,
//! `spl_slab_reclaim()`, and a background reaper.
//!
//! [`Cache::reap_now`](crate::Cache::reap_now) does what the seed does: unless
//! a reap of the cache is already running (REAPING), it flushes the *current
//! CPU's* magazine back to the slabs and unmaps every empty slab at the tail
//! of the partial list. It also empties the depot (which the seed does not
//! have; see the `depot` module) into the slabs first. `slabscope::reap()`
//! (in `crate::registry`) does that for every registered cache.
//! Allocations that need to grow while REAPING is set wait for the reap to
//! end and look again (see the `grow` module).
//!
//! The kernel calls SPL's reclaim from its shrinker under memory pressure.
//! Userspace has no shrinker, so slabscope offers a background reaper thread,
//! started with the first cache when `reap_interval_ms` > 0 (by the `background`
//! module, which also restarts it in a forked child). Every interval it
//! reaps each cache, flushing every magazine that handed out nothing during
//! the whole previous interval (so busy CPUs keep their working set), and the
//! depot when it handed out nothing either, and then reclaiming empty slabs. With `reclaim = 1` (SPL's `KMC_RECLAIM_ONCE`, the
//! less aggressive setting) it leaves magazines and the depot alone and only reclaims slabs
//! that are already empty. It never runs on the allocation path, and holds a
//! cache only for the duration of one pass.

use super::CacheInner;
use crate::flags::{KMC_DESTROY, KMC_REAPING};
use crate::os;
use crate::slab::{Reclaimed, SlabState};
use crate::sync::MutexGuard;
use crate::tunables;

impl CacheInner {
    /// `spl_slab_reclaim()`: unmaps the empty slabs at the tail of the
    /// partial list idle for at least `min_idle_ms` (0: all of them); fires
    /// `slab_reclaim` when any were. Returns `(slabs, objects)` released.
    pub(crate) fn slab_reclaim(&self, min_idle_ms: u64) -> (u64, u64) {
        let mut st = self.lock_state();
        let now = if min_idle_ms == 0 { 0 } else { os::coarse_ms() };
        let r = st.unlink_empty(&self.geo, min_idle_ms, now);
        self.release_reclaimed(st, r)
    }

    /// The rest of a reclaim whose slabs `r` were unlinked under `st`
    /// (which this drops): unmaps them and fires `slab_reclaim` when there
    /// were any. Returns `(slabs, objects)` released.
    pub(crate) fn release_reclaimed(
        &self,
        st: MutexGuard<'_, SlabState>,
        r: Reclaimed,
    ) -> (u64, u64) {
        if r.slabs == 0 {
            return (0, 0);
        }
        self.debug_check(&st);
        let snap = slabscope_probes::ENABLED.then(|| self.snapshot_locked(&st));
        drop(st);
        let (slabs, objs) = (r.slabs, r.objs);
        // SAFETY: unlink_empty hands over only empty, unlinked slabs of this cache.
        unsafe { r.release(&self.geo) };
        if let Some(snap) = snap {
            slabscope_probes::fire::slab_reclaim(&snap, slabs, objs);
        }
        (slabs, objs)
    }

    /// `spl_kmem_cache_reap_now()`; `background` selects the reaper's
    /// behaviour (idle magazines of every CPU, or none with `reclaim = 1`).
    /// Returns `(slabs, objects)` released, `None` when skipped.
    pub(crate) fn reap_now(&self, background: bool) -> Option<(u64, u64)> {
        if self.slab_backed {
            return None;
        }
        {
            let mut st = self.lock_state();
            if st.destroyed || self.flag(KMC_DESTROY) || self.flag(KMC_REAPING) {
                return None;
            }
            self.set_flag(KMC_REAPING);
            st.refs += 1;
        }
        if background {
            if tunables::current().reclaim == 0 {
                self.flush_all(true);
                if !self.depot.take_active() {
                    self.drain_depot();
                }
                // What no home took since the last pass.
                self.drain_inboxes();
            }
        } else {
            let mut g = self.lock_mag(self.local_mag());
            self.flush(&mut g, u32::MAX);
            drop(g);
            self.drain_depot();
            self.drain_inboxes();
        }
        let released = self.slab_reclaim(0);
        let mut st = self.lock_state();
        self.clear_flag(KMC_REAPING);
        st.refs -= 1;
        let snap = slabscope_probes::ENABLED.then(|| self.snapshot_locked(&st));
        drop(st);
        self.state_cv.notify_all();
        if let Some(snap) = snap {
            slabscope_probes::fire::reap(&snap, released.0, released.1);
        }
        Some(released)
    }
}
