//! The probe contract of slabscope.
//!
//! This crate is the one place that names the USDT provider (`slabscope`), every
//! probe, and the order and meaning of each probe's arguments. Three parties read
//! it:
//!
//! - the allocator fires probes only through the functions of [`fire`];
//! - the eBPF program decodes the arguments and fills maps with the
//!   `#[repr(C)]` types below ([`CacheSnapshot`], [`CacheCounters`], [`Event`]);
//! - the collector parses `.note.stapsdt`, fills the [`UsdtSpec`] table and reads
//!   the maps back (with `aya::Pod` impls behind the `user` feature).
//!
//! Every probe has the same shape: `arg0` is the cache id (the address of the
//! cache, stable for its lifetime), `arg1` a pointer to the cache name (NUL
//! terminated), then the probe's own scalars, and last a pointer to a
//! [`CacheSnapshot`] of the cache taken at the moment the probe fired. The
//! [`PROBES`] table lists them; `docs/PROBES.md` is its prose form.
//!
//! Probes are plain `probe::probe!` sites, never semaphore-gated: aya does not
//! increment USDT semaphores, so gated probes would never fire under the
//! slabscope collector. An untraced site costs one `nop`.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

mod counters;
pub mod flags;
#[cfg(feature = "std")]
pub mod stats;

pub use counters::SlabCounters;

/// The USDT provider name of every slabscope probe.
pub const PROVIDER: &str = "slabscope";

/// Longest cache name, in bytes, without the terminating NUL.
pub const NAME_MAX: usize = NAME_LEN - 1;
/// Size of the NUL-padded name buffers in [`CacheSnapshot`] and [`Event`].
pub const NAME_LEN: usize = 64;
/// Per-CPU magazine fill is reported for the first `MAX_CPUS` CPUs;
/// [`CacheSnapshot::mag_objs`] always counts all of them.
pub const MAX_CPUS: usize = 64;
/// Most arguments a slabscope probe has: bpftrace 0.17 (Debian 12) reads
/// only `arg0`..`arg5` on x86-64, so every argument stays within reach.
pub const MAX_PROBE_ARGS: usize = 6;
/// Number of probe-specific values carried by an [`Event`].
pub const EVENT_VALUES: usize = 5;

/// Whether the allocator was built with its USDT sites (`sdt` feature).
/// Callers skip building snapshots when this is false.
pub const ENABLED: bool = cfg!(feature = "sdt");

/// Every probe the allocator fires. The discriminant is the event kind carried
/// in [`Event::kind`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeKind {
    /// The `cache_create` probe.
    CacheCreate = 1,
    /// The `cache_destroy` probe.
    CacheDestroy = 2,
    /// The `grow_start` probe.
    GrowStart = 3,
    /// The `grow_done` probe.
    GrowDone = 4,
    /// The `deadlock` probe.
    Deadlock = 5,
    /// The `emergency_alloc` probe.
    EmergencyAlloc = 6,
    /// The `emergency_free` probe.
    EmergencyFree = 7,
    /// The `reap` probe.
    Reap = 8,
    /// The `slab_reclaim` probe.
    SlabReclaim = 9,
    /// The `cache_stats` probe.
    CacheStats = 10,
}

impl ProbeKind {
    /// All kinds, in discriminant order.
    pub const ALL: [ProbeKind; 10] = [
        ProbeKind::CacheCreate,
        ProbeKind::CacheDestroy,
        ProbeKind::GrowStart,
        ProbeKind::GrowDone,
        ProbeKind::Deadlock,
        ProbeKind::EmergencyAlloc,
        ProbeKind::EmergencyFree,
        ProbeKind::Reap,
        ProbeKind::SlabReclaim,
        ProbeKind::CacheStats,
    ];

    /// The kind with discriminant `v`.
    pub const fn from_u32(v: u32) -> Option<ProbeKind> {
        if v >= 1 && v <= Self::ALL.len() as u32 {
            Some(Self::ALL[(v - 1) as usize])
        } else {
            None
        }
    }

