//! [`CacheBuilder`]: the arguments of `kmem_cache_create()`, checked and
//! sized into a [`CacheInner`] (the cache list is the registry's: its
//! `CacheBuilder::build` calls `CacheBuilder::create`).

use std::alloc::Layout;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use slabscope_probes::{NAME_MAX, name_buf};

use super::{CacheInner, Ctor, Dtor, FastPath, PerCpuCount, slabless_room};
use crate::depot::Depot;
use crate::error::Error;
use crate::flags::{KMC_CREATE_MASK, KMC_KVMEM, KMC_NODEBUG, KMC_SLAB, KmcFlags, SKC_MAGIC};
use crate::inbox::Inboxes;
use crate::magazine::Mags;
use crate::os;
use crate::sizing::{self, Geometry, SPL_KMEM_CACHE_ALIGN};
use crate::slab::{self, SlabState};
use crate::sync::{self, AtomicU64, Condvar};
use crate::tunables::Tunables;

/// Builds a [`Cache`](super::Cache) (the arguments of `kmem_cache_create`).
///
/// ```
/// use slabscope::{CacheBuilder, flags};
/// let cache = CacheBuilder::new("doc_example", 100).align(16).build().unwrap();
/// let p = cache.alloc(flags::KM_SLEEP).unwrap();
/// assert_eq!(p.as_ptr() as usize % 16, 0);
/// // SAFETY: p came from this cache and is not used again.
/// unsafe { cache.free(p) };
/// cache.destroy().unwrap();
/// ```
pub struct CacheBuilder {
    name: String,
    size: usize,
    align: usize,
    flags: u64,
    ctor: Option<Ctor>,
    dtor: Option<Dtor>,
    /// The [`slab::reserved_tag`] its objects get instead of an
    /// [`slab::alloc_tag`] (`crate::kmem`'s classes).
    tag: Option<u16>,
    caps: ByteCaps,
    /// Slabs without object headers (see `crate::slab::headerless`), for
    /// `crate::kmem`'s small classes.
    headerless: bool,
    /// Objects go home when another CPU frees them (see [`crate::inbox`]).
    homes: bool,
}

/// Limits in bytes on a cache's slabs, magazines and depot, below what the
/// tunables give (the `kmem_alloc` classes set them; see `crate::kmem`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ByteCaps {
    /// Slabs of at most this many bytes of objects (at least one object).
    pub(crate) slab: Option<u64>,
    /// Magazines of at most this many bytes of objects (at least 2), when
    /// the `magazine_size` tunable is 0 (automatic).
    pub(crate) magazine: Option<u64>,
    /// A depot of at most this many KiB.
    pub(crate) depot_kb: Option<u32>,
}

impl fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("align", &self.align)
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

impl CacheBuilder {
    /// A cache of `size`-byte objects called `name`.
    pub fn new(name: impl Into<String>, size: usize) -> Self {
        CacheBuilder {
            name: name.into(),
            size,
            align: 0,
            flags: 0,
            ctor: None,
            dtor: None,
            tag: None,
            caps: ByteCaps::default(),
            headerless: false,
            homes: false,
        }
    }

    /// Objects that another CPU frees go back to the CPU that allocated
    /// them, through an inbox per CPU (see [`crate::inbox`]): for caches
    /// with a [`Self::reserved_tag`], whose tags can name a home, and
    /// restartable-sequence magazines; ignored otherwise.
    pub(crate) fn homes(mut self, on: bool) -> Self {
        self.homes = on;
        self
    }

    /// Objects without a header: one-page slabs whose objects are found
    /// from their address (see `crate::slab::headerless`). Only for 16-aligned objects
    /// of 16 bytes to an eighth of a page, on 4 KiB pages, with no
    /// constructor or destructor (`crate::kmem`'s small classes); `build`
    /// refuses anything else.
    pub(crate) fn headerless(mut self, on: bool) -> Self {
        self.headerless = on;
        self
    }

