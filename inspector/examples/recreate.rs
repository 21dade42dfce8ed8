//! Destroys and recreates a cache until the allocator hands the new cache the
//! address (the cache id the probes carry) of a destroyed one, for the
//! collector's test that a reused id starts from zero.
//!
//! ```text
//! recreate
//! ```
//!
//! It prints `ready <pid>` and waits for one line on stdin (so a tracer can
//! attach first). Then it creates cache `reused`, allocates and frees a few
//! objects, destroys it, and creates it again, until a new cache's id equals
//! the id of one destroyed before (at most 1000 rounds). That last cache is
//! kept: it allocates 20 objects (several grows), waits for its grows to
//! land, then `slabscope::stats::publish()` fires `cache_stats` once for it.
//! Finally it prints one JSON object:
//!
//! ```text
//! {"id": <reused id>, "rounds": <caches destroyed before>, "final": CacheStats}
//! ```
//!
//! The counters a tracer keeps for that id must be the last cache's alone:
//! one create, no destroy, its own grows, one `cache_stats`.

use std::{
    collections::BTreeSet,
    io::BufRead as _,
    thread::sleep,
    time::{Duration, Instant},
};

use slabscope::{
    CacheBuilder,
    flags::{KM_SLEEP, KMC_GROWING},
    tunables::{self, Tunables},
};

fn main() {
    tunables::set(Tunables {
        obj_per_slab: 8,
        reap_interval_ms: 0,
        stats_interval_ms: 0,
        ..Tunables::default()
    })
    .expect("setting the tunables");
    println!("ready {}", std::process::id());
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .expect("reading the go line from stdin");

    let mut destroyed = BTreeSet::new();
    let cache = loop {
        let cache = CacheBuilder::new("reused", 200)
            .build()
            .expect("creating the cache");
        if destroyed.contains(&cache.id()) {
            break cache;
        }
        assert!(
            destroyed.len() < 1000,
            "the allocator never reused a destroyed cache's address"
        );
        let objs: Vec<_> = (0..3)
            .map(|_| cache.alloc(KM_SLEEP).expect("KM_SLEEP allocations succeed"))
            .collect();
        for p in objs {
            // SAFETY: p came from this cache's alloc and is freed once.
            unsafe { cache.free(p) };
        }
        destroyed.insert(cache.id());
        cache.destroy().expect("destroying an empty cache");
    };

    let live: Vec<_> = (0..20)
        .map(|_| cache.alloc(KM_SLEEP).expect("KM_SLEEP allocations succeed"))
        .collect();
    let start = Instant::now();
    while cache.stats().flags & KMC_GROWING != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a grow never finished"
        );
        sleep(Duration::from_millis(5));
    }
    let published = slabscope::stats::publish();
    let stats = published
        .into_iter()
        .find(|s| s.id == cache.id())
        .expect("publish() reported the live cache");
    println!(
        "{}",
        serde_json::json!({"id": cache.id(), "rounds": destroyed.len(), "final": stats})
    );
    // Freeing or destroying now would fire more probes after the report:
    // the process exits with the cache as reported.
    std::mem::forget(live);
    std::mem::forget(cache);
}
