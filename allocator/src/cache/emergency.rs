//! Emergency objects: `spl_emergency_alloc()`, `spl_emergency_free()` and
//! the red-black tree they live in (here a `BTreeMap` keyed by address).
//!
//! While a cache is DEADLOCKED (a grow outlived `grow_timeout_ms`), each
//! allocation that finds no free slab object gets an object of its own from
//! the system allocator, recorded by address in the cache's emergency map and
//! counted in `obj_total`, `obj_emergency` and `obj_emergency_max` (not in
//! `obj_alloc`, as in SPL). A free first looks the pointer up in the map when
//! any emergency object is live; a hit is released at once.
//!
//! The seed allocates emergency objects with `__get_free_pages()`, page
//! aligned; here they have the cache's alignment, which is what callers may
//! rely on, and an object header like slab objects whose state,
//! `OBJ_EMERGENCY`, is never a cache's allocation mark: the inline free
//! (`CacheInner::fast_free`) checks that mark anyway, so it sends emergency
//! objects to the general path without a test of its own.
//!
//! The general free path's "are there any?" test reads an atomic mirror of
//! `obj_emergency` (one relaxed load) instead of taking the cache lock as
//! the seed does. It cannot miss a live emergency object: the
//! object was counted (under the lock) before it was handed out, and the
//! caller's hand-over of the pointer to the freeing thread orders that count
//! before the free.

use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use super::CacheInner;
use super::grow::Grow;

impl CacheInner {
    /// `spl_emergency_alloc()`.
    pub(crate) fn emergency_alloc(&self) -> Grow {
        // Last chance: use a partial slab if one now exists.
        if !self.lock_state().partial.is_empty() {
            return Grow::Again;
        }
        let Some(obj) = self.slabless_alloc(crate::slab::OBJ_EMERGENCY) else {
            return Grow::NoMem;
        };
        let mut st = self.lock_state();
        let fresh = st.emergency.insert(obj.as_ptr() as usize, ()).is_none();
        debug_assert!(fresh, "the system allocator returned a live address twice");
        st.c.obj_total += 1;
        st.c.obj_emergency += 1;
        st.c.obj_emergency_max = st.c.obj_emergency_max.max(st.c.obj_emergency);
        self.emergency_live
            .store(st.c.obj_emergency, Ordering::Relaxed);
        let snap = slabscope_probes::ENABLED.then(|| self.snapshot_locked(&st));
        drop(st);
        if let Some(snap) = snap {
            slabscope_probes::fire::emergency_alloc(&snap, obj.as_ptr());
        }
        Grow::Emergency(obj)
    }

    /// `spl_emergency_free()`: releases `obj` when it is an emergency object
    /// of this cache. Returns whether it was.
    ///
    /// # Safety
    /// If `obj` is an emergency object of this cache it is not used after
    /// this call.
    #[inline(always)]
    pub(crate) unsafe fn emergency_free(&self, obj: NonNull<u8>) -> bool {
        if self.emergency_live.load(Ordering::Relaxed) == 0 {
            return false;
        }
        // SAFETY: forwarded caller guarantee.
        unsafe { self.emergency_free_slow(obj) }
    }

    /// [`Self::emergency_free`] while emergency objects exist.
    ///
    /// # Safety
    /// As [`Self::emergency_free`].
    #[cold]
    #[inline(never)]
    unsafe fn emergency_free_slow(&self, obj: NonNull<u8>) -> bool {
        let mut st = self.lock_state();
        if st.emergency.remove(&(obj.as_ptr() as usize)).is_none() {
            return false;
        }
        st.c.obj_emergency -= 1;
        st.c.obj_total -= 1;
        self.emergency_live
            .store(st.c.obj_emergency, Ordering::Relaxed);
        let snap = slabscope_probes::ENABLED.then(|| self.snapshot_locked(&st));
        drop(st);
        // SAFETY: obj came from slabless_alloc (it was in the map) and the
        // caller no longer uses it.
        unsafe { self.slabless_free(obj) };
        if let Some(snap) = snap {
            slabscope_probes::fire::emergency_free(&snap, obj.as_ptr());
        }
        true
    }
}