    /// Byte limits on slabs, magazines and depot (see [`ByteCaps`]).
    pub(crate) fn byte_caps(mut self, caps: ByteCaps) -> Self {
        self.caps = caps;
        self
    }

    /// Marks the objects this cache hands out with reserved tag `n` (see
    /// [`slab::reserved_tag`]) instead of one derived from the cache id:
    /// `crate::kmem` numbers its size classes so.
    pub(crate) fn reserved_tag(mut self, n: usize) -> Self {
        self.tag = Some(slab::reserved_tag(n));
        self
    }

    /// Object alignment: 0 (the default, 8) or a power of two from 8 to the
    /// page size.
    pub fn align(mut self, align: usize) -> Self {
        self.align = align;
        self
    }

    /// `KMC_*` creation flags: [`KmcFlags`] (`KmcFlags::KVMEM`) or the
    /// SPL constants' `u64` (`flags::KMC_KVMEM`).
    pub fn flags(mut self, flags: impl Into<KmcFlags>) -> Self {
        self.flags = flags.into().bits();
        self
    }

    /// Constructor, run on every allocation with the allocation's kmflags.
    pub fn ctor(mut self, f: impl Fn(NonNull<u8>, u32) -> bool + Send + Sync + 'static) -> Self {
        self.ctor = Some(Box::new(f));
        self
    }

    /// Destructor, run on every free.
    pub fn dtor(mut self, f: impl Fn(NonNull<u8>) + Send + Sync + 'static) -> Self {
        self.dtor = Some(Box::new(f));
        self
    }

