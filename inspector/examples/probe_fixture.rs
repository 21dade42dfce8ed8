//! A deterministic USDT workload for the collector's tests: fires every
//! slabscope probe with snapshots it makes up, and reports what it fired.
//!
//! ```text
//! probe_fixture [script | burst N | hostile | bad_snapshot | exec PROGRAM [ARGS]]
//! ```
//!
//! It prints `ready <pid>` and waits for one line on stdin (so a tracer can
//! attach first), fires, then prints one report block per cache:
//!
//! ```text
//! cache <cache id> snapshot <CacheSnapshot as {:?}>
//! cache <cache id> counters <CacheCounters as {:?}, last_ns 0>
//! cache <cache id> destroyed <bool>
//! cache <cache id> hit <kind> <values as {:?}>    (one per hit, in order; not in burst mode)
//! unreadable <hits with an unreadable snapshot>   (bad_snapshot mode only)
//! fired <number of probe hits>
//! ```
//!
//! The counters are what the eBPF program must count for the hits fired, by
//! the rules of `CacheCounters`' documentation; the snapshot is the one passed
//! to the last probe fired for the cache. `script` (the default) walks three
//! caches through every probe, some from two call sites, and a fourth through
//! hand-written sites whose argument specs use every location form and size
//! the collector decodes, and a fifth from a second thread; `burst N` fires
//! `cache_create` then `cache_stats` N times back to back, to overflow a small
//! ring buffer; `hostile` creates caches whose names are terminal escape
//! sequences, controls and bidi overrides (`fixture_data/hostile_names.rs`), as a hostile
//! target would, and fires `cache_stats` for each; `bad_snapshot` fires
//! `cache_stats` for one cache, then three times with a snapshot pointer into
//! the unmapped first page; `exec PROGRAM [ARGS]` runs the script, reports,
//! then replaces itself with PROGRAM.
//!
//! Run it under bpftrace to see the probes:
//! `bpftrace -e 'usdt:./target/debug/examples/probe_fixture:slabscope:* { @[probe] = count(); }'`

use std::io::BufRead as _;

// Shared with the tests, which check what the inspector makes of them.
#[path = "fixture_data/hostile_names.rs"]
mod hostile_names;
use hostile_names::HOSTILE_NAMES;

use slabscope_probes::flags::KMC_GROWING;
use slabscope_probes::{
    CacheCounters, CacheSnapshot, EVENT_VALUES, MAX_CPUS, ProbeKind, fire, name_buf,
};

