//! The depot: full magazines' worth of objects kept between the per-CPU
//! magazines and the slabs. Not in the seed: this is the middle layer of
//! Bonwick and Adams' magazine allocator ("Magazines and Vmem", USENIX
//! 2001), which SPL left out.
//!
//! Without it, a magazine that fills up flushes `refill` objects back to
//! their slabs one by one (`spl_cache_flush()`), and one that runs empty
//! takes them out of the slabs again (`spl_cache_refill()`). A workload that
//! keeps more objects live than a magazine holds (256 at 64 B, 64 at 4 KiB)
//! pays that round trip on most objects, every round. With the depot a
//! flush moves the objects here in one copy and a refill takes them back in
//! one copy, under a lock of its own; the slabs see only what overflows it.
//!
//! The depot holds at most `depot_kb` KiB of objects (tunable; at least one
//! refill's worth, 0 turns it off). Its objects count as allocated from the
//! slabs (`obj_alloc`) and as held in magazines (`mag_objs`, and
//! `depot_objs` on its own), exactly like objects in a per-CPU magazine.
//! `Cache::reap_now()`, the background reaper (when the depot handed out
//! nothing for a whole interval) and destroy return its objects to their
//! slabs.
//!
//! Lock order: magazine lock, depot lock, cache lock.
//!
//! This module is the container; what the cache does with it (draining it
//! into the slabs) is in `cache/depot.rs`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::sync;

/// Objects flushed from full magazines, waiting for empty ones.
pub(crate) struct Depot {
    objs: sync::Mutex<Vec<*mut u8>>,
    /// Most objects held.
    max: usize,
    /// `objs.len()`, for statistics without the lock (racy).
    len: AtomicUsize,
    /// Set by every take, cleared by the background reaper.
    active: AtomicBool,
}

// SAFETY: the object pointers are plain addresses of slab objects owned by
// the cache; the vector is only touched under its mutex.
unsafe impl Send for Depot {}
// SAFETY: as above.
unsafe impl Sync for Depot {}

impl std::fmt::Debug for Depot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Depot")
            .field("len", &self.len())
            .field("max", &self.max)
            .finish()
    }
}

impl Depot {
    /// A depot of at most `max` objects (0: none). Its vector is sized to
    /// `max` now (address space; pages are touched as it fills), so `put`
    /// never allocates while holding the lock: under slabscope's global
    /// allocator that allocation may come from this very cache
    /// (`crate::kmem`).
    pub(crate) fn new(max: usize) -> Self {
        Depot {
            objs: sync::Mutex::new(Vec::with_capacity(max)),
            max,
            len: AtomicUsize::new(0),
            active: AtomicBool::new(false),
        }
    }

    /// The depot's size for a cache: `depot_kb` KiB of `obj_size_full`-byte
    /// objects, at least one refill's worth; 0 when `depot_kb` is 0 or the
    /// cache has no magazines.
    pub(crate) fn capacity(depot_kb: u32, obj_size_full: u64, mag_refill: u32) -> usize {
        if depot_kb == 0 || mag_refill == 0 || obj_size_full == 0 {
            return 0;
        }
        let by_bytes = u64::from(depot_kb) * 1024 / obj_size_full;
        by_bytes.max(u64::from(mag_refill)) as usize
    }

    /// Objects held now (racy).
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Most objects held.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// The held objects, locked (validation; lock order: after the
    /// magazines, before the cache lock).
    pub(crate) fn lock(&self) -> sync::MutexGuard<'_, Vec<*mut u8>> {
        self.objs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps as many of `objs` as fit, from the front; returns how many.
    /// The caller hands each kept object over (it is free, in no magazine).
    pub(crate) fn put(&self, objs: &[*mut u8]) -> usize {
        if self.max == 0 || objs.is_empty() {
            return 0;
        }
        let mut d = self.lock();
        let k = (self.max - d.len()).min(objs.len());
        d.extend_from_slice(&objs[..k]);
        self.len.store(d.len(), Ordering::Relaxed);
        k
    }

    /// Moves up to `out.len()` objects, the most recently put first, into
    /// `out`; returns how many.
    pub(crate) fn take(&self, out: &mut [*mut u8]) -> usize {
        if self.max == 0 || self.len() == 0 {
            return 0;
        }
        let mut d = self.lock();
        let k = d.len().min(out.len());
        let from = d.len() - k;
        out[..k].copy_from_slice(&d[from..]);
        d.truncate(from);
        self.len.store(d.len(), Ordering::Relaxed);
        if k > 0 {
            self.active.store(true, Ordering::Relaxed);
        }
        k
    }

