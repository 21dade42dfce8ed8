//! Fixed data for the unit and snapshot tests: snapshots built by hand, the way
//! the collector would deliver them.

use std::time::Duration;

use slabscope_probes::flags::{KMC_DEADLOCKED, KMC_GROWING, KMC_KVMEM, KMC_SLAB};
use slabscope_probes::{
    CacheCounters, CacheSnapshot, EVENT_VALUES, Event, MAX_CPUS, ProbeKind, SlabCounters, name_buf,
};

use crate::app::State;
use crate::sample::{CacheState, Sample, Update};

/// Names a hostile target might give its caches.
pub const HOSTILE_NAMES: &[&str] = &[
    "\x1b]0;pwned\x07",
    "\x1b]52;c;cm0gLXJmIH4K\x07",
    "\x1b[2J",
    "a\nfixture_fake 1 2 3",
    "cr\rover",
    "del\x7f",
    "csi\u{9b}31m",
    "nel\u{85}",
    "\u{202e}evil",
    "iso\u{2066}late\u{2069}",
    "zw\u{200b}j\u{200d}",
    "ls\u{2028}ps\u{2029}",
    "comb\u{301}",
    "wide\u{4e2d}",
    "back\\x1b",
];

/// A KMC_KVMEM cache of 1104-byte objects, 14 per 16 KiB slab, 4 slabs, with
/// `obj_alloc` objects allocated, 17 of them in magazines: 4 and 5 in two
/// CPUs', 8 (one refill) in the depot.
pub fn cache(pid: u32, id: u64, name: &str, obj_alloc: u64) -> CacheState {
    let mut mag_fill = [0u32; MAX_CPUS];
    mag_fill[0] = 4;
    mag_fill[1] = 5;
    CacheState {
        pid,
        snapshot: CacheSnapshot {
            cache_id: id,
            flags: KMC_KVMEM,
            obj_size: 1104,
            obj_align: 8,
            obj_size_full: 1128,
            slab_size: 16384,
            slab_objs: 14,
            mag_size: 16,
            mag_refill: 8,
            ncpus: 2,
            counters: SlabCounters {
                slab_create: 5,
                slab_destroy: 1,
                slab_total: 4,
                slab_alloc: 3,
                slab_max: 4,
                obj_total: 56,
                obj_alloc,
                obj_max: obj_alloc.max(50),
                ..SlabCounters::ZERO
            },
            mag_objs: 17,
            depot_objs: 8,
            mag_fill,
            name: name_buf(name.as_bytes()),
        },
        counters: CacheCounters {
            grows: 5,
            grows_done: 5,
            stats: 3,
            ..CacheCounters::default()
        },
        destroyed: false,
    }
}

/// A sample `at_ms` after attach.
pub fn sample(at_ms: u64, events_total: u64, caches: Vec<CacheState>) -> Sample {
    Sample {
        at: Duration::from_millis(at_ms),
        caches,
        events_total,
        lost_events: 0,
        unreadable_snapshots: 0,
        histograms: Default::default(),
    }
}

/// A probe hit with values that make sense for `kind`.
pub fn event(pid: u32, id: u64, name: &str, kind: ProbeKind, ts_ns: u64) -> Event {
    let values: [u64; EVENT_VALUES] = match kind {
        ProbeKind::CacheCreate => [1104, 8, KMC_KVMEM, 0, 0],
        ProbeKind::GrowStart => [4, 56, 0, 0, 0],
        ProbeKind::GrowDone => [0, 5, 70, 0, 0],
        ProbeKind::Deadlock => [1, 0, 0, 0, 0],
        ProbeKind::EmergencyAlloc => [0x7f3a_2000_1000, 2, 0, 0, 0],
        ProbeKind::EmergencyFree => [0x7f3a_2000_1000, 1, 0, 0, 0],
        ProbeKind::Reap | ProbeKind::SlabReclaim => [1, 14, 0, 0, 0],
        ProbeKind::CacheDestroy => [0, 0, 0, 0, 0],
        ProbeKind::CacheStats => [4, 3, 56, 40, 0],
    };
    Event {
        ts_ns,
        pid,
        tid: pid + 1,
        cache_id: id,
        kind: kind as u32,
        _pad: 0,
        values,
        name: name_buf(name.as_bytes()),
    }
}