struct Cache {
    snap: CacheSnapshot,
    counters: CacheCounters,
    destroyed: bool,
    /// Every hit in firing order: kind and the probe's own scalars.
    hits: Vec<(ProbeKind, [u64; EVENT_VALUES])>,
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
            hits: Vec::new(),
        }
    }

    fn hit(&mut self, kind: ProbeKind, values: &[u64]) {
        let mut v = [0; EVENT_VALUES];
        v[..values.len()].copy_from_slice(values);
        self.hits.push((kind, v));
    }

    fn create(&mut self) {
        fire::cache_create(&self.snap);
        self.counters.creates += 1;
        let s = self.snap;
        self.hit(ProbeKind::CacheCreate, &[s.obj_size, s.obj_align, s.flags]);
    }

    fn grow(&mut self, ok: bool) {
        self.snap.flags |= KMC_GROWING;
        fire::grow_start(&self.snap);
        self.counters.grows += 1;
        self.hit(
            ProbeKind::GrowStart,
            &[self.snap.slab_total, self.snap.obj_total],
        );
        self.snap.flags &= !KMC_GROWING;
        if ok {
            self.snap.slab_create += 1;
            self.snap.slab_total += 1;
            self.snap.slab_max = self.snap.slab_max.max(self.snap.slab_total);
            self.snap.obj_total += self.snap.slab_objs;
            fire::grow_done(&self.snap, 0);
            self.counters.grows_done += 1;
            self.hit(
                ProbeKind::GrowDone,
                &[0, self.snap.slab_total, self.snap.obj_total],
            );
        } else {
            self.snap.slab_fail += 1;
            fire::grow_done(&self.snap, -12);
            self.counters.grow_failures += 1;
            let v = [(-12i64) as u64, self.snap.slab_total, self.snap.obj_total];
            self.hit(ProbeKind::GrowDone, &v);
        }
    }

    /// A second `grow_start` call site, so one probe has several sites.
    #[inline(never)]
    fn grow_start_elsewhere(&mut self) {
        fire::grow_start(&self.snap);
        self.counters.grows += 1;
        self.hit(
            ProbeKind::GrowStart,
            &[self.snap.slab_total, self.snap.obj_total],
        );
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
        self.hit(ProbeKind::Deadlock, &[self.snap.obj_deadlock]);
    }

    fn emergency(&mut self, allocs: u64, frees: u64) {
        for i in 0..allocs {
            self.snap.obj_emergency += 1;
            self.snap.obj_total += 1;
            self.snap.obj_emergency_max = self.snap.obj_emergency_max.max(self.snap.obj_emergency);
            let obj = 0x7000_0000 + i * 64;
            fire::emergency_alloc(&self.snap, obj as *const u8);
            self.counters.emergency_allocs += 1;
            self.hit(ProbeKind::EmergencyAlloc, &[obj, self.snap.obj_emergency]);
        }
        for i in 0..frees {
            self.snap.obj_emergency -= 1;
            self.snap.obj_total -= 1;
            let obj = 0x7000_0000 + i * 64;
            fire::emergency_free(&self.snap, obj as *const u8);
            self.counters.emergency_frees += 1;
            self.hit(ProbeKind::EmergencyFree, &[obj, self.snap.obj_emergency]);
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
            self.hit(ProbeKind::SlabReclaim, &[slabs, objs]);
        }
        fire::reap(&self.snap, slabs, objs);
        self.counters.reaps += 1;
        self.counters.reap_slabs_released += slabs;
        self.counters.reap_objs_released += objs;
        self.hit(ProbeKind::Reap, &[slabs, objs]);
    }

    fn stats(&mut self) {
        fire::cache_stats(&self.snap);
        self.counters.stats += 1;
        let s = self.snap;
        let v = [s.slab_total, s.obj_total, s.obj_alloc];
        self.hit(ProbeKind::CacheStats, &v);
    }

    fn destroy(&mut self) {
        fire::cache_destroy(&self.snap);
        self.counters.destroys += 1;
        self.hit(
            ProbeKind::CacheDestroy,
            &[self.snap.slab_total, self.snap.obj_total],
        );
        self.destroyed = true;
    }

    fn hits(&self) -> u64 {
        self.hits.len() as u64
    }
}

/// Hand-written stapsdt sites whose argument specs use the forms the `probe`
/// crate never emits (it always writes `-8@%reg`): immediates, memory
/// operands, base-index-scale, sub-registers, 1/2/4-byte and unsigned sizes.
/// The note layout is the one of `sys/sdt.h` and the `probe` crate.
#[cfg(target_arch = "x86_64")]
mod asm_sites {
    use core::arch::asm;

    use slabscope_probes::CacheSnapshot;

    macro_rules! stapsdt {
        ($probe:literal, $args:literal, $($operands:tt)*) => {
            // SAFETY: the asm is a single `nop` plus a note in a non-loaded
            // section; it touches no register, memory or flag.
            unsafe {
                asm!(
                    "990: nop",
                    ".pushsection .note.stapsdt,\"?\",\"note\"",
                    ".balign 4",
                    ".4byte 992f-991f, 994f-993f, 3",
                    "991: .asciz \"stapsdt\"",
                    "992: .balign 4",
                    "993: .8byte 990b",
                    ".8byte _.stapsdt.base",
                    ".8byte 0",
                    ".asciz \"slabscope\"",
                    concat!(".asciz \"", $probe, "\""),
                    concat!(".asciz \"", $args, "\""),
                    "994: .balign 4",
                    ".popsection",
                    ".ifndef _.stapsdt.base",
                    ".pushsection .stapsdt.base,\"aGR\",\"progbits\",.stapsdt.base,comdat",
                    ".weak _.stapsdt.base",
                    ".hidden _.stapsdt.base",
                    "_.stapsdt.base: .space 1",
                    ".size _.stapsdt.base, 1",
                    ".popsection",
                    ".endif",
                    $($operands)*
                    options(att_syntax, readonly, nostack, preserves_flags),
                )
            }
        };
    }