    /// A refill straight out of the depot, without copying through a
    /// buffer: under the depot lock, the newest up to `want` objects minus
    /// the last are lent to `push`, which returns how many of them, from
    /// the front, it took; those and the last object (returned, for the
    /// caller) leave the depot. `None` when the depot is empty.
    pub(crate) fn take_into(
        &self,
        want: usize,
        push: impl FnOnce(&[*mut u8]) -> usize,
    ) -> Option<*mut u8> {
        if self.max == 0 || self.len() == 0 || want == 0 {
            return None;
        }
        let mut d = self.lock();
        let n = d.len().min(want);
        let from = d.len().checked_sub(n)?;
        let mine = d.pop()?;
        let pushed = push(&d[from..]).min(n - 1);
        d.drain(from..from + pushed);
        self.len.store(d.len(), Ordering::Relaxed);
        self.active.store(true, Ordering::Relaxed);
        Some(mine)
    }

    /// A flush straight into the depot: when it has room for `want` more
    /// objects, lends `pop` that much uninitialised room; `pop` must
    /// initialise a prefix of it and return its length, and those objects
    /// join the depot. `None`, and `pop` is not called, when there is no
    /// room.
    pub(crate) fn put_from(
        &self,
        want: usize,
        pop: impl FnOnce(&mut [std::mem::MaybeUninit<*mut u8>]) -> usize,
    ) -> Option<usize> {
        if self.max == 0 || want == 0 || self.max - self.len() < want {
            return None;
        }
        let mut d = self.lock();
        if self.max - d.len() < want {
            return None;
        }
        let len = d.len();
        d.reserve(want);
        let k = pop(&mut d.spare_capacity_mut()[..want]).min(want);
        // SAFETY: `pop` initialised the first k slots past the length
        // (its contract), all within the reserved capacity.
        unsafe { d.set_len(len + k) };
        self.len.store(d.len(), Ordering::Relaxed);
        Some(k)
    }

    /// Empties the depot of the objects it holds now, handing them to `f`
    /// a batch at a time outside the lock; returns how many. The vector
    /// keeps its capacity: allocating it again could need this very cache
    /// (see [`Depot::new`]).
    pub(crate) fn drain(&self, mut f: impl FnMut(&[*mut u8])) -> usize {
        let mut batch = [std::ptr::null_mut(); 128];
        let mut left = self.len();
        let mut total = 0;
        while left > 0 {
            let k = {
                let mut d = self.lock();
                let k = d.len().min(batch.len()).min(left);
                let from = d.len() - k;
                batch[..k].copy_from_slice(&d[from..]);
                d.truncate(from);
                self.len.store(d.len(), Ordering::Relaxed);
                k
            };
            if k == 0 {
                break;
            }
            f(&batch[..k]);
            (left, total) = (left - k, total + k);
        }
        total
    }

    /// Whether the depot handed out objects since the last call (and
    /// marks it unused).
    pub(crate) fn take_active(&self) -> bool {
        self.active.swap(false, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: usize) -> *mut u8 {
        std::ptr::without_provenance_mut(i * 64)
    }

    #[test]
    fn put_keeps_what_fits_and_take_is_lifo() {
        let d = Depot::new(3);
        assert_eq!(d.put(&[addr(1), addr(2)]), 2);
        assert_eq!(d.put(&[addr(3), addr(4)]), 1, "room for one more");
        assert_eq!(d.len(), 3);
        let mut out = [std::ptr::null_mut(); 2];
        assert_eq!(d.take(&mut out), 2);
        assert_eq!(out, [addr(2), addr(3)]);
        assert!(d.take_active() && !d.take_active());
        let mut drained = Vec::new();
        assert_eq!(d.drain(|objs| drained.extend_from_slice(objs)), 1);
        assert_eq!(drained, vec![addr(1)]);
        assert_eq!((d.len(), d.take(&mut out)), (0, 0));
        assert!(d.put(&[addr(5), addr(6), addr(7)]) == 3 && d.len() == 3);
        let mut batches = 0;
        assert_eq!(d.drain(|_| batches += 1), 3);
        assert_eq!(batches, 1);
    }

    #[test]
    fn an_empty_depot_is_off() {
        let d = Depot::new(0);
        assert_eq!(d.put(&[addr(1)]), 0);
        assert_eq!(Depot::capacity(0, 72, 128), 0);
        assert_eq!(Depot::capacity(4096, 72, 128), 4096 * 1024 / 72);
        assert_eq!(Depot::capacity(1, 4160, 32), 32, "at least one refill");
    }
}
