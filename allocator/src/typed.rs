//! A safe, typed face over [`Cache`]: [`TypedCache<T>`] hands out
//! [`Obj<'_, T>`] guards that own a `T` in a cache object and free it on drop.
//!
//! The object is sized and aligned for `T` (alignment raised to SPL's minimum
//! of 8). A value is moved in on allocation and dropped in place before the
//! object goes back to the cache, so Rust's ownership replaces SPL's
//! constructor/destructor pair. The guard borrows the cache, so the cache
//! cannot be destroyed while a guard is alive; dropping the `TypedCache`
//! destroys its cache.
//!
//! ```
//! use slabscope::TypedCache;
//! let cache = TypedCache::<[u64; 4]>::new("typed_doc").unwrap();
//! let mut a = cache.alloc([1, 2, 3, 4]);
//! a[0] = 10;
//! assert_eq!(a.iter().sum::<u64>(), 19);
//! drop(a);
//! assert_eq!(cache.cache().stats().obj_alloc - cache.cache().stats().mag_objs, 0);
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use crate::cache::{Cache, CacheBuilder};
use crate::error::Error;
use crate::flags::{KM_NOSLEEP, KM_SLEEP, KmFlags, KmcFlags};
use crate::sizing::SPL_KMEM_CACHE_ALIGN;

/// A cache of `T`s.
pub struct TypedCache<T> {
    cache: Cache,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for TypedCache<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedCache")
            .field("cache", &self.cache)
            .finish()
    }
}

impl<T> TypedCache<T> {
    /// A cache named `name` with default flags.
    pub fn new(name: &str) -> Result<Self, Error> {
        Self::with_flags(name, KmcFlags::empty())
    }

    /// A cache named `name` with `KMC_*` creation `flags` ([`KmcFlags`] or
    /// the SPL constants' `u64`).
    pub fn with_flags(name: &str, flags: impl Into<KmcFlags>) -> Result<Self, Error> {
        let cache = CacheBuilder::new(name, size_of::<T>().max(1))
            .align(align_of::<T>().max(SPL_KMEM_CACHE_ALIGN))
            .flags(flags)
            .build()?;
        Ok(TypedCache {
            cache,
            _t: PhantomData,
        })
    }

    /// Moves `value` into a new object (`KM_SLEEP`: never fails).
    pub fn alloc(&self, value: T) -> Obj<'_, T> {
        match self.try_alloc(value, KM_SLEEP) {
            Ok(o) => o,
            Err(_) => unreachable!("KM_SLEEP allocations without a constructor never fail"),
        }
    }

    /// Moves `value` into a new object; with `KM_NOSLEEP` gives the value back
    /// when no object is available right now.
    pub fn try_alloc(&self, value: T, kmflags: impl Into<KmFlags>) -> Result<Obj<'_, T>, T> {
        let kmflags = kmflags.into().bits();
        let Some(p) = self.cache.alloc(kmflags) else {
            debug_assert!(kmflags & KM_NOSLEEP != 0);
            return Err(value);
        };
        let p = p.cast::<T>();
        // SAFETY: the object is at least size_of::<T>() bytes, aligned for T,
        // and exclusively ours.
        unsafe { p.as_ptr().write(value) };
        Ok(Obj {
            ptr: p,
            cache: self,
        })
    }

    /// The untyped cache (for statistics, reaping, validation).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }
}

impl<T> Drop for TypedCache<T> {
    fn drop(&mut self) {
        // Every guard borrowed `self` and is gone, so only leaked guards
        // (`mem::forget`) can keep objects allocated; then the cache is
        // leaked rather than unmapped under them.
        let _ = self.cache.destroy();
    }
}

/// An owned `T` living in a cache object; freed (and `T` dropped) on drop.
pub struct Obj<'c, T> {
    ptr: NonNull<T>,
    cache: &'c TypedCache<T>,
}

// SAFETY: Obj owns its T exclusively, like Box<T>.
unsafe impl<T: Send> Send for Obj<'_, T> {}
// SAFETY: shared access only hands out &T.
unsafe impl<T: Sync> Sync for Obj<'_, T> {}

impl<T> Obj<'_, T> {
    /// The object's address.
    pub fn as_ptr(this: &Self) -> *const T {
        this.ptr.as_ptr()
    }
}

impl<T> Deref for Obj<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: ptr holds an initialised T owned by this guard.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for Obj<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: ptr holds an initialised T owned exclusively by this guard.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: fmt::Debug> fmt::Debug for Obj<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T> Drop for Obj<'_, T> {
    fn drop(&mut self) {
        // SAFETY: ptr holds an initialised T we own, dropped exactly once here.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        // SAFETY: the object came from this cache and is never used again.
        unsafe { self.cache.cache.free(self.ptr.cast()) };
    }
}

// Caches need loom's runtime under cfg(loom); these run in normal builds.
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn values_are_moved_in_and_dropped_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        struct D(Arc<AtomicUsize>, [u8; 40]);
        impl Drop for D {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let c = TypedCache::<D>::new("typed_drop").unwrap();
        let objs: Vec<_> = (0..100)
            .map(|i| c.alloc(D(drops.clone(), [i as u8; 40])))
            .collect();
        for (i, o) in objs.iter().enumerate() {
            assert_eq!(o.1[39], i as u8);
        }
        c.cache().validate().unwrap();
        drop(objs);
        assert_eq!(drops.load(Ordering::SeqCst), 100);
        c.cache().validate().unwrap();
    }

    #[test]
    fn over_aligned_types_are_aligned() {
        #[repr(align(256))]
        struct A(u8);
        let c = TypedCache::<A>::new("typed_align").unwrap();
        let v: Vec<_> = (0..20).map(|_| c.alloc(A(1))).collect();
        for o in &v {
            assert_eq!(Obj::as_ptr(o) as usize % 256, 0);
            assert_eq!(o.0, 1);
        }
    }

    #[test]
    fn zero_sized_types_work() {
        let c = TypedCache::<()>::new("typed_zst").unwrap();
        let a = c.alloc(());
        let b = c.alloc(());
        assert_ne!(Obj::as_ptr(&a), Obj::as_ptr(&b));
    }
}