    /// The probe's definition in [`PROBES`].
    pub const fn def(self) -> &'static ProbeDef {
        &PROBES[self as usize - 1]
    }

    /// The USDT probe name (`grow_start`, ...).
    pub const fn name(self) -> &'static str {
        self.def().name
    }
}

/// One documented probe argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgDef {
    /// Name used in the documentation and in bpftrace comments.
    pub name: &'static str,
    /// C type of the argument as a tracer sees it.
    pub ty: &'static str,
    /// What the value means.
    pub meaning: &'static str,
}

/// One documented probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeDef {
    /// Which probe this is (the event kind the collector reports).
    pub kind: ProbeKind,
    /// USDT probe name under [`PROVIDER`].
    pub name: &'static str,
    /// When the probe fires.
    pub fires: &'static str,
    /// Arguments in order: `arg0` is `args[0]`.
    pub args: &'static [ArgDef],
}

impl ProbeDef {
    /// Number of probe-specific scalars between the name pointer and the
    /// snapshot pointer; they land in [`Event::values`] in order.
    pub const fn values(&self) -> usize {
        self.args.len() - 3
    }
}

const CACHE: ArgDef = ArgDef {
    name: "cache",
    ty: "uint64_t",
    meaning: "cache id: the address of the cache, stable until it is destroyed",
};
const NAME: ArgDef = ArgDef {
    name: "name",
    ty: "const char *",
    meaning: "cache name, NUL terminated (bpftrace: str(arg1))",
};
const SNAP: ArgDef = ArgDef {
    name: "snapshot",
    ty: "const struct slabscope_cache_snapshot *",
    meaning: "every counter of the cache at this moment (CacheSnapshot, include/slabscope.h)",
};
const SLAB_TOTAL: ArgDef = ArgDef {
    name: "slab_total",
    ty: "uint64_t",
    meaning: "slabs the cache holds after the event",
};
const OBJ_TOTAL: ArgDef = ArgDef {
    name: "obj_total",
    ty: "uint64_t",
    meaning: "objects the cache's slabs hold, plus emergency objects, after the event",
};
const SLABS_RELEASED: ArgDef = ArgDef {
    name: "slabs_released",
    ty: "uint64_t",
    meaning: "empty slabs returned to the OS",
};
const OBJS_RELEASED: ArgDef = ArgDef {
    name: "objs_released",
    ty: "uint64_t",
    meaning: "object capacity of those slabs",
};

