//! A deterministic USDT workload for the collector's tests: fires every
//! slabscope probe with snapshots it makes up, and reports what it fired.
//!
//! ```text
//! probe_fixture [script | burst N]
//! ```
//!
//! It prints `ready <pid>` and waits for one line on stdin (so a tracer can
//! attach first), fires, then prints one report block per cache:
//!
//! ```text
//! cache <cache id> snapshot <CacheSnapshot as {:?}>
//! cache <cache id> counters <CacheCounters as {:?}, last_ns 0>
//! cache <cache id> destroyed <bool>
//! fired <number of probe hits>
//! ```
//!
//! The counters are what the eBPF program must count for the hits fired, by
//! the rules of `CacheCounters`' documentation; the snapshot is the one passed
//! to the last probe fired for the cache. `script` (the default) walks three
//! caches through every probe, some from two call sites; `burst N` fires
//! `cache_create` then `cache_stats` N times back to back, to overflow a small
//! ring buffer.
//!
//! Run it under bpftrace to see the probes:
//! `bpftrace -e 'usdt:./target/debug/examples/probe_fixture:slabscope:* { @[probe] = count(); }'`

use std::io::BufRead as _;

use slabscope_probes::{CacheCounters, CacheSnapshot, MAX_CPUS, fire, name_buf};

/// GROWING state bit, as the allocator's flags module defines it.
const KMC_BIT_GROWING: u64 = 1 << 15;

struct Cache {
    snap: CacheSnapshot,
    counters: CacheCounters,
    destroyed: bool,
}

impl Cache {
    fn new(cache_id: u64, name: &str, obj_size: u64, slab_objs: u64) -> Cache {
        let snap = CacheSnapshot {
            cache_id,
            flags: 0x20,
            obj_size,
            obj_align: 8,
            obj_size_full: obj_size + 16,
            slab_size: (obj_size + 16) * slab_objs + 64,
            slab_objs,
            mag_size: 16,
            mag_refill: 8,
            ncpus: 4,
            name: name_buf(name.as_bytes()),
            ..CacheSnapshot::ZERO
        };
        Cache {
            snap,
            counters: CacheCounters::default(),
            destroyed: false,
        }
    }

    fn create(&mut self) {
        fire::cache_create(&self.snap);
        self.counters.creates += 1;
    }

    fn grow(&mut self, ok: bool) {
        self.snap.flags |= KMC_BIT_GROWING;
        fire::grow_start(&self.snap);
        self.counters.grows += 1;
        self.snap.flags &= !KMC_BIT_GROWING;
        if ok {
            self.snap.slab_create += 1;
            self.snap.slab_total += 1;
            self.snap.slab_max = self.snap.slab_max.max(self.snap.slab_total);
            self.snap.obj_total += self.snap.slab_objs;
            fire::grow_done(&self.snap, 0);
            self.counters.grows_done += 1;
        } else {
            self.snap.slab_fail += 1;
            fire::grow_done(&self.snap, -12);
            self.counters.grow_failures += 1;
        }
    }

    /// A second `grow_start` call site, so one probe has several sites.
    #[inline(never)]
    fn grow_start_elsewhere(&mut self) {
        fire::grow_start(&self.snap);
        self.counters.grows += 1;
    }

    fn alloc(&mut self, n: u64, round: u64) {
        self.snap.obj_alloc += n;
        self.snap.obj_max = self.snap.obj_max.max(self.snap.obj_alloc);
        self.snap.slab_alloc = self.snap.slab_total.min(self.snap.slab_alloc + 1);
        self.snap.mag_objs = 3 * round + 1;
        for (cpu, fill) in self.snap.mag_fill.iter_mut().enumerate().take(4) {
            *fill = (cpu as u32 + 1) * (round as u32 + 2);
        }
        self.snap.mag_fill[MAX_CPUS - 1] = round as u32;
    }

    fn deadlock(&mut self) {
        self.snap.obj_deadlock += 1;
        fire::deadlock(&self.snap);
        self.counters.deadlocks += 1;
    }

