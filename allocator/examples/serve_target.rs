//! A target for `slabscope serve`'s tests: a few caches with counts it
//! reports itself, a hostile cache name, and a short-lived mode.
//!
//! ```text
//! serve_target            prints `ready <pid>`, waits for a line on stdin,
//!                         works, prints its caches' statistics as one JSON
//!                         array, then lives until stdin closes
//! serve_target --short MS creates a cache, allocates, lives MS milliseconds
//!                         and exits (no stdin)
//! ```
//!
//! The work is fixed: cache `st_small` (64 B) and cache `st_<ESC>[31m"red\`
//! (a name with a control character, a quote and a backslash, as a hostile
//! program could choose; 200 B) each get [`OBJECTS`] objects allocated and
//! kept, and [`REAPS`] reaps. The JSON is `slabscope::stats::publish()`'s,
//! taken after the work, so it is what the `cache_stats` probes carry.
//! Tunables are fixed here (no background reaper, `cache_stats` every
//! 100 ms) so the exporter sees only this work.

use std::io::BufRead as _;
use std::ptr::NonNull;
use std::time::Duration;

use slabscope::flags::KM_SLEEP;
use slabscope::tunables::{self, Tunables};
use slabscope::{Cache, CacheBuilder};

/// Objects allocated and kept in each cache.
const OBJECTS: usize = 100;
/// `reap_now()` calls on each cache.
const REAPS: usize = 2;

fn fill(cache: &Cache, n: usize) -> Vec<NonNull<u8>> {
    (0..n)
        .map(|_| cache.alloc(KM_SLEEP).expect("KM_SLEEP allocations succeed"))
        .collect()
}

fn main() {
    tunables::set(Tunables {
        reap_interval_ms: 0,
        stats_interval_ms: 100,
        ..Tunables::default()
    })
    .expect("setting the tunables");

    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, ms] = args.as_slice()
        && flag == "--short"
    {
        let ms: u64 = ms.parse().expect("--short takes milliseconds");
        let cache = CacheBuilder::new("st_short", 128)
            .build()
            .expect("creating st_short");
        let objs = fill(&cache, 16);
        std::thread::sleep(Duration::from_millis(ms));
        for p in objs {
            // SAFETY: p came from this cache's alloc and is freed once.
            unsafe { cache.free(p) };
        }
        return;
    }
    assert!(args.is_empty(), "usage: serve_target [--short MS]");

    println!("ready {}", std::process::id());
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .expect("reading the go line");

    let caches = [
        CacheBuilder::new("st_small", 64)
            .build()
            .expect("creating st_small"),
        CacheBuilder::new("st_\u{1b}[31m\"red\\", 200)
            .build()
            .expect("creating the hostile cache"),
    ];
    let kept: Vec<Vec<NonNull<u8>>> = caches.iter().map(|c| fill(c, OBJECTS)).collect();
    for c in &caches {
        for _ in 0..REAPS {
            c.reap_now();
        }
    }
    let stats = slabscope::stats::publish();
    println!(
        "{}",
        serde_json::to_string(&stats).expect("serialising the statistics")
    );

    // Live until told to go, so a scraper sees these caches as they are.
    let mut rest = String::new();
    while std::io::stdin()
        .lock()
        .read_line(&mut rest)
        .is_ok_and(|n| n > 0)
    {}
    for (c, objs) in caches.iter().zip(kept) {
        for p in objs {
            // SAFETY: p came from this cache's alloc and is freed once.
            unsafe { c.free(p) };
        }
    }
}