/// Every probe, indexed by `ProbeKind as usize - 1`.
pub const PROBES: [ProbeDef; 10] = [
    ProbeDef {
        kind: ProbeKind::CacheCreate,
        name: "cache_create",
        fires: "when a cache has been created and registered, before it is returned",
        args: &[
            CACHE,
            NAME,
            ArgDef {
                name: "obj_size",
                ty: "uint64_t",
                meaning: "object size requested",
            },
            ArgDef {
                name: "align",
                ty: "uint64_t",
                meaning: "object alignment",
            },
            ArgDef {
                name: "flags",
                ty: "uint64_t",
                meaning: "cache flags (KMC_*)",
            },
            SNAP,
        ],
    },
    ProbeDef {
        kind: ProbeKind::CacheDestroy,
        name: "cache_destroy",
        fires: "when a cache is about to be torn down (after the in-use check passed), \
                with its last state",
        args: &[CACHE, NAME, SLAB_TOTAL, OBJ_TOTAL, SNAP],
    },
    ProbeDef {
        kind: ProbeKind::GrowStart,
        name: "grow_start",
        fires: "when a slab grow starts: an allocation found no free object and, the \
                GROWING bit being clear, maps a slab itself or dispatches the grow to the \
                worker pool (once more when a failed attempt of its own is handed to a \
                worker)",
        args: &[CACHE, NAME, SLAB_TOTAL, OBJ_TOTAL, SNAP],
    },
    ProbeDef {
        kind: ProbeKind::GrowDone,
        name: "grow_done",
        fires: "when that grow finished, in the allocating thread or on a worker: the \
                new slab was added, or the mapping failed",
        args: &[
            CACHE,
            NAME,
            ArgDef {
                name: "result",
                ty: "int64_t",
                meaning: "0 when a slab was added, else a negative errno (-ENOMEM)",
            },
            SLAB_TOTAL,
            OBJ_TOTAL,
            SNAP,
        ],
    },
    ProbeDef {
        kind: ProbeKind::Deadlock,
        name: "deadlock",
        fires: "when an allocation waited the grow timeout for the grow in flight and set \
                DEADLOCKED",
        args: &[
            CACHE,
            NAME,
            ArgDef {
                name: "obj_deadlock",
                ty: "uint64_t",
                meaning: "deadlocks detected on this cache so far, this one included",
            },
            SNAP,
        ],
    },
    ProbeDef {
        kind: ProbeKind::EmergencyAlloc,
        name: "emergency_alloc",
        fires: "when an emergency object was allocated because the cache is DEADLOCKED",
        args: &[
            CACHE,
            NAME,
            ArgDef {
                name: "obj",
                ty: "void *",
                meaning: "the emergency object",
            },
            ArgDef {
                name: "obj_emergency",
                ty: "uint64_t",
                meaning: "live emergency objects, this one included",
            },
            SNAP,
        ],
    },
    ProbeDef {
        kind: ProbeKind::EmergencyFree,
        name: "emergency_free",
        fires: "when an emergency object was freed",
        args: &[
            CACHE,
            NAME,
            ArgDef {
                name: "obj",
                ty: "void *",
                meaning: "the emergency object (now invalid)",
            },
            ArgDef {
                name: "obj_emergency",
                ty: "uint64_t",
                meaning: "live emergency objects left",
            },
            SNAP,
        ],
    },
    ProbeDef {
        kind: ProbeKind::Reap,
        name: "reap",
        fires: "after each reap of one cache, by reap_now, kmem_reap or the background \
                reaper, even when it released nothing",
        args: &[CACHE, NAME, SLABS_RELEASED, OBJS_RELEASED, SNAP],
    },
    ProbeDef {
        kind: ProbeKind::SlabReclaim,
        name: "slab_reclaim",
        fires: "when empty slabs were unmapped, on any path (a magazine flush on free, a \
                reap, destroy); never with zero slabs",
        args: &[CACHE, NAME, SLABS_RELEASED, OBJS_RELEASED, SNAP],
    },
    ProbeDef {
        kind: ProbeKind::CacheStats,
        name: "cache_stats",
        fires: "for every cache, every stats interval (SLABSCOPE_STATS_INTERVAL_MS), from \
                a background thread, so a late tracer learns every cache (in a \
                single-threaded program, which slabscope keeps single-threaded, from its \
                allocations' slow paths instead)",
        args: &[
            CACHE,
            NAME,
            SLAB_TOTAL,
            OBJ_TOTAL,
            ArgDef {
                name: "obj_alloc",
                ty: "uint64_t",
                meaning: "objects allocated (in use or held in magazines)",
            },
            SNAP,
        ],
    },
];