    /// Validates the arguments and sizes slabs and magazines: the cache
    /// [`CacheBuilder::build`] registers (in `crate::registry`).
    pub(crate) fn create(self, t: &Tunables) -> Result<Arc<CacheInner>, Error> {
        let name = self.name;
        if name.is_empty() {
            return Err(Error::EmptyName);
        }
        if name.len() > NAME_MAX {
            let len = name.len();
            return Err(Error::NameTooLong { name, len });
        }
        if name.contains('\0') {
            return Err(Error::NameHasNul { name });
        }
        if self.size == 0 {
            return Err(Error::ZeroSize { name });
        }
        let page = os::page_size();
        let align = match self.align {
            0 => SPL_KMEM_CACHE_ALIGN,
            a if a.is_power_of_two() && a >= SPL_KMEM_CACHE_ALIGN && a <= page => a,
            align => {
                return Err(Error::BadAlign {
                    name,
                    align,
                    page_size: page,
                });
            }
        };
        let unknown = self.flags & !KMC_CREATE_MASK;
        if unknown != 0 {
            return Err(Error::UnknownFlags { name, unknown });
        }
        let mut flags = self.flags;
        if flags & KMC_SLAB != 0 && flags & KMC_KVMEM != 0 {
            return Err(Error::ConflictingFlags { name });
        }
        if flags & (KMC_SLAB | KMC_KVMEM) == 0 {
            if t.slab_limit != 0 && self.size <= t.slab_limit as usize {
                flags |= KMC_SLAB;
            } else {
                flags |= KMC_KVMEM;
            }
        }
        let max_slab = u64::from(t.max_size) << 20;
        let too_large = |name| Error::TooLarge {
            name,
            size: self.size,
            max_slab,
        };
        if Layout::from_size_align(self.size, align).is_err() {
            return Err(too_large(name));
        }
        let slab_backed = flags & KMC_SLAB != 0;
        let (geo, mag_size) = if slab_backed {
            if self.size as u64 > max_slab {
                return Err(too_large(name));
            }
            let room = sizing::p2roundup(slab::OBJ_HDR, align as u64);
            let geo = Geometry {
                obj_size: self.size as u64,
                obj_align: align as u64,
                obj_size_full: sizing::p2roundup(self.size as u64, align as u64) + room,
                first_obj: room,
                ..Geometry::default()
            };
            (geo, 0)
        } else {
            let geometry = |objs| {
                sizing::geometry(
                    self.size as u64,
                    align as u64,
                    slab::SLAB_HDR,
                    slab::OBJ_HDR,
                    objs,
                    u64::from(t.max_size),
                    page as u64,
                )
            };
            let Some(mut geo) = geometry(u64::from(t.obj_per_slab)) else {
                return Err(too_large(name));
            };
            if self.headerless {
                assert!(
                    self.ctor.is_none() && self.dtor.is_none(),
                    "slabscope: cache {name:?}: headerless objects cannot have a constructor \
                     or destructor"
                );
                geo = sizing::headerless_geometry(
                    self.size as u64,
                    align as u64,
                    slab::SLAB_HDR,
                    slab::HL_SLAB as u64,
                    page as u64,
                )
                .unwrap_or_else(|| {
                    panic!(
                        "slabscope: cache {name:?}: {} bytes at alignment {align} on pages \
                             of {page} cannot be headerless",
                        self.size
                    )
                });
            } else if let Some(bytes) = self.caps.slab {
                let objs = sizing::objs_for_slab_bytes(
                    geo.obj_size_full,
                    bytes,
                    u64::from(t.obj_per_slab),
                );
                // Fewer objects than a geometry that fits: fits.
                geo = geometry(objs).unwrap_or(geo);
            }
            let mut mag_size =
                sizing::magazine_size(geo.obj_size_full, page as u64, t.magazine_size);
            if let Some(bytes) = self.caps.magazine
                && t.magazine_size == 0
            {
                mag_size = sizing::magazine_size_capped(mag_size, geo.obj_size_full, bytes);
            }
            (geo, mag_size)
        };
        let mag_refill = sizing::magazine_refill(mag_size);
        let ncpus = os::possible_cpus();
        let mags = Mags::new(ncpus, mag_size, mag_refill);
        let obj_layout = Layout::from_size_align(
            (geo.obj_size_full + slabless_room(&geo) - geo.hdr_room()) as usize,
            align,
        )
        .map_err(|_| too_large(name.clone()))?;
        let hooks = self.ctor.is_some() || self.dtor.is_some();
        let rseq = if slab_backed || t.magazine_rseq == 0 {
            None
        } else {
            crate::magazine::rseq::available()
        };
        let depot_kb = self.caps.depot_kb.map_or(t.depot_kb, |k| k.min(t.depot_kb));
        let homes = if self.homes && self.tag.is_some() && !geo.headerless() && rseq.is_some() {
            ncpus.min(slab::HOMES)
        } else {
            0
        };
        let inner = Arc::new_cyclic(|me| CacheInner {
            magic: SKC_MAGIC,
            me: me.clone(),
            name_buf: name_buf(name.as_bytes()),
            name,
            geo,
            flags: AtomicU64::new(flags),
            debug: flags & KMC_NODEBUG == 0,
            fp: FastPath::new(
                rseq.filter(|_| !hooks),
                mags.rseq_base(),
                self.tag
                    .unwrap_or_else(|| slab::alloc_tag(me.as_ptr() as u64)),
                geo.headerless(),
            ),
            slab_backed,
            ctor: self.ctor,
            dtor: self.dtor,
            state: sync::Mutex::new(SlabState::new()),
            grow_cv: Condvar::new(),
            state_cv: Condvar::new(),
            rseq,
            depot: Depot::new(Depot::capacity(depot_kb, geo.obj_size_full, mag_refill)),
            inbox: Inboxes::new(homes),
            mag_base: mags.rseq_base(),
            mags,
            mag_size,
            mag_refill,
            emergency_live: AtomicU64::new(0),
            handles: std::sync::atomic::AtomicUsize::new(1),
            sys_count: (0..ncpus).map(|_| PerCpuCount::default()).collect(),
            obj_layout,
            #[cfg(loom)]
            loom_wait_expires: std::sync::atomic::AtomicBool::new(false),
            #[cfg(loom)]
            loom_async_only: std::sync::atomic::AtomicBool::new(false),
        });
        Ok(inner)
    }
}
