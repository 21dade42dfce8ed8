//! slabscope itself as a contender: one cache per object size, used the way a
//! program uses it (`Cache::alloc(KM_SLEEP)` / `Cache::free`).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};
use slabscope::{Cache, CacheBuilder, flags};

use crate::contender::{Contender, Ptr};

/// A slabscope cache of fixed-size objects, destroyed when dropped.
#[derive(Debug)]
pub struct Slabscope {
    cache: Cache,
}

/// Cache names must be told apart in the inspector; number them.
static SEQ: AtomicU32 = AtomicU32::new(0);

impl Slabscope {
    pub fn new(size: usize) -> Result<Slabscope> {
        Slabscope::with_flags(size, 0)
    }

    /// A cache created with `KMC_*` `flags`.
    pub fn with_flags(size: usize, flags: u64) -> Result<Slabscope> {
        let name = format!("bench_{size}_{}", SEQ.fetch_add(1, Ordering::Relaxed));
        let cache = CacheBuilder::new(name.clone(), size)
            .flags(flags)
            .build()
            .with_context(|| format!("creating slabscope cache {name} of {size}-byte objects"))?;
        Ok(Slabscope { cache })
    }
}

impl Drop for Slabscope {
    fn drop(&mut self) {
        if let Err(e) = self.cache.destroy() {
            eprintln!("slabscope bench cache {}: {e}", self.cache.name());
        }
    }
}

impl Contender for Slabscope {
    type Obj<'a> = Ptr;

    #[inline]
    fn alloc(&self) -> Ptr {
        match self.cache.alloc(flags::KM_SLEEP) {
            Some(p) => Ptr(p),
            None => panic!(
                "slabscope cache {}: KM_SLEEP allocation failed",
                self.cache.name()
            ),
        }
    }

    #[inline]
    fn free(&self, obj: Ptr) {
        let p: NonNull<u8> = obj.0;
        // SAFETY: p came from this cache's alloc and is freed once.
        unsafe { self.cache.free(p) }
    }

    #[inline]
    fn addr(obj: &mut Ptr) -> *mut u8 {
        obj.0.as_ptr()
    }

    fn release(&self) -> &'static str {
        self.cache.reap_now();
        "Cache::reap_now()"
    }

    fn slab_stats(&self) -> Option<slabscope::stats::CacheStats> {
        Some(self.cache.stats())
    }
}