/// The state of one cache, as the allocator reports it to probes.
///
/// Field meanings are SPL's (`spl_kmem_cache_t`): `obj_alloc` counts objects
/// handed out of the slabs, so objects held in magazines are counted as
/// allocated, and `mag_objs` says how many of them are in magazines.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSnapshot {
    /// Cache id (address of the cache).
    pub cache_id: u64,
    /// Cache flags (`KMC_*`, including DEADLOCKED/GROWING/REAPING state bits).
    pub flags: u64,
    /// Object size as requested at creation.
    pub obj_size: u64,
    /// Object alignment.
    pub obj_align: u64,
    /// Bytes an object occupies in a slab, its header included.
    pub obj_size_full: u64,
    /// Bytes of one slab (0 for KMC_SLAB caches).
    pub slab_size: u64,
    /// Objects per slab (0 for KMC_SLAB caches).
    pub slab_objs: u64,
    /// Objects per per-CPU magazine (0 when the cache has no magazines).
    pub mag_size: u32,
    /// Objects moved per magazine refill or flush.
    pub mag_refill: u32,
    /// CPUs with a magazine (entries of `mag_fill` used, capped at MAX_CPUS).
    pub ncpus: u32,
    /// Objects held in the depot between the magazines and the slabs
    /// (also counted in `mag_objs`; saturates at `u32::MAX`).
    pub depot_objs: u32,
    /// SPL's counters; they read as the snapshot's own fields
    /// (`snap.slab_total`) through `Deref`.
    pub counters: SlabCounters,
    /// Objects held in all magazines (every CPU, not only the first MAX_CPUS).
    pub mag_objs: u64,
    /// Objects held in each CPU's magazine.
    pub mag_fill: [u32; MAX_CPUS],
    /// Cache name, NUL padded.
    pub name: [u8; NAME_LEN],
}

impl CacheSnapshot {
    /// An all-zero snapshot.
    pub const ZERO: CacheSnapshot = CacheSnapshot {
        cache_id: 0,
        flags: 0,
        obj_size: 0,
        obj_align: 0,
        obj_size_full: 0,
        slab_size: 0,
        slab_objs: 0,
        mag_size: 0,
        mag_refill: 0,
        ncpus: 0,
        depot_objs: 0,
        counters: SlabCounters::ZERO,
        mag_objs: 0,
        mag_fill: [0; MAX_CPUS],
        name: [0; NAME_LEN],
    };

    /// The name bytes before the first NUL.
    pub fn name_bytes(&self) -> &[u8] {
        name_bytes(&self.name)
    }
}

impl Default for CacheSnapshot {
    fn default() -> Self {
        Self::ZERO
    }
}

/// The counters are the snapshot's own fields in C (`include/slabscope.h`
/// declares them inline) and read that way here too: `snap.slab_total`.
impl core::ops::Deref for CacheSnapshot {
    type Target = SlabCounters;

    fn deref(&self) -> &SlabCounters {
        &self.counters
    }
}

impl core::ops::DerefMut for CacheSnapshot {
    fn deref_mut(&mut self) -> &mut SlabCounters {
        &mut self.counters
    }
}

/// Copies `name` into a NUL-padded buffer, truncated to [`NAME_MAX`] bytes.
pub fn name_buf(name: &[u8]) -> [u8; NAME_LEN] {
    let mut buf = [0u8; NAME_LEN];
    let n = name.len().min(NAME_MAX);
    buf[..n].copy_from_slice(&name[..n]);
    buf
}

/// The bytes of a NUL-padded buffer before the first NUL.
pub fn name_bytes(buf: &[u8]) -> &[u8] {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    &buf[..end]
}

/// One cache of one traced process: the key of the eBPF per-cache maps
/// and of the inspector's tables. Orders by pid, then cache id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey {
    /// Process the cache lives in.
    pub pid: u32,
    /// Zero: explicit padding, so the eBPF side hashes no garbage.
    pub _pad: u32,
    /// The cache id (its address in the process).
    pub cache_id: u64,
}

impl CacheKey {
    /// The key of cache `cache_id` in process `pid`.
    pub const fn new(pid: u32, cache_id: u64) -> CacheKey {
        CacheKey {
            pid,
            _pad: 0,
            cache_id,
        }
    }
}

