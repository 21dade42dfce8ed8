//! A target for `slabscope serve`'s tests: a few caches with counts it
//! reports itself, a hostile cache name, and a short-lived mode.
//!
//! ```text
//! serve_target            prints `ready <pid>`, waits for a line on stdin,
//!                         works, prints its caches' statistics as one JSON
//!                         array, then lives until stdin closes
//! serve_target --faults   the same, with every grow slowed past the grow
//!                         timeout (DEADLOCKED, then emergency objects), all
//!                         objects freed before the statistics, and one more
//!                         JSON line: `{"emergency_allocs": N}`
//! serve_target --short MS creates a cache, allocates, lives MS milliseconds
//!                         and exits (no stdin)
//! serve_target --churn N [--reap]
//!                         prints `ready <pid>`, waits for a line, then N
//!                         rounds of 1000 allocations and 1000 frees (with
//!                         --reap, and a reap, so every round grows and
//!                         returns slabs and probes fire); prints the
//!                         nanoseconds it took and exits (`cargo xtask
//!                         bench`: the exporter's cost)
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

use slabscope::flags::{KM_SLEEP, KMC_GROWING};
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

/// Grow timeout with `--faults`, and the injected grow delay beyond it.
const FAULT_TIMEOUT_MS: u64 = 20;
const FAULT_DELAY_MS: u64 = 60;

/// `--churn`: a fixed amount of work, timed; with `reap`, one that makes
/// the probes fire every round.
fn churn(rounds: u64, reap: bool) {
    let cache = CacheBuilder::new("st_churn", 64)
        .build()
        .expect("creating st_churn");
    println!("ready {}", std::process::id());
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .expect("reading the go line");
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        let objs = fill(&cache, 1000);
        for p in objs {
            // SAFETY: p came from this cache's alloc and is freed once.
            unsafe { cache.free(p) };
        }
        if reap {
            cache.reap_now();
        }
    }
    println!("{}", start.elapsed().as_nanos());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let faults = args == ["--faults"];
    tunables::set(Tunables {
        reap_interval_ms: 0,
        stats_interval_ms: 100,
        grow_timeout_ms: if faults { FAULT_TIMEOUT_MS } else { 100 },
        fault_grow_delay_ms: if faults { FAULT_DELAY_MS } else { 0 },
        ..Tunables::default()
    })
    .expect("setting the tunables");

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
    if let [flag, n, rest @ ..] = args.as_slice()
        && flag == "--churn"
    {
        let rounds: u64 = n.parse().expect("--churn takes a number of rounds");
        churn(rounds, rest == ["--reap"]);
        return;
    }
    assert!(
        args.is_empty() || faults,
        "usage: serve_target [--faults | --short MS]"
    );

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
    let mut emergency_allocs = 0;
    let mut kept: Vec<Vec<NonNull<u8>>> = Vec::new();
    for c in &caches {
        let mut objs = Vec::new();
        for _ in 0..OBJECTS {
            let before = c.stats().obj_emergency;
            objs.push(c.alloc(KM_SLEEP).expect("KM_SLEEP allocations succeed"));
            emergency_allocs += c.stats().obj_emergency.saturating_sub(before);
        }
        kept.push(objs);
    }
    if faults {
        // Every grow lands, then every object goes back, emergency
        // objects included, so each timing has its end.
        for c in &caches {
            while c.stats().flags & KMC_GROWING != 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        for (c, objs) in caches.iter().zip(&mut kept) {
            for p in objs.drain(..) {
                // SAFETY: p came from this cache's alloc and is freed once.
                unsafe { c.free(p) };
            }
        }
    }
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
    if faults {
        println!("{{\"emergency_allocs\": {emergency_allocs}}}");
    }

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
