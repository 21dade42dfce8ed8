//! Flag values, bit for bit SPL's (`include/os/linux/spl/sys/kmem_cache.h`
//! and `sys/kmem.h`), so C callers can pass the constants they know, and
//! their names. The allocator re-exports this module as `slabscope::flags`;
//! the collector and the inspector read the same values here.
//!
//! Rust callers can use the typed forms, [`KmcFlags`] and [`KmFlags`]
//! (`bitflags` types over the same constants), wherever the allocator takes
//! flags: it accepts either, through `impl Into<KmcFlags>` and
//! `impl Into<KmFlags>`, so code written with the SPL constants keeps
//! compiling. The constants stay for the C side and for code ported from
//! SPL. The names of set flags always come from [`KMC_NAMES`] and
//! [`KM_NAMES`] (the typed forms print them too).
//!
//! ```
//! use slabscope_probes::flags::{KM_NOSLEEP, KMC_KVMEM, KmFlags, KmcFlags};
//!
//! let create = KmcFlags::KVMEM | KmcFlags::NODEBUG;
//! assert_eq!(create.bits(), KMC_KVMEM | slabscope_probes::flags::KMC_NODEBUG);
//! assert_eq!(KmcFlags::from(KMC_KVMEM), KmcFlags::KVMEM);
//! assert_eq!(KmFlags::from(KM_NOSLEEP), KmFlags::NOSLEEP);
//! assert_eq!(create.to_string(), "KMC_NODEBUG | KMC_KVMEM");
//! ```

use core::fmt;

/// Cache flag: no debugging (magic checks off for this cache's objects).
pub const KMC_NODEBUG: u64 = 1 << 1;
/// Cache flag: slabscope's own slabs from anonymous mmap (SPL: vmem).
pub const KMC_KVMEM: u64 = 1 << 7;
/// Cache flag: delegate to the system allocator, count objects only
/// (SPL: the Linux slab).
pub const KMC_SLAB: u64 = 1 << 8;
/// State bit: a grow outlived the grow timeout; allocations are emergency
/// objects until it completes.
pub const KMC_DEADLOCKED: u64 = 1 << 14;
/// State bit: a grow is in flight, in the allocating thread or on a worker.
pub const KMC_GROWING: u64 = 1 << 15;
/// State bit: a reap is in progress.
pub const KMC_REAPING: u64 = 1 << 16;
/// State bit: the cache is being destroyed.
pub const KMC_DESTROY: u64 = 1 << 17;
/// Accepted for compatibility (SPL: `__GFP_RECLAIMABLE`); no effect.
pub const KMC_RECLAIMABLE: u64 = 1 << 21;

/// Flags a caller may pass at creation.
pub const KMC_CREATE_MASK: u64 = KMC_NODEBUG | KMC_KVMEM | KMC_SLAB | KMC_RECLAIMABLE;

/// Allocation flag: may sleep (wait for a grow). SPL's value is 0.
pub const KM_SLEEP: u32 = 0x0000;
/// Allocation flag: must not sleep; may return NULL.
pub const KM_NOSLEEP: u32 = 0x0001;
/// Allocation flag: accepted and treated as KM_SLEEP (no reserve pools here).
pub const KM_PUSHPAGE: u32 = 0x0004;
/// Flags `kmem_cache_alloc` accepts (SPL's `KM_PUBLIC_MASK`).
pub const KM_PUBLIC_MASK: u32 = KM_SLEEP | KM_NOSLEEP | KM_PUSHPAGE;

/// Magic of a magazine (`SKM_MAGIC`).
pub const SKM_MAGIC: u32 = 0x2e2e_2e2e;
/// Magic of an object header (`SKO_MAGIC`).
pub const SKO_MAGIC: u32 = 0x2020_2020;
/// Magic of a slab header (`SKS_MAGIC`).
pub const SKS_MAGIC: u32 = 0x2222_2222;
/// Magic of a cache (`SKC_MAGIC`).
pub const SKC_MAGIC: u32 = 0x2c2c_2c2c;

/// Every `KMC_*` bit with its SPL name, creation flags first, then state bits.
pub const KMC_NAMES: [(u64, &str); 8] = [
    (KMC_NODEBUG, "KMC_NODEBUG"),
    (KMC_KVMEM, "KMC_KVMEM"),
    (KMC_SLAB, "KMC_SLAB"),
    (KMC_RECLAIMABLE, "KMC_RECLAIMABLE"),
    (KMC_DEADLOCKED, "KMC_DEADLOCKED"),
    (KMC_GROWING, "KMC_GROWING"),
    (KMC_REAPING, "KMC_REAPING"),
    (KMC_DESTROY, "KMC_DESTROY"),
];

