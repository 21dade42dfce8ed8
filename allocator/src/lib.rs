//! slabscope: a userspace port of the OpenZFS SPL slab allocator
//! (`module/os/linux/spl/spl-kmem-cache.c`, GPL-2.0-or-later, Lawrence
//! Livermore National Security, LLC), observable through USDT probes.

pub mod flags;
pub mod stats;
