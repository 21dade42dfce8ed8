//! A deterministic workload with known counts, for the tests that trace
//! slabscope from outside (the eBPF collector, the README's bpftrace
//! one-liners).
//!
//! It creates four caches, churns three of them through grows, magazine
//! flushes, slab reclaims and reaps, then injects a slow grow into the fourth
//! so that it deadlocks and hands out emergency objects. At the end it fires
//! `cache_stats` for every cache (`slabscope::stats::publish()`), prints what
//! it fired as JSON on stdout, and exits without freeing the objects it still
//! holds, so nothing fires after the published state.
//!
//! ```text
//! workload [--wait]      # --wait: print "ready <pid>" and wait for a line on stdin
//! ```
//!
//! The background reaper and the periodic `cache_stats` thread are off, so
//! every probe that fires is caused by a step below.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use serde::Serialize;
use slabscope::flags::{KM_SLEEP, KMC_DEADLOCKED, KMC_GROWING};
use slabscope::stats::CacheStats;
use slabscope::tunables::{self, Tunables};
use slabscope::{Cache, CacheBuilder};

/// Grow wait before DEADLOCKED.
const GROW_TIMEOUT_MS: u64 = 20;
/// Injected delay of the deadlock phase's grow: well past the timeout.
const SLOW_GROW_MS: u64 = 250;
/// Emergency objects taken while the slow grow runs.
const EMERGENCY_OBJS: usize = 40;
/// Emergency objects still held when the state is published.
const EMERGENCY_KEPT: usize = 15;

/// What the workload did that its statistics do not say.
#[derive(Debug, Default, Serialize)]
struct Report {
    /// Final statistics of every cache, exactly as `cache_stats` fired them.
    caches: Vec<CacheStats>,
    /// `reap_now` calls per cache.
    reaps: BTreeMap<String, u64>,
    /// Slabs the reaps released, per cache (slab_total before - after).
    reap_slabs_released: BTreeMap<String, u64>,
}

fn cache(name: &str, size: usize) -> Cache {
    CacheBuilder::new(name, size)
        .ctor(move |obj: NonNull<u8>, _| {
            // SAFETY: the object is `size` writable bytes; write its first.
            unsafe { obj.as_ptr().write(0xa5) };
            true
        })
        .build()
        .unwrap_or_else(|e| panic!("creating {name}: {e}"))
}

fn reap(report: &mut Report, c: &Cache) {
    let before = c.stats().slab_total;
    c.reap_now();
    let after = c.stats().slab_total;
    *report.reaps.entry(c.name().to_string()).or_default() += 1;
    *report
        .reap_slabs_released
        .entry(c.name().to_string())
        .or_default() += before - after;
}

/// Allocates `n` objects, frees them in reverse, `rounds` times, reaping after
/// each round.
fn churn(report: &mut Report, c: &Cache, n: usize, rounds: usize) {
    for _ in 0..rounds {
        let objs: Vec<NonNull<u8>> = (0..n)
            .map(|_| c.alloc(KM_SLEEP).expect("KM_SLEEP allocations succeed"))
            .collect();
        for p in objs.into_iter().rev() {
            // SAFETY: allocated above from this cache, freed once.
            unsafe { c.free(p) };
        }
        reap(report, c);
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(30), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Deadlocks `c`: its next grow sleeps [`SLOW_GROW_MS`], the allocation waits
/// [`GROW_TIMEOUT_MS`], sets DEADLOCKED, and the allocations that follow are
/// emergency objects until the grow lands. Returns the objects to keep.
fn deadlock(report: &mut Report, c: &Cache) -> Vec<NonNull<u8>> {
    tunables::fault::set_grow_delay_ms(SLOW_GROW_MS);
    let mut objs = Vec::new();
    // The cache is empty: the first allocation dispatches the slow grow,
    // waits, deadlocks; every allocation until the grow lands is an
    // emergency object.
    while c.stats().obj_emergency < EMERGENCY_OBJS as u64 {
        assert!(
            objs.len() < 10_000,
            "{} never handed out {EMERGENCY_OBJS} emergency objects",
            c.name()
        );
        objs.push(c.alloc(KM_SLEEP).expect("KM_SLEEP allocations succeed"));
    }
    assert_eq!(objs.len(), EMERGENCY_OBJS, "the slow grow landed too early");
    tunables::fault::set_grow_delay_ms(0);
    wait_for("the slow grow", || {
        c.flags() & (KMC_GROWING | KMC_DEADLOCKED) == 0
    });
    // Free all but EMERGENCY_KEPT of the objects, emergency ones included.
    let keep = objs.split_off(objs.len() - EMERGENCY_KEPT);
    for p in objs {
        // SAFETY: allocated above from this cache, freed once.
        unsafe { c.free(p) };
    }
    reap(report, c);
    keep
}

fn main() {
    let wait = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--wait") => true,
        Some(other) => {
            eprintln!("workload: unknown argument {other:?}; usage: workload [--wait]");
            std::process::exit(2);
        }
    };
    tunables::set(Tunables {
        grow_timeout_ms: GROW_TIMEOUT_MS,
        kmem_threads: 2,
        reap_interval_ms: 0,
        stats_interval_ms: 0,
        ..Tunables::default()
    })
    .expect("tunables are valid and set first");

    let small = cache("wl_small_64", 64);
    let page = cache("wl_page_4096", 4096);
    let big = cache("wl_big_131072", 131072);
    let stuck = cache("wl_deadlock_512", 512);

    if wait {
        eprintln!("ready {}", std::process::id());
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .expect("reading the go line from stdin");
    }

    let mut report = Report::default();
    churn(&mut report, &small, 5000, 3);
    churn(&mut report, &page, 300, 3);
    churn(&mut report, &big, 12, 2);
    let kept = deadlock(&mut report, &stuck);
    // Leave some objects live in the small cache too.
    let live: Vec<NonNull<u8>> = (0..100)
        .map(|_| small.alloc(KM_SLEEP).expect("KM_SLEEP allocations succeed"))
        .collect();

    for c in [&small, &page, &big, &stuck] {
        c.validate()
            .unwrap_or_else(|e| panic!("{} is inconsistent: {e}", c.name()));
    }
    report.caches = slabscope::stats::publish();
    println!(
        "{}",
        serde_json::to_string(&report).expect("the report serializes")
    );
    // Exit holding `kept` and `live`: nothing fires after the published state.
    std::mem::forget((kept, live));
}