/// Transition counters the eBPF program keeps per (pid, cache), one increment
/// per probe hit, since the collector attached (not since the cache was
/// created). With the `serde` feature they serialize as the inspector's
/// `--json` prints them (`counters` of each cache).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct CacheCounters {
    /// `cache_create` probe hits.
    pub creates: u64,
    /// `cache_destroy` probe hits.
    pub destroys: u64,
    /// `grow_start` probe hits: slab grows started.
    pub grows: u64,
    /// `grow_done` probe hits that report success (result 0).
    pub grows_done: u64,
    /// `grow_done` probe hits that report a failure (a negative errno).
    pub grow_failures: u64,
    /// `deadlock` probe hits: grows that outlived the grow timeout.
    pub deadlocks: u64,
    /// `emergency_alloc` probe hits: emergency objects handed out.
    pub emergency_allocs: u64,
    /// `emergency_free` probe hits: emergency objects given back.
    pub emergency_frees: u64,
    /// `reap` probe hits.
    pub reaps: u64,
    /// Slabs those reaps released (`reap`'s slabs_released), summed.
    pub reap_slabs_released: u64,
    /// Objects those reaps released (`reap`'s objs_released), summed.
    pub reap_objs_released: u64,
    /// `slab_reclaim` probe hits.
    pub slab_reclaims: u64,
    /// Slabs those reclaims released (`slab_reclaim`'s slabs_released), summed.
    pub slabs_released: u64,
    /// Objects those reclaims released (`slab_reclaim`'s objs_released), summed.
    pub objs_released: u64,
    /// `cache_stats` probe hits: the periodic snapshots.
    pub stats: u64,
    /// When this cache's last probe hit happened, in nanoseconds of the
    /// kernel's `CLOCK_MONOTONIC` (`bpf_ktime_get_ns`: since boot, not
    /// counting suspend); 0 before any hit.
    pub last_ns: u64,
}

/// One probe hit, as delivered through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// bpf_ktime_get_ns() at the hit (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Process (thread group) that fired the probe.
    pub pid: u32,
    /// Thread that fired the probe.
    pub tid: u32,
    /// The cache id (its address in the process).
    pub cache_id: u64,
    /// A [`ProbeKind`] discriminant.
    pub kind: u32,
    /// Zero: explicit padding.
    pub _pad: u32,
    /// The probe's own scalars (arguments 2.. before the snapshot), zero padded.
    pub values: [u64; EVENT_VALUES],
    /// Cache name, NUL padded.
    pub name: [u8; NAME_LEN],
}

/// Buckets of a [`Log2Histogram`].
pub const HIST_BUCKETS: usize = 64;

/// What a [`Log2Histogram`] measures (the `kind` of its [`HistKey`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HistKind {
    /// `grow_start` to the `grow_done` of the same cache (the first
    /// `grow_start` of a grow handed to a worker counts).
    Grow = 1,
    /// `deadlock` to the next successful `grow_done` of the same cache: how
    /// long the cache was DEADLOCKED.
    Deadlocked = 2,
    /// `emergency_alloc` to the `emergency_free` of the same object.
    Emergency = 3,
}

impl HistKind {
    /// All kinds, in discriminant order.
    pub const ALL: [HistKind; 3] = [HistKind::Grow, HistKind::Deadlocked, HistKind::Emergency];

    /// The kind with discriminant `v`.
    pub const fn from_u32(v: u32) -> Option<HistKind> {
        match v {
            1 => Some(HistKind::Grow),
            2 => Some(HistKind::Deadlocked),
            3 => Some(HistKind::Emergency),
            _ => None,
        }
    }
}

/// Key of the eBPF `HISTOGRAMS` map: one process, one cache, one
/// [`HistKind`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HistKey {
    /// The traced process.
    pub pid: u32,
    /// A [`HistKind`] discriminant.
    pub kind: u32,
    /// The cache (its address in the process), as [`CacheKey`] names it.
    pub cache_id: u64,
}

/// Durations in nanoseconds, measured in the eBPF program, in log2 buckets:
/// bucket `i` counts durations `d` with `log2_bucket(d) == i`, that is
/// `d < 2^i` ns and, for `i > 0`, `d >= 2^(i-1)` ns. Kept per CPU; a reader
/// adds the CPUs' copies.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Log2Histogram {
    /// Durations per bucket: bucket `i` counts those in `[2^(i-1), 2^i)` ns
    /// (bucket 0: zero).
    pub buckets: [u64; HIST_BUCKETS],
    /// Sum of the durations, in nanoseconds.
    pub sum_ns: u64,
}

