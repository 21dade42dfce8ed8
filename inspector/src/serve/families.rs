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

const fn gauge(
    name: &'static str,
    help: &'static str,
    value: fn(&CacheSnapshot, &CacheCounters) -> u64,
) -> Family {
    Family {
        name,
        help,
        unit: None,
        kind: MetricType::Gauge,
        value,
    }
}

const fn counter(
    name: &'static str,
    help: &'static str,
    value: fn(&CacheSnapshot, &CacheCounters) -> u64,
) -> Family {
    Family {
        name,
        help,
        unit: None,
        kind: MetricType::Counter,
        value,
    }
}

fn bytes(mut f: Family) -> Family {
    f.unit = Some(Unit::Bytes);
    f
}

/// Every per-cache family, in exposition order. `/proc/spl/kmem/slab`'s
/// columns first, in its order.
pub fn families() -> Vec<Family> {
    vec![
        gauge(
            "slabscope_cache_flags",
            "KMC_* flags of the cache, state bits included (the flags column of /proc/spl/kmem/slab).",
            |s, _| s.flags,
        ),
        bytes(gauge(
            "slabscope_cache_size",
            "Bytes of all slabs of the cache: slab size times slabs (the size column).",
            |s, _| s.slab_size.wrapping_mul(s.slab_total),
        )),
        bytes(gauge(
            "slabscope_cache_alloc",
            "Bytes of allocated objects: object size times objects allocated (the alloc column).",
            |s, _| s.obj_size.wrapping_mul(s.obj_alloc),
        )),
        bytes(gauge(
            "slabscope_cache_slab_size",
            "Bytes of one slab; 0 for KMC_SLAB caches (the slabsize column).",
            |s, _| s.slab_size,
        )),
        bytes(gauge(
            "slabscope_cache_object_size",
            "Object size as requested at creation (the objsize column).",
            |s, _| s.obj_size,
        )),
        gauge(
            "slabscope_cache_slabs",
            "Slabs the cache holds (slab total).",
            |s, _| s.slab_total,
        ),
        gauge(
            "slabscope_cache_slabs_allocated",
            "Slabs with at least one object allocated (slab alloc).",
            |s, _| s.slab_alloc,
        ),
        gauge(
            "slabscope_cache_slabs_max",
            "Most slabs the cache has held (slab max).",
            |s, _| s.slab_max,
        ),
        gauge(
            "slabscope_cache_objects",
            "Objects the slabs hold, emergency objects included (object total).",
            |s, _| s.obj_total,
        ),
        gauge(
            "slabscope_cache_objects_allocated",
            "Objects outside the slabs' free lists: in use or held in magazines (object alloc).",
            |s, _| s.obj_alloc,
        ),
        gauge(
            "slabscope_cache_objects_max",
            "Most objects allocated at once (object max).",
            |s, _| s.obj_max,
        ),
        counter(
            "slabscope_cache_deadlocks",
            "Deadlocks the allocator detected on the cache since it was created (emergency dlock).",
            |s, _| s.obj_deadlock,
        ),
        gauge(
            "slabscope_cache_emergency_objects",
            "Emergency objects alive (emergency alloc).",
            |s, _| s.obj_emergency,
        ),
        gauge(
            "slabscope_cache_emergency_objects_max",
            "Most emergency objects alive at once (emergency max).",
            |s, _| s.obj_emergency_max,
        ),
        bytes(gauge(
            "slabscope_cache_object_full_size",
            "Bytes one object occupies in a slab, its header included.",
            |s, _| s.obj_size_full,
        )),
        gauge(
            "slabscope_cache_magazine_objects",
            "Objects held in magazines: every CPU's and the depot's.",
            |s, _| s.mag_objs,
        ),
        gauge(
            "slabscope_cache_depot_objects",
            "Objects held in the depot between the per-CPU magazines and the slabs.",
            |s, _| u64::from(s.depot_objs),
        ),
        gauge(
            "slabscope_cache_magazine_capacity_objects",
            "Objects one per-CPU magazine holds; 0 when the cache has no magazines.",
            |s, _| u64::from(s.mag_size),
        ),
        counter(
            "slabscope_cache_slabs_created",
            "Slabs created since the cache was created.",
            |s, _| s.slab_create,
        ),
        counter(
            "slabscope_cache_slabs_destroyed",
            "Slabs destroyed since the cache was created.",
            |s, _| s.slab_destroy,
        ),
        counter(
            "slabscope_cache_slab_failures",
            "Slab allocations that failed since the cache was created.",
            |s, _| s.slab_fail,
        ),
        counter(
            "slabscope_cache_grows",
            "Grows started (grow_start probe hits) since the exporter attached.",
            |_, c| c.grows,
        ),
        counter(
            "slabscope_cache_grow_failures",
            "Grows that failed to map a slab (grow_done with an error) since the exporter attached.",
            |_, c| c.grow_failures,
        ),
        counter(
            "slabscope_cache_emergency_allocs",
            "Emergency objects allocated since the exporter attached.",
            |_, c| c.emergency_allocs,
        ),
        counter(
            "slabscope_cache_emergency_frees",
            "Emergency objects freed since the exporter attached.",
            |_, c| c.emergency_frees,
        ),
        counter(
            "slabscope_cache_reaps",
            "Reaps of the cache since the exporter attached.",
            |_, c| c.reaps,
        ),
        counter(
            "slabscope_cache_reaped_slabs",
            "Slabs released by reaps since the exporter attached.",
            |_, c| c.reap_slabs_released,
        ),
        counter(
            "slabscope_cache_reclaims",
            "Reclaims (empty slabs unmapped, on any path) since the exporter attached.",
            |_, c| c.slab_reclaims,
        ),
        counter(
            "slabscope_cache_reclaimed_slabs",
            "Slabs unmapped by reclaims since the exporter attached.",
            |_, c| c.slabs_released,
        ),
        counter(
            "slabscope_cache_reclaimed_objects",
            "Object capacity of the slabs unmapped by reclaims since the exporter attached.",
            |_, c| c.objs_released,
        ),
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