    /// `reap` with: cache id at `8(%base,%index,4)` of `words` (index 2, so
    /// `words[2]`), the name in a register, slabs_released as a signed 2-byte
    /// load at `6(%reg)` of `halves` (`halves[3]`), objs_released as the
    /// unsigned low byte of a register.
    #[inline(never)]
    pub fn reap(words: &[u64; 4], halves: &[u16; 8], big: u64, s: &CacheSnapshot) {
        stapsdt!(
            "reap",
            "-8@8({words},{idx},4) 8@{name} -2@6({halves}) 1@{big:l} 8@{snap}",
            words = in(reg) words.as_ptr(),
            idx = in(reg) 2u64,
            name = in(reg) s.name.as_ptr(),
            halves = in(reg) halves.as_ptr(),
            big = in(reg_abcd) big,
            snap = in(reg) s as *const CacheSnapshot,
        );
    }

    /// `cache_stats` with constant scalars: unsigned 8 bytes, signed 4
    /// bytes, and an unsigned 2-byte constant too large for its size.
    #[inline(never)]
    pub fn cache_stats(s: &CacheSnapshot) {
        stapsdt!(
            "cache_stats",
            "-8@{cid} 8@{name} 8@$7 -4@$-1 2@$65537 8@{snap}",
            cid = in(reg) s.cache_id,
            name = in(reg) s.name.as_ptr(),
            snap = in(reg) s as *const CacheSnapshot,
        );
    }

    /// `cache_stats` of cache `cache_id` whose snapshot pointer is `snap`,
    /// which need not point to anything: what a hostile or broken target can
    /// fire.
    #[inline(never)]
    pub fn cache_stats_at(cache_id: u64, snap: usize) {
        stapsdt!(
            "cache_stats",
            "-8@{cid} 8@{snap} 8@$1 8@$2 8@$3 8@{snap}",
            cid = in(reg) cache_id,
            snap = in(reg) snap,
        );
    }

    /// `grow_done` with a signed 1-byte constant, an unsigned 4-byte load
    /// through `(%reg)` and a negative 8-byte constant.
    #[inline(never)]
    pub fn grow_done(word: &u64, s: &CacheSnapshot) {
        stapsdt!(
            "grow_done",
            "-8@{cid} 8@{name} -1@$200 4@({word}) -8@$-3 8@{snap}",
            cid = in(reg) s.cache_id,
            name = in(reg) s.name.as_ptr(),
            word = in(reg) word as *const u64,
            snap = in(reg) s as *const CacheSnapshot,
        );
    }
}

/// Code whose bytes hold `0x90` inside instructions, for the tests that point
/// crafted notes at them: `movabs $0x9090909090909090,%rax` (10 bytes), then
/// `nopl 0x90909090(%rax)` (7 bytes), then a one-byte `nop`. The symbol is
/// exported so the tests can find it.
#[cfg(target_arch = "x86_64")]
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn slabscope_fixture_decoy() -> u64 {
    let x: u64;
    // SAFETY: the asm writes only %rax (declared as an output) and touches no
    // memory, stack or flags.
    unsafe {
        core::arch::asm!(
            "movabs $0x9090909090909090, %rax",
            // Displacement 0x90909090, as a signed 32-bit value.
            "nopl -0x6f6f6f70(%rax)",
            "nop",
            out("rax") x,
            options(att_syntax, nomem, nostack, preserves_flags),
        )
    };
    x
}