impl Log2Histogram {
    /// An empty histogram.
    pub const ZERO: Log2Histogram = Log2Histogram {
        buckets: [0; HIST_BUCKETS],
        sum_ns: 0,
    };

    /// Durations counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds `other`'s counts (another CPU's copy) to this one.
    pub fn add(&mut self, other: &Log2Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a = a.wrapping_add(*b);
        }
        self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
    }
}

impl Default for Log2Histogram {
    fn default() -> Self {
        Self::ZERO
    }
}

/// The bucket of a duration of `ns` nanoseconds: 0 for 0, else
/// `floor(log2(ns)) + 1`, capped at the last bucket. Written with shifts
/// only, so the eBPF verifier sees a fixed number of steps.
#[inline(always)]
pub const fn log2_bucket(ns: u64) -> usize {
    if ns == 0 {
        return 0;
    }
    let mut x = ns;
    let mut r = 0;
    if x >= 1 << 32 {
        x >>= 32;
        r += 32;
    }
    if x >= 1 << 16 {
        x >>= 16;
        r += 16;
    }
    if x >= 1 << 8 {
        x >>= 8;
        r += 8;
    }
    if x >= 1 << 4 {
        x >>= 4;
        r += 4;
    }
    if x >= 1 << 2 {
        x >>= 2;
        r += 2;
    }
    if x >= 1 << 1 {
        r += 1;
    }
    let b = r + 1;
    if b < HIST_BUCKETS {
        b
    } else {
        HIST_BUCKETS - 1
    }
}

/// Index of the lost-event counter in the eBPF `LOST` map.
pub const LOST_EVENTS: u32 = 0;
/// Index, in the eBPF `LOST` map, of the count of probe hits whose snapshot
/// pointer could not be read: such a hit is counted there and otherwise
/// ignored (no snapshot, counter or event), so it cannot make up a cache.
pub const LOST_SNAPSHOTS: u32 = 1;
/// Entries of the eBPF `LOST` map.
pub const LOST_SLOTS: u32 = 2;

/// How a USDT argument is located (libbpf's `enum __bpf_usdt_arg_type`).
pub const ARG_CONST: u8 = 0;
/// The value is in a register.
pub const ARG_REG: u8 = 1;
/// The value is in memory at register + displacement.
pub const ARG_REG_DEREF: u8 = 2;
/// The value is in memory at base + index * scale + displacement.
pub const ARG_SIB: u8 = 3;

/// Most arguments one probe site may carry (libbpf's limit).
pub const MAX_ARGS: usize = 12;

/// One parsed `N@location` USDT argument (libbpf's `struct __bpf_usdt_arg_spec`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsdtArgSpec {
    /// The constant (ARG_CONST) or the displacement (ARG_REG_DEREF, ARG_SIB).
    pub val_off: u64,
    /// Offset of the (base) register in `struct pt_regs`.
    pub reg_off: u16,
    /// Offset of the index register in `struct pt_regs` (ARG_SIB).
    pub idx_reg_off: u16,
    /// log2 of the SIB scale (0..=3).
    pub scale_bits: u8,
    /// One of the `ARG_*` constants.
    pub arg_type: u8,
    /// 1 when the declared size was negative (signed).
    pub arg_signed: u8,
    /// 64 - 8 * size: shift used to truncate then sign- or zero-extend.
    pub arg_bitshift: u8,
}

/// The argument specs of one probe site; the attach cookie is its index in the
/// eBPF `USDT_SPECS` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsdtSpec {
    /// How to read each argument; entries past `arg_cnt` are zero.
    pub args: [UsdtArgSpec; MAX_ARGS],
    /// Arguments the site has.
    pub arg_cnt: u16,
    /// Zero: explicit padding.
    pub _pad: [u16; 3],
}