/// The caches of [`state`] at sample `i`: a busy cache, a quiet one, a
/// deadlocked one holding emergency objects, a KMC_SLAB one and a destroyed one.
pub fn caches(i: u64) -> Vec<CacheState> {
    let zio = cache(4242, 0x5555_0000_1000, "zio_cache", 30 + 3 * i);
    let mut dnode = cache(4242, 0x5555_0000_2000, "dnode_t", 12);
    dnode.snapshot.obj_size = 752;
    dnode.snapshot.obj_size_full = 776;
    dnode.snapshot.slab_objs = 21;
    dnode.snapshot.slab_total = 2;
    dnode.snapshot.slab_alloc = 1;
    dnode.snapshot.obj_total = 42;
    dnode.snapshot.mag_objs = 3;
    dnode.snapshot.depot_objs = 0;
    dnode.snapshot.mag_fill[0] = 1;
    dnode.snapshot.mag_fill[1] = 2;
    // Every slab object allocated; as in SPL, emergency objects count in
    // obj_total but not in obj_alloc.
    let mut arc = cache(4242, 0x5555_0000_3000, "arc_buf_hdr_t_full", 56);
    arc.snapshot.flags |= KMC_DEADLOCKED | KMC_GROWING;
    arc.snapshot.obj_total = 56 + i;
    arc.snapshot.obj_deadlock = 1;
    arc.snapshot.obj_emergency = i;
    arc.snapshot.obj_emergency_max = i;
    arc.snapshot.ncpus = 4;
    arc.snapshot.mag_fill[..4].copy_from_slice(&[16, 0, 7, 16]);
    arc.snapshot.mag_objs = 39;
    arc.snapshot.depot_objs = 0;
    arc.counters.deadlocks = 1;
    arc.counters.emergency_allocs = i;
    let mut slab = cache(4242, 0x5555_0000_4000, "zfs_btree_leaf_cache", 17);
    slab.snapshot.flags = KMC_SLAB;
    slab.snapshot.obj_size = 4096;
    for f in [
        &mut slab.snapshot.slab_size,
        &mut slab.snapshot.slab_objs,
        &mut slab.snapshot.counters.slab_total,
        &mut slab.snapshot.counters.slab_alloc,
        &mut slab.snapshot.counters.slab_max,
        &mut slab.snapshot.counters.obj_total,
        &mut slab.snapshot.counters.obj_max,
        &mut slab.snapshot.mag_objs,
    ] {
        *f = 0;
    }
    slab.snapshot.mag_size = 0;
    slab.snapshot.ncpus = 0;
    slab.snapshot.depot_objs = 0;
    let mut gone = cache(4242, 0x5555_0000_5000, "scratch", 0);
    gone.destroyed = true;
    vec![zio, dnode, arc, slab, gone]
}

/// A state after six samples of [`caches`] and a few events, with time origin
/// at the first event.
pub fn state() -> State {
    let mut st = State::new("pid 4242");
    for i in 0..6 {
        st.apply(Update::Sample(sample(1000 * (i + 1), 40 * i, caches(i))));
    }
    let base = 5_000_000_000;
    let evs = [
        ("zio_cache", 0x5555_0000_1000, ProbeKind::GrowStart, 0),
        (
            "zio_cache",
            0x5555_0000_1000,
            ProbeKind::GrowDone,
            1_500_000,
        ),
        (
            "arc_buf_hdr_t_full",
            0x5555_0000_3000,
            ProbeKind::GrowStart,
            2_000_000,
        ),
        (
            "arc_buf_hdr_t_full",
            0x5555_0000_3000,
            ProbeKind::Deadlock,
            102_000_000,
        ),
        (
            "arc_buf_hdr_t_full",
            0x5555_0000_3000,
            ProbeKind::EmergencyAlloc,
            102_100_000,
        ),
        ("dnode_t", 0x5555_0000_2000, ProbeKind::Reap, 250_000_000),
        (
            "scratch",
            0x5555_0000_5000,
            ProbeKind::CacheDestroy,
            900_000_000,
        ),
    ];
    for (name, id, kind, dt) in evs {
        st.apply(Update::Event(event(4242, id, name, kind, base + dt)));
    }
    st
}
