//! The families `/metrics` carries per cache, and how a kernel histogram
//! becomes Prometheus buckets. [`super::metrics`] encodes them.

use prometheus_client::{metrics::MetricType, registry::Unit};
use slabscope_probes::{CacheCounters, CacheSnapshot, HistKind, Log2Histogram};

/// One per-cache family.
#[derive(Debug)]
pub struct Family {
    /// The family's name, without the unit suffix.
    pub name: &'static str,
    /// Its `# HELP` text.
    pub help: &'static str,
    /// Its unit, when it has one (bytes, seconds).
    pub unit: Option<Unit>,
    /// Counter or gauge.
    pub kind: MetricType,
    /// Its value for one cache, from the cache's snapshot and probe counters.
    pub value: fn(&CacheSnapshot, &CacheCounters) -> u64,
}

/// `families![kind [bytes] name: value, "help"; ...]`: the per-cache
/// families as a table, one entry per family: its type, its unit when it
/// has one, its name, how its value is read from a cache's snapshot and
/// transition counters, and its HELP.
macro_rules! families {
    ($($kind:ident $([$unit:ident])? $name:ident: $value:expr, $help:literal;)*) => {
        vec![$(Family {
            name: stringify!($name),
            help: $help,
            unit: families!(@unit $($unit)?),
            kind: families!(@kind $kind),
            value: $value,
        }),*]
    };
    (@unit) => { None };
    (@unit bytes) => { Some(Unit::Bytes) };
    (@kind gauge) => { MetricType::Gauge };
    (@kind counter) => { MetricType::Counter };
}

/// Every per-cache family, in exposition order. `/proc/spl/kmem/slab`'s
/// columns first, in its order.
pub fn families() -> Vec<Family> {
    families![
        gauge slabscope_cache_flags: |s, _| s.flags,
            "KMC_* flags of the cache, state bits included (the flags column of /proc/spl/kmem/slab).";
        gauge [bytes] slabscope_cache_size: |s, _| s.slab_size.wrapping_mul(s.slab_total),
            "Bytes of all slabs of the cache: slab size times slabs (the size column).";
        gauge [bytes] slabscope_cache_alloc: |s, _| s.obj_size.wrapping_mul(s.obj_alloc),
            "Bytes of allocated objects: object size times objects allocated (the alloc column).";
        gauge [bytes] slabscope_cache_slab_size: |s, _| s.slab_size,
            "Bytes of one slab; 0 for KMC_SLAB caches (the slabsize column).";
        gauge [bytes] slabscope_cache_object_size: |s, _| s.obj_size,
            "Object size as requested at creation (the objsize column).";
        gauge slabscope_cache_slabs: |s, _| s.slab_total,
            "Slabs the cache holds (slab total).";
        gauge slabscope_cache_slabs_allocated: |s, _| s.slab_alloc,
            "Slabs with at least one object allocated (slab alloc).";
        gauge slabscope_cache_slabs_max: |s, _| s.slab_max,
            "Most slabs the cache has held (slab max).";
        gauge slabscope_cache_objects: |s, _| s.obj_total,
            "Objects the slabs hold, emergency objects included (object total).";
        gauge slabscope_cache_objects_allocated: |s, _| s.obj_alloc,
            "Objects handed out of the slabs: in use or held in magazines (object alloc).";
        gauge slabscope_cache_objects_max: |s, _| s.obj_max,
            "Most objects allocated at once (object max).";
        counter slabscope_cache_deadlocks: |s, _| s.obj_deadlock,
            "Deadlocks the allocator detected on the cache since it was created (emergency dlock).";
        gauge slabscope_cache_emergency_objects: |s, _| s.obj_emergency,
            "Emergency objects alive (emergency alloc).";
        gauge slabscope_cache_emergency_objects_max: |s, _| s.obj_emergency_max,
            "Most emergency objects alive at once (emergency max).";
        gauge [bytes] slabscope_cache_object_full_size: |s, _| s.obj_size_full,
            "Bytes one object occupies in a slab, its header included.";
        gauge slabscope_cache_magazine_objects: |s, _| s.mag_objs,
            "Objects held in magazines: every CPU's and the depot's.";
        gauge slabscope_cache_depot_objects: |s, _| u64::from(s.depot_objs),
            "Objects held in the depot between the per-CPU magazines and the slabs.";
        gauge slabscope_cache_magazine_capacity_objects: |s, _| u64::from(s.mag_size),
            "Objects one per-CPU magazine holds; 0 when the cache has no magazines.";
        counter slabscope_cache_slabs_created: |s, _| s.slab_create,
            "Slabs created since the cache was created.";
        counter slabscope_cache_slabs_destroyed: |s, _| s.slab_destroy,
            "Slabs destroyed since the cache was created.";
        counter slabscope_cache_slab_failures: |s, _| s.slab_fail,
            "Slab allocations that failed since the cache was created.";
        counter slabscope_cache_grows: |_, c| c.grows,
            "Grows started (grow_start probe hits) since the exporter attached.";
        counter slabscope_cache_grow_failures: |_, c| c.grow_failures,
            "Grows that failed to map a slab (grow_done with an error) since the exporter attached.";
        counter slabscope_cache_emergency_allocs: |_, c| c.emergency_allocs,
            "Emergency objects allocated since the exporter attached.";
        counter slabscope_cache_emergency_frees: |_, c| c.emergency_frees,
            "Emergency objects freed since the exporter attached.";
        counter slabscope_cache_reaps: |_, c| c.reaps,
            "Reaps of the cache since the exporter attached.";
        counter slabscope_cache_reaped_slabs: |_, c| c.reap_slabs_released,
            "Slabs released by reaps since the exporter attached.";
        counter slabscope_cache_reclaims: |_, c| c.slab_reclaims,
            "Reclaims (empty slabs unmapped, on any path) since the exporter attached.";
        counter slabscope_cache_reclaimed_slabs: |_, c| c.slabs_released,
            "Slabs unmapped by reclaims since the exporter attached.";
        counter slabscope_cache_reclaimed_objects: |_, c| c.objs_released,
            "Object capacity of the slabs unmapped by reclaims since the exporter attached.";
    ]
}