/// Every `KM_*` allocation flag with its SPL name (`KM_SLEEP` is 0).
pub const KM_NAMES: [(u32, &str); 3] = [
    (KM_SLEEP, "KM_SLEEP"),
    (KM_NOSLEEP, "KM_NOSLEEP"),
    (KM_PUSHPAGE, "KM_PUSHPAGE"),
];

/// The SPL name of a single `KMC_*` bit, `None` for a bit slabscope does
/// not define or a value with more or fewer than one bit set.
pub fn kmc_name(bit: u64) -> Option<&'static str> {
    KMC_NAMES.iter().find(|(b, _)| *b == bit).map(|(_, n)| *n)
}

/// The SPL names of the `KMC_*` bits set in `flags`, in [`KMC_NAMES`]'s
/// order (creation flags first); bits without a name are left out.
pub fn kmc_names(flags: u64) -> impl Iterator<Item = &'static str> {
    KMC_NAMES
        .iter()
        .filter(move |(bit, _)| flags & bit != 0)
        .map(|(_, name)| *name)
}

/// The SPL names of the `KM_*` bits set in `kmflags`, in [`KM_NAMES`]'s
/// order; `KM_SLEEP` (0) only when no bit is set. Bits without a name are
/// left out.
pub fn km_names(kmflags: u32) -> impl Iterator<Item = &'static str> {
    KM_NAMES
        .iter()
        .filter(move |(bit, _)| {
            if *bit == 0 {
                kmflags == 0
            } else {
                kmflags & bit != 0
            }
        })
        .map(|(_, name)| *name)
}

bitflags::bitflags! {
    /// `KMC_*` cache flags, typed: what `CacheBuilder::flags` takes (the
    /// creation flags) and what a cache's flags word holds (state bits too).
    /// Each constant is the `KMC_` constant of the same name.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct KmcFlags: u64 {
        /// [`KMC_NODEBUG`].
        const NODEBUG = KMC_NODEBUG;
        /// [`KMC_KVMEM`].
        const KVMEM = KMC_KVMEM;
        /// [`KMC_SLAB`].
        const SLAB = KMC_SLAB;
        /// [`KMC_RECLAIMABLE`].
        const RECLAIMABLE = KMC_RECLAIMABLE;
        /// [`KMC_DEADLOCKED`] (state, set by the cache).
        const DEADLOCKED = KMC_DEADLOCKED;
        /// [`KMC_GROWING`] (state, set by the cache).
        const GROWING = KMC_GROWING;
        /// [`KMC_REAPING`] (state, set by the cache).
        const REAPING = KMC_REAPING;
        /// [`KMC_DESTROY`] (state, set by the cache).
        const DESTROY = KMC_DESTROY;
    }
}

impl KmcFlags {
    /// The flags a caller may pass at creation, [`KMC_CREATE_MASK`].
    pub const CREATE: KmcFlags = KmcFlags::from_bits_retain(KMC_CREATE_MASK);
}

/// Any `u64`, unknown bits kept: the allocator rejects what it does not
/// accept, as it does for the raw value.
impl From<u64> for KmcFlags {
    #[inline]
    fn from(bits: u64) -> KmcFlags {
        KmcFlags::from_bits_retain(bits)
    }
}

impl From<KmcFlags> for u64 {
    #[inline]
    fn from(f: KmcFlags) -> u64 {
        f.bits()
    }
}

/// SPL's names from [`KMC_NAMES`], ` | ` separated (`KMC_KVMEM | KMC_GROWING`),
/// unknown bits as one hex value, `0` when empty.
impl fmt::Display for KmcFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known = KMC_NAMES.iter().fold(0, |m, (b, _)| m | b);
        write_flags(f, kmc_names(self.bits()), self.bits() & !known)
    }
}

bitflags::bitflags! {
    /// `KM_*` allocation flags, typed: what `Cache::alloc`, `kmem_alloc`
    /// and their kin take. The empty set is [`KM_SLEEP`], SPL's 0. Each
    /// constant is the `KM_` constant of the same name.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct KmFlags: u32 {
        /// [`KM_SLEEP`]: 0, the empty set (may sleep; the default).
        const SLEEP = KM_SLEEP;
        /// [`KM_NOSLEEP`].
        const NOSLEEP = KM_NOSLEEP;
        /// [`KM_PUSHPAGE`].
        const PUSHPAGE = KM_PUSHPAGE;
    }
}

/// Any `u32`, unknown bits kept: the allocator rejects (panics on) bits
/// outside [`KM_PUBLIC_MASK`], as it does for the raw value.
impl From<u32> for KmFlags {
    #[inline]
    fn from(bits: u32) -> KmFlags {
        KmFlags::from_bits_retain(bits)
    }
}

impl From<KmFlags> for u32 {
    #[inline]
    fn from(f: KmFlags) -> u32 {
        f.bits()
    }
}

