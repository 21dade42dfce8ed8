//! A deterministic allocator workload that reports what it did, for checking
//! a tracer against the allocator's own bookkeeping.
//!
//! ```text
//! cargo run -p slabscope --example workload
//! ```
//!
//! It prints `ready <pid>` and waits for one line on stdin, so a tracer can
//! attach first. Then it runs a fixed script on three caches — fixed sizes,
//! fixed numbers of allocations, frees, reaps and one destroy — with fault
//! injection making every grow outlast the grow timeout, so every grow
//! deadlocks its cache and hands out emergency objects until the slab lands,
//! and one grow in five fails. Finally it calls `slabscope::stats::publish()`
//! and prints one JSON object:
//!
//! ```text
//! {"final": [CacheStats, ...],          // what publish() fired, live caches
//!  "expected": [{"id", "name", "destroyed", "counters": {...}}, ...]}
//! ```
//!
//! `counters` holds, per cache, the number of hits of each probe and the sums
//! of their released counts, named like the fields of
//! `slabscope_probes::CacheCounters`. How many objects came from emergency
//! allocations, how many grows failed or deadlocked depends on timing; the
//! workload measures each through `Cache::stats()` around every operation
//! (only this thread allocates, so each change is its own), so the counts are
//! exact whatever the timing.

use std::{
    io::BufRead as _,
    ptr::NonNull,
    thread::sleep,
    time::{Duration, Instant},
};

use serde::Serialize;
use slabscope::{
    Cache, CacheBuilder,
    flags::{KM_SLEEP, KMC_GROWING},
    stats::CacheStats,
    tunables::{self, Tunables},
};

/// `slabscope_probes::CacheCounters` without its timestamp.
#[derive(Clone, Copy, Debug, Default, Serialize)]
struct Counters {
    creates: u64,
    destroys: u64,
    grows: u64,
    grows_done: u64,
    grow_failures: u64,
    deadlocks: u64,
    emergency_allocs: u64,
    emergency_frees: u64,
    reaps: u64,
    reap_slabs_released: u64,
    reap_objs_released: u64,
    slab_reclaims: u64,
    slabs_released: u64,
    objs_released: u64,
    stats: u64,
}

#[derive(Serialize)]
struct Expected {
    id: u64,
    name: String,
    destroyed: bool,
    counters: Counters,
}

#[derive(Serialize)]
struct Report {
    #[serde(rename = "final")]
    final_stats: Vec<CacheStats>,
    expected: Vec<Expected>,
}

/// A cache and the hits its operations caused.
struct Traced {
    cache: Cache,
    live: Vec<NonNull<u8>>,
    c: Counters,
    destroyed: bool,
}

impl Traced {
    fn new(name: &str, size: usize) -> Traced {
        let cache = CacheBuilder::new(name, size)
            .build()
            .unwrap_or_else(|e| panic!("creating {name}: {e}"));
        Traced {
            cache,
            live: Vec::new(),
            c: Counters {
                creates: 1,
                ..Counters::default()
            },
            destroyed: false,
        }
    }

    /// Slab reclaim seen between two stats: one `slab_reclaim` hit per
    /// operation that unmapped slabs.
    fn reclaimed(&mut self, before: &CacheStats, after: &CacheStats) -> (u64, u64) {
        let slabs = after.slab_destroy - before.slab_destroy;
        let objs = slabs * after.slab_objs;
        if slabs > 0 {
            self.c.slab_reclaims += 1;
            self.c.slabs_released += slabs;
            self.c.objs_released += objs;
        }
        (slabs, objs)
    }

    fn alloc(&mut self, n: usize) {
        for _ in 0..n {
            let before = self.cache.stats();
            let p = self
                .cache
                .alloc(KM_SLEEP)
                .expect("KM_SLEEP allocations succeed");
            let after = self.cache.stats();
            self.c.emergency_allocs += after.obj_emergency.saturating_sub(before.obj_emergency);
            self.live.push(p);
            // Let grows land between allocations, so some objects come
            // from slabs and some from the emergency path.
            sleep(Duration::from_millis(5));
        }
    }