#[cfg(feature = "user")]
mod pod {
    use super::{
        CacheCounters, CacheKey, CacheSnapshot, Event, HistKey, Log2Histogram, SlabCounters,
        UsdtArgSpec, UsdtSpec,
    };
    // SAFETY: every type is #[repr(C)], made only of integers and integer arrays,
    // with explicit padding fields, so every bit pattern is valid and there are no
    // uninitialised bytes.
    unsafe impl aya::Pod for CacheSnapshot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CacheKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SlabCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CacheCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for UsdtArgSpec {}
    // SAFETY: as above.
    unsafe impl aya::Pod for UsdtSpec {}
    // SAFETY: as above.
    unsafe impl aya::Pod for HistKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Log2Histogram {}
}

/// The probe sites. Each function fires one probe with the arguments of its
/// [`ProbeDef`]; with the `sdt` feature off each is empty.
///
/// The functions are `#[inline(always)]`: each call site in the allocator
/// becomes its own USDT site, with its arguments in registers.
pub mod fire {
    use super::CacheSnapshot;

    macro_rules! site {
        ($name:ident, $snap:ident $(, $arg:expr)*) => {{
            #[cfg(feature = "sdt")]
            probe::probe!(
                slabscope,
                $name,
                $snap.cache_id,
                $snap.name.as_ptr(),
                $($arg,)*
                $snap as *const CacheSnapshot
            );
            #[cfg(not(feature = "sdt"))]
            {
                let _ = $snap;
                $(let _ = $arg;)*
            }
        }};
    }

    /// `cache_create(cache, name, obj_size, align, flags, snapshot)`.
    #[inline(always)]
    pub fn cache_create(s: &CacheSnapshot) {
        site!(cache_create, s, s.obj_size, s.obj_align, s.flags);
    }

    /// `cache_destroy(cache, name, slab_total, obj_total, snapshot)`.
    #[inline(always)]
    pub fn cache_destroy(s: &CacheSnapshot) {
        site!(cache_destroy, s, s.slab_total, s.obj_total);
    }

    /// `grow_start(cache, name, slab_total, obj_total, snapshot)`.
    #[inline(always)]
    pub fn grow_start(s: &CacheSnapshot) {
        site!(grow_start, s, s.slab_total, s.obj_total);
    }

    /// `grow_done(cache, name, result, slab_total, obj_total, snapshot)`.
    #[inline(always)]
    pub fn grow_done(s: &CacheSnapshot, result: i64) {
        site!(grow_done, s, result, s.slab_total, s.obj_total);
    }

    /// `deadlock(cache, name, obj_deadlock, snapshot)`.
    #[inline(always)]
    pub fn deadlock(s: &CacheSnapshot) {
        site!(deadlock, s, s.obj_deadlock);
    }

    /// `emergency_alloc(cache, name, obj, obj_emergency, snapshot)`.
    #[inline(always)]
    pub fn emergency_alloc(s: &CacheSnapshot, obj: *const u8) {
        site!(emergency_alloc, s, obj, s.obj_emergency);
    }

    /// `emergency_free(cache, name, obj, obj_emergency, snapshot)`.
    #[inline(always)]
    pub fn emergency_free(s: &CacheSnapshot, obj: *const u8) {
        site!(emergency_free, s, obj, s.obj_emergency);
    }

    /// `reap(cache, name, slabs_released, objs_released, snapshot)`.
    #[inline(always)]
    pub fn reap(s: &CacheSnapshot, slabs_released: u64, objs_released: u64) {
        site!(reap, s, slabs_released, objs_released);
    }

    /// `slab_reclaim(cache, name, slabs_released, objs_released, snapshot)`.
    #[inline(always)]
    pub fn slab_reclaim(s: &CacheSnapshot, slabs_released: u64, objs_released: u64) {
        site!(slab_reclaim, s, slabs_released, objs_released);
    }

    /// `cache_stats(cache, name, slab_total, obj_total, obj_alloc, snapshot)`.
    #[inline(always)]
    pub fn cache_stats(s: &CacheSnapshot) {
        site!(cache_stats, s, s.slab_total, s.obj_total, s.obj_alloc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_index_the_table() {
        for (i, kind) in ProbeKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i + 1);
            assert_eq!(PROBES[i].kind, *kind);
            assert_eq!(ProbeKind::from_u32(*kind as u32), Some(*kind));
            assert_eq!(kind.def().name, PROBES[i].name);
        }
        assert_eq!(ProbeKind::from_u32(0), None);
        assert_eq!(ProbeKind::from_u32(11), None);
    }