    fn emergency(&mut self, allocs: u64, frees: u64) {
        for i in 0..allocs {
            self.snap.obj_emergency += 1;
            self.snap.obj_total += 1;
            self.snap.obj_emergency_max = self.snap.obj_emergency_max.max(self.snap.obj_emergency);
            fire::emergency_alloc(&self.snap, (0x7000_0000 + i * 64) as *const u8);
            self.counters.emergency_allocs += 1;
        }
        for i in 0..frees {
            self.snap.obj_emergency -= 1;
            self.snap.obj_total -= 1;
            fire::emergency_free(&self.snap, (0x7000_0000 + i * 64) as *const u8);
            self.counters.emergency_frees += 1;
        }
    }

    fn reap(&mut self, slabs: u64) {
        let slabs = slabs.min(self.snap.slab_total);
        let objs = slabs * self.snap.slab_objs;
        self.snap.slab_total -= slabs;
        self.snap.slab_destroy += slabs;
        self.snap.obj_total -= objs;
        if slabs > 0 {
            fire::slab_reclaim(&self.snap, slabs, objs);
            self.counters.slab_reclaims += 1;
            self.counters.slabs_released += slabs;
            self.counters.objs_released += objs;
        }
        fire::reap(&self.snap, slabs, objs);
        self.counters.reaps += 1;
        self.counters.reap_slabs_released += slabs;
        self.counters.reap_objs_released += objs;
    }

    fn stats(&mut self) {
        fire::cache_stats(&self.snap);
        self.counters.stats += 1;
    }

    fn destroy(&mut self) {
        fire::cache_destroy(&self.snap);
        self.counters.destroys += 1;
        self.destroyed = true;
    }

    fn hits(&self) -> u64 {
        let c = &self.counters;
        c.creates
            + c.destroys
            + c.grows
            + c.grows_done
            + c.grow_failures
            + c.deadlocks
            + c.emergency_allocs
            + c.emergency_frees
            + c.reaps
            + c.slab_reclaims
            + c.stats
    }
}

fn script() -> Vec<Cache> {
    let long_name = "fixture_cache_with_a_name_longer_than_the_sixty_three_bytes_a_snapshot_holds";
    let mut caches = vec![
        Cache::new(0x5555_0000_1000, "fixture_a", 1104, 7),
        Cache::new(0x5555_0000_2000, "fixture_b", 64, 60),
        Cache::new(0x5555_0000_3000, long_name, 512, 15),
    ];
    for c in &mut caches {
        c.create();
    }
    for round in 0..3u64 {
        for (i, c) in caches.iter_mut().enumerate() {
            c.grow(true);
            if i == 0 {
                c.grow(false);
            }
            c.alloc(5 + i as u64, round);
            if i == 0 && round == 1 {
                c.deadlock();
                c.emergency(3, 1);
            }
            if i == 2 {
                c.grow_start_elsewhere();
            }
            c.reap(round);
            c.stats();
        }
    }
    caches[0].emergency(0, 2);
    caches[1].destroy();
    caches
}

fn burst(n: u64) -> Vec<Cache> {
    let mut c = Cache::new(0x5555_0000_4000, "fixture_burst", 256, 30);
    c.create();
    for i in 0..n {
        c.snap.obj_alloc = i;
        c.stats();
    }
    vec![c]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run: Box<dyn FnOnce() -> Vec<Cache>> = match args.first().map(String::as_str) {
        None | Some("script") => Box::new(script),
        Some("burst") => {
            let n = args
                .get(1)
                .and_then(|n| n.parse().ok())
                .expect("usage: probe_fixture burst N");
            Box::new(move || burst(n))
        }
        Some(other) => panic!("unknown mode {other:?}: use `script` or `burst N`"),
    };
    println!("ready {}", std::process::id());
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .expect("reading the go line from stdin");

    let caches = run();
    let mut fired = 0;
    for c in &caches {
        let id = c.snap.cache_id;
        println!("cache {id:#x} snapshot {:?}", c.snap);
        println!("cache {id:#x} counters {:?}", c.counters);
        println!("cache {id:#x} destroyed {}", c.destroyed);
        fired += c.hits();
    }
    println!("fired {fired}");
}