/// The histogram families: kind, name, help.
pub const HISTOGRAMS: [(HistKind, &str, &str); 3] = [
    (
        HistKind::Grow,
        "slabscope_cache_grow_duration",
        "Time from grow_start to the grow_done of the same cache, measured in the kernel.",
    ),
    (
        HistKind::Deadlocked,
        "slabscope_cache_deadlocked_duration",
        "Time a cache spent DEADLOCKED: from deadlock to the next grow that landed, measured in the kernel.",
    ),
    (
        HistKind::Emergency,
        "slabscope_cache_emergency_object_lifetime",
        "Time from emergency_alloc to the emergency_free of the same object, measured in the kernel.",
    ),
];

/// The kernel's log2 buckets below 2^FIRST_BOUND ns (1 µs) are merged into
/// the first exported bucket, those from 2^LAST_BOUND ns (69 s) into +Inf.
const FIRST_BOUND: usize = 10;
const LAST_BOUND: usize = 36;

/// Series one histogram contributes: its buckets, +Inf, sum and count.
pub const SERIES_PER_HISTOGRAM: usize = LAST_BOUND - FIRST_BOUND + 1 + 1 + 2;

/// A kernel histogram as Prometheus buckets (upper bound in seconds,
/// count in that bucket alone), the sum in seconds, and the count.
pub fn prometheus_buckets(h: &Log2Histogram) -> (Vec<(f64, u64)>, f64, u64) {
    let mut out = Vec::with_capacity(LAST_BOUND - FIRST_BOUND + 2);
    let low: u64 = h.buckets[..=FIRST_BOUND].iter().sum();
    // Bucket i holds durations below 2^i ns.
    out.push(((1u64 << FIRST_BOUND) as f64 / 1e9, low));
    for i in FIRST_BOUND + 1..=LAST_BOUND {
        out.push(((1u64 << i) as f64 / 1e9, h.buckets[i]));
    }
    let high: u64 = h.buckets[LAST_BOUND + 1..].iter().sum();
    out.push((f64::MAX, high));
    (out, h.sum_ns as f64 / 1e9, h.count())
}

/// Series one cache contributes to a scrape.
pub fn series_per_cache() -> usize {
    families().len()
}