    fn free(&mut self, keep_every: usize) {
        let mut kept = Vec::new();
        for (i, p) in std::mem::take(&mut self.live).into_iter().enumerate() {
            if keep_every > 0 && i % keep_every == 0 {
                kept.push(p);
                continue;
            }
            let before = self.cache.stats();
            // SAFETY: p came from this cache's alloc and is freed once.
            unsafe { self.cache.free(p) };
            let after = self.cache.stats();
            self.c.emergency_frees += before.obj_emergency.saturating_sub(after.obj_emergency);
            self.reclaimed(&before, &after);
        }
        self.live = kept;
    }

    fn reap(&mut self) {
        let before = self.cache.stats();
        self.cache.reap_now();
        let after = self.cache.stats();
        let (slabs, objs) = self.reclaimed(&before, &after);
        self.c.reaps += 1;
        self.c.reap_slabs_released += slabs;
        self.c.reap_objs_released += objs;
    }

    /// Waits for the dispatched grow, if any, to land.
    fn settle(&self) {
        let start = Instant::now();
        while self.cache.stats().flags & KMC_GROWING != 0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "a grow never finished"
            );
            sleep(Duration::from_millis(5));
        }
    }

    /// Grow and deadlock counts, from the cache's own counters.
    fn count_grows(&mut self) {
        let s = self.cache.stats();
        self.c.grows = s.slab_create + s.slab_fail;
        self.c.grows_done = s.slab_create;
        self.c.grow_failures = s.slab_fail;
        self.c.deadlocks = s.obj_deadlock;
    }

    fn destroy(&mut self) {
        assert!(self.live.is_empty());
        self.settle();
        self.count_grows();
        let before = self.cache.stats();
        self.cache.destroy().expect("destroying an empty cache");
        self.c.destroys += 1;
        if before.slab_total > 0 {
            self.c.slab_reclaims += 1;
            self.c.slabs_released += before.slab_total;
            self.c.objs_released += before.slab_total * before.slab_objs;
        }
        self.destroyed = true;
    }

    fn expected(&self) -> Expected {
        Expected {
            id: self.cache.id(),
            name: self.cache.name().to_owned(),
            destroyed: self.destroyed,
            counters: self.c,
        }
    }
}

fn main() {
    tunables::set(Tunables {
        magazine_size: 4,
        obj_per_slab: 8,
        kmem_threads: 2,
        grow_timeout_ms: 40,
        // Every grow outlasts the timeout: DEADLOCKED, then emergency objects.
        fault_grow_delay_ms: 70,
        fault_slab_fail_permille: 200,
        reap_interval_ms: 0,
        stats_interval_ms: 0,
        ..Tunables::default()
    })
    .expect("setting the workload's tunables");

    println!("ready {}", std::process::id());
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .expect("reading the go line from stdin");

    let mut caches = vec![
        Traced::new("wl_small", 64),
        Traced::new("wl_zio", 1104),
        Traced::new("wl_gone", 256),
    ];
    for t in &mut caches {
        t.alloc(24);
        t.settle();
        t.free(2);
        t.reap();
        t.free(0);
        t.reap();
    }
    let (gone, live) = caches.split_last_mut().expect("three caches");
    gone.destroy();
    for t in live.iter_mut() {
        t.alloc(10);
        t.settle();
        t.count_grows();
    }

    let final_stats = slabscope::stats::publish();
    for t in live.iter_mut() {
        t.c.stats += 1;
    }
    let report = Report {
        final_stats,
        expected: caches.iter().map(Traced::expected).collect(),
    };
    println!(
        "{}",
        serde_json::to_string(&report).expect("serialising the report")
    );
    // The live caches keep their objects until the process exits, as the
    // final statistics say: their handles are leaked on purpose (dropping
    // the last handle of a cache with objects allocated warns).
    std::mem::forget(caches);
}