/// SPL's names from [`KM_NAMES`], ` | ` separated; `KM_SLEEP` when empty;
/// unknown bits as one hex value.
impl fmt::Display for KmFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known = KM_NAMES.iter().fold(0, |m, (b, _)| m | b);
        write_flags(f, km_names(self.bits()), u64::from(self.bits() & !known))
    }
}

/// `names` ` | ` separated, then the `unknown` bits as one hex value;
/// `0` when there is neither (`KM_SLEEP`, the empty `KmFlags`, is a name).
fn write_flags(
    f: &mut fmt::Formatter<'_>,
    names: impl Iterator<Item = &'static str>,
    unknown: u64,
) -> fmt::Result {
    let mut sep = "";
    for name in names {
        write!(f, "{sep}{name}")?;
        sep = " | ";
    }
    if unknown != 0 {
        write!(f, "{sep}{unknown:#x}")
    } else if sep.is_empty() {
        f.write_str("0")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_single_bits_and_cover_the_masks() {
        let mut all = 0;
        for (bit, name) in KMC_NAMES {
            assert_eq!(bit.count_ones(), 1, "{name}");
            assert_eq!(all & bit, 0, "{name} repeats a bit");
            assert_eq!(kmc_name(bit), Some(name));
            all |= bit;
        }
        assert_eq!(all & KMC_CREATE_MASK, KMC_CREATE_MASK);
        assert_eq!(kmc_name(KMC_KVMEM | KMC_SLAB), None);
        assert_eq!(kmc_name(1 << 40), None);
        let km = KM_NAMES.iter().fold(0, |m, (f, _)| m | f);
        assert_eq!(km, KM_PUBLIC_MASK);
    }

    #[test]
    fn typed_flags_are_the_constants_under_the_same_names() {
        use bitflags::Flags as _;
        // One definition: every typed flag is the KMC_/KM_ constant of its
        // name, and every named constant has a typed flag.
        assert_eq!(KmcFlags::FLAGS.len(), KMC_NAMES.len());
        for flag in KmcFlags::FLAGS {
            let spl = std::format!("KMC_{}", flag.name());
            let (bit, _) = KMC_NAMES
                .iter()
                .find(|(_, n)| *n == spl)
                .unwrap_or_else(|| panic!("{spl} is not in KMC_NAMES"));
            assert_eq!(flag.value().bits(), *bit, "{spl}");
        }
        assert_eq!(KmFlags::FLAGS.len(), KM_NAMES.len());
        for flag in KmFlags::FLAGS {
            let spl = std::format!("KM_{}", flag.name());
            let (bit, _) = KM_NAMES
                .iter()
                .find(|(_, n)| *n == spl)
                .unwrap_or_else(|| panic!("{spl} is not in KM_NAMES"));
            assert_eq!(flag.value().bits(), *bit, "{spl}");
        }
        assert_eq!(KmcFlags::CREATE.bits(), KMC_CREATE_MASK);
        assert_eq!(KmFlags::all().bits(), KM_PUBLIC_MASK);
        assert_eq!(KmFlags::SLEEP, KmFlags::empty());
    }

    #[test]
    fn typed_flags_convert_and_print_spl_names() {
        use std::string::ToString as _;
        assert_eq!(
            KmcFlags::from(KMC_SLAB | 1 << 40).bits(),
            KMC_SLAB | 1 << 40
        );
        assert_eq!(
            u64::from(KmcFlags::SLAB | KmcFlags::KVMEM),
            KMC_SLAB | KMC_KVMEM
        );
        assert_eq!(u32::from(KmFlags::NOSLEEP), KM_NOSLEEP);
        assert_eq!(
            (KmcFlags::GROWING | KmcFlags::SLAB).to_string(),
            "KMC_SLAB | KMC_GROWING"
        );
        assert_eq!(
            KmcFlags::from(KMC_SLAB | 1 << 40).to_string(),
            "KMC_SLAB | 0x10000000000"
        );
        assert_eq!(KmcFlags::empty().to_string(), "0");
        assert_eq!(KmFlags::SLEEP.to_string(), "KM_SLEEP");
        assert_eq!(
            (KmFlags::NOSLEEP | KmFlags::PUSHPAGE).to_string(),
            "KM_NOSLEEP | KM_PUSHPAGE"
        );
        assert_eq!(KmFlags::from(0x40).to_string(), "0x40");
        assert_eq!(
            kmc_names(KMC_DESTROY | KMC_NODEBUG).collect::<std::vec::Vec<_>>(),
            ["KMC_NODEBUG", "KMC_DESTROY"]
        );
        assert_eq!(km_names(0).collect::<std::vec::Vec<_>>(), ["KM_SLEEP"]);
    }
}