    #[test]
    fn every_probe_starts_with_cache_and_name_and_ends_with_snapshot() {
        for p in &PROBES {
            assert_eq!(p.args[0], CACHE, "{}", p.name);
            assert_eq!(p.args[1], NAME, "{}", p.name);
            assert_eq!(p.args[p.args.len() - 1], SNAP, "{}", p.name);
            assert!(p.values() <= EVENT_VALUES, "{}", p.name);
            assert!(
                p.args.len() <= MAX_PROBE_ARGS,
                "{}: {} arguments, more than bpftrace reads ({MAX_PROBE_ARGS})",
                p.name,
                p.args.len()
            );
        }
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        use core::mem::size_of;
        assert_eq!(size_of::<CacheKey>(), 16);
        assert_eq!(size_of::<UsdtArgSpec>(), 16);
        assert_eq!(size_of::<UsdtSpec>(), 16 * MAX_ARGS + 8);
        assert_eq!(
            size_of::<Event>(),
            8 + 8 + 8 + 8 + 8 * EVENT_VALUES + NAME_LEN
        );
        assert_eq!(size_of::<CacheCounters>(), 16 * 8);
        assert_eq!(size_of::<SlabCounters>(), 12 * 8);
        assert_eq!(core::mem::offset_of!(CacheSnapshot, counters) % 8, 0);
        assert_eq!(
            size_of::<CacheSnapshot>(),
            7 * 8 + 4 * 4 + 13 * 8 + 4 * MAX_CPUS + NAME_LEN
        );
    }

    #[test]
    fn log2_buckets_bound_their_durations() {
        assert_eq!(log2_bucket(0), 0);
        assert_eq!(log2_bucket(1), 1);
        assert_eq!(log2_bucket(2), 2);
        assert_eq!(log2_bucket(3), 2);
        assert_eq!(log2_bucket(4), 3);
        assert_eq!(log2_bucket(u64::MAX), HIST_BUCKETS - 1);
        // Every duration lies below its bucket's bound 2^i and, but in
        // bucket 0, at or above the previous bound.
        let mut d = 1u64;
        while d < (1 << 62) {
            for v in [d - 1, d, d + 1, d.saturating_mul(3) / 2] {
                let b = log2_bucket(v);
                assert!(
                    b == HIST_BUCKETS - 1 || (v as u128) < (1u128 << b),
                    "{v} in {b}"
                );
                assert!(b == 0 || v >= 1 << (b - 1), "{v} in {b}");
            }
            d <<= 1;
        }
    }

    #[test]
    fn histograms_add_per_cpu_copies() {
        let mut a = Log2Histogram::ZERO;
        a.buckets[3] = 2;
        a.sum_ns = 10;
        let mut b = Log2Histogram::ZERO;
        b.buckets[3] = 1;
        b.buckets[5] = 4;
        b.sum_ns = 100;
        a.add(&b);
        assert_eq!(
            (a.buckets[3], a.buckets[5], a.count(), a.sum_ns),
            (3, 4, 7, 110)
        );
        assert_eq!(size_of::<HistKey>(), 16);
        assert_eq!(size_of::<Log2Histogram>(), 8 * (HIST_BUCKETS + 1));
        for k in HistKind::ALL {
            assert_eq!(HistKind::from_u32(k as u32), Some(k));
        }
        assert_eq!(HistKind::from_u32(0), None);
    }

    #[test]
    fn names_round_trip_and_truncate() {
        let b = name_buf(b"zio_cache");
        assert_eq!(name_bytes(&b), b"zio_cache");
        let long = [b'x'; 100];
        let b = name_buf(&long);
        assert_eq!(name_bytes(&b).len(), NAME_MAX);
        assert_eq!(b[NAME_LEN - 1], 0);
    }
}
