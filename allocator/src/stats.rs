//! Cache statistics: [`CacheStats`], the `/proc/spl/kmem/slab` text (both
//! from the contract crate, `slabscope_probes::stats`, so the inspector
//! prints the same text without linking the allocator) and the registry's
//! reports of every cache, [`all`] and [`publish`].

pub use crate::registry::{all, publish};
pub use slabscope_probes::stats::*;
