//! The cache's use of its [`Depot`](crate::depot::Depot): draining it back
//! into the slabs (reap, destroy, the idle reaper). The container itself
//! is `crate::depot`.

use super::CacheInner;

impl CacheInner {
    /// Returns every depot object to its slab (reap, destroy, the idle
    /// reaper). Returns how many.
    pub(crate) fn drain_depot(&self) -> usize {
        self.depot.drain(|objs| {
            // SAFETY: depot objects are live slab objects of this cache,
            // free, in no magazine; drained, so the depot no longer has them.
            unsafe { self.free_to_slabs(objs) };
        })
    }
}