/// A cache traced only through [`asm_sites`] after its creation.
#[cfg(target_arch = "x86_64")]
fn asm_cache() -> Cache {
    let mut c = Cache::new(0x5555_0000_5000, "fixture_asm", 96, 40);
    c.create();
    let words = [0, 0, c.snap.cache_id, 0];
    let halves = [0, 0, 0, 0xfffe, 0, 0, 0, 0];
    let big = 0x1234_5678_9abc_def0;
    c.snap.slab_total = 3;
    asm_sites::reap(&words, &halves, big, &c.snap);
    // -2 sign-extended, and the low byte 0xf0 zero-extended.
    let (slabs, objs) = ((-2i64) as u64, 0xf0);
    c.counters.reaps += 1;
    c.counters.reap_slabs_released = c.counters.reap_slabs_released.wrapping_add(slabs);
    c.counters.reap_objs_released += objs;
    c.hit(ProbeKind::Reap, &[slabs, objs]);

    c.snap.obj_alloc = 11;
    asm_sites::cache_stats(&c.snap);
    c.counters.stats += 1;
    // $7; $-1 as signed 4 bytes; 65537 cut to 2 bytes.
    c.hit(ProbeKind::CacheStats, &[7, u64::MAX, 1]);

    let word = 0xffff_ffff_0000_0005u64;
    asm_sites::grow_done(&word, &c.snap);
    // 200 as a signed byte is -56: a failed grow. Then the low 4 bytes of
    // `word`, and $-3.
    c.counters.grow_failures += 1;
    c.hit(ProbeKind::GrowDone, &[(-56i64) as u64, 5, (-3i64) as u64]);
    c
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
    #[cfg(target_arch = "x86_64")]
    caches.push(asm_cache());
    // Another thread's hits belong to the same process (the allocator's grow
    // workers fire from their own threads).
    let worker = std::thread::spawn(|| {
        let mut c = Cache::new(0x5555_0000_6000, "fixture_thread", 40, 100);
        c.create();
        c.grow(true);
        c.stats();
        c
    });
    caches.push(worker.join().expect("fixture worker thread"));
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

fn hostile() -> Vec<Cache> {
    let mut caches = Vec::new();
    for (i, name) in HOSTILE_NAMES.iter().enumerate() {
        let mut c = Cache::new(0x5555_0000_7000 + 0x100 * i as u64, name, 64, 60);
        c.create();
        c.grow(true);
        c.alloc(3, 0);
        c.stats();
        caches.push(c);
    }
    caches
}

/// Hits fired with a snapshot pointer that cannot be read, in `bad_snapshot`
/// mode.
const BAD_SNAPSHOT_HITS: u64 = 3;

/// One ordinary cache, then [`BAD_SNAPSHOT_HITS`] `cache_stats` hits of
/// another cache id whose snapshot pointer points into the unmapped first
/// page.
#[cfg(target_arch = "x86_64")]
fn bad_snapshot() -> Vec<Cache> {
    let mut c = Cache::new(0x5555_0000_9000, "fixture_good", 64, 60);
    c.create();
    c.stats();
    for _ in 0..BAD_SNAPSHOT_HITS {
        asm_sites::cache_stats_at(0x5555_0000_a000, 0x10);
    }
    vec![c]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut print_hits = true;
    let run: Box<dyn FnOnce() -> Vec<Cache>> = match args.first().map(String::as_str) {
        None | Some("script") => Box::new(script),
        Some("burst") => {
            print_hits = false;
            let n = args
                .get(1)
                .and_then(|n| n.parse().ok())
                .expect("usage: probe_fixture burst N");
            Box::new(move || burst(n))
        }
        Some("hostile") => Box::new(hostile),
        // The script, then the rest of the arguments as a program to exec.
        Some("exec") if args.len() > 1 => Box::new(script),
        #[cfg(target_arch = "x86_64")]
        Some("bad_snapshot") => Box::new(bad_snapshot),
        Some(other) => {
            panic!(
                "unknown mode {other:?}: use `script`, `burst N`, `hostile`, `bad_snapshot` \
                 or `exec PROGRAM [ARGS]`"
            )
        }
    };
    // Keeps the decoy linked in: the notes tests look for its bytes.
    #[cfg(target_arch = "x86_64")]
    std::hint::black_box(slabscope_fixture_decoy as extern "C" fn() -> u64);
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
        if print_hits {
            for (kind, values) in &c.hits {
                println!("cache {id:#x} hit {} {values:?}", *kind as u32);
            }
        }
        fired += c.hits();
    }
    if args.first().map(String::as_str) == Some("bad_snapshot") {
        println!("unreadable {BAD_SNAPSHOT_HITS}");
        fired += BAD_SNAPSHOT_HITS;
    }
    println!("fired {fired}");
    if args.first().map(String::as_str) == Some("exec") {
        use std::os::unix::process::CommandExt as _;
        let e = std::process::Command::new(&args[1]).args(&args[2..]).exec();
        panic!("exec {:?} failed: {e}", args[1]);
    }
}
