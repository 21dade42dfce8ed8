//! The demo workload: slabscope behaving like a file system's caches, for
//! `cargo xtask demo` and the inspector's end-to-end test.
//!
//! Eight caches named and sized after OpenZFS's busiest ones on Linux
//! (`zio_cache`, `zio_link_cache`, `dnode_t`, `dmu_buf_impl_t`,
//! `arc_buf_hdr_t_full`, `zfs_znode_cache`, `zio_buf_16384`,
//! `zio_data_buf_131072`), the small ones with constructors and destructors
//! that stamp and check their objects. Worker threads allocate and free
//! toward a target population that follows a repeating 40-second cycle:
//!
//! | phase | seconds | what happens |
//! |---|---|---|
//! | ramp-up | 8 | populations grow from nothing to their working set: many grows |
//! | churn | 12 | steady state; objects freed and replaced, a share of them freed by another thread (magazine hits, the odd grow) |
//! | burst | 4 | the write path (zio, zio_link, zio buffers, ARC headers) triples: a storm of grows; with `--faults` every grow is slowed past the grow timeout, so those caches deadlock and hand out emergency objects |
//! | drain | 4 | populations fall to a twentieth of the working set: slabs empty out |
//! | idle | 12 | no traffic: the background reaper flushes idle magazines and returns empty slabs |
//!
//! The first burst, and so the first deadlock with `--faults`, comes 20
//! seconds in. Tunables are set for watching: the background reaper every 2 s,
//! `cache_stats` every 500 ms (each `SLABSCOPE_*` environment variable still
//! overrides them).
//!
//! ```text
//! demo [--seconds N] [--faults | --no-faults] [--threads N] [--quiet]
//! ```
//!
//! It prints its pid, then one status line every 2 seconds, on stderr. With
//! `--seconds` it stops after N seconds, frees everything, prints the final
//! `/proc/spl/kmem/slab` text on stdout and destroys its caches; otherwise
//! it runs until it is killed.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slabscope::flags::{KM_SLEEP, KMC_DEADLOCKED};
use slabscope::tunables::{self, Tunables};
use slabscope::{Cache, CacheBuilder};

/// Grow wait before a cache is marked DEADLOCKED (the default, SPL's HZ/10).
const GROW_TIMEOUT_MS: u64 = 100;
/// Injected grow delay during bursts with `--faults`: well past the timeout,
/// so each slowed grow leaves 100 ms of emergency allocations behind it.
const FAULT_GROW_DELAY_MS: u64 = 200;
/// Length of one thread's tick.
const TICK: Duration = Duration::from_millis(10);

/// One cache of the workload.
struct Spec {
    name: &'static str,
    size: usize,
    /// Objects in the working set (all threads together).
    steady: usize,
    /// Part of the write path that bursts.
    bursts: bool,
    /// Stamped by a constructor, checked by a destructor.
    ctor: bool,
}

/// Sizes are those of OpenZFS 2.x on x86_64 Linux.
const SPECS: [Spec; 8] = [
    Spec {
        name: "zio_cache",
        size: 1104,
        steady: 6000,
        bursts: true,
        ctor: true,
    },
    Spec {
        name: "zio_link_cache",
        size: 48,
        steady: 12000,
        bursts: true,
        ctor: false,
    },
    Spec {
        name: "dnode_t",
        size: 824,
        steady: 16000,
        bursts: false,
        ctor: true,
    },
    Spec {
        name: "dmu_buf_impl_t",
        size: 376,
        steady: 24000,
        bursts: false,
        ctor: true,
    },
    Spec {
        name: "arc_buf_hdr_t_full",
        size: 280,
        steady: 30000,
        bursts: true,
        ctor: true,
    },
    Spec {
        name: "zfs_znode_cache",
        size: 1088,
        steady: 8000,
        bursts: false,
        ctor: true,
    },
    Spec {
        name: "zio_buf_16384",
        size: 16384,
        steady: 800,
        bursts: true,
        ctor: false,
    },
    Spec {
        name: "zio_data_buf_131072",
        size: 131072,
        steady: 160,
        bursts: true,
        ctor: false,
    },
];

/// Stamp a constructor writes at the start of an object.
const STAMP: u64 = 0x5a5a_c0de_f00d_5a5a;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Ramp,
    Churn,
    Burst,
    Drain,
    Idle,
}

/// The phase at `t` seconds into the cycle, and the fraction of it elapsed.
fn phase_at(t: f64) -> (Phase, f64) {
    const PHASES: [(Phase, f64); 5] = [
        (Phase::Ramp, 8.0),
        (Phase::Churn, 12.0),
        (Phase::Burst, 4.0),
        (Phase::Drain, 4.0),
        (Phase::Idle, 12.0),
    ];
    let cycle: f64 = PHASES.iter().map(|p| p.1).sum();
    let mut t = t % cycle;
    for (phase, len) in PHASES {
        if t < len {
            return (phase, t / len);
        }
        t -= len;
    }
    (Phase::Idle, 1.0)
}

/// Target population of `spec` (all threads together) in `phase`.
fn target(spec: &Spec, phase: Phase, frac: f64) -> usize {
    let steady = spec.steady as f64;
    let low = steady / 20.0;
    let t = match phase {
        Phase::Ramp => low + (steady - low) * frac,
        Phase::Churn => steady,
        Phase::Burst if spec.bursts => steady * 3.0,
        Phase::Burst => steady,
        Phase::Drain => steady + (low - steady) * frac,
        Phase::Idle => low,
    };
    t as usize
}

/// An object handed to another thread to free.
struct Handoff(usize, NonNull<u8>);

// SAFETY: a slabscope object may be freed on any thread; the sender gives up
// the pointer when it pushes it, so exactly one thread owns it at a time.
unsafe impl Send for Handoff {}

/// xorshift64*: enough randomness for a workload, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

struct Shared {
    caches: Vec<Cache>,
    /// One inbox per thread: objects other threads ask it to free.
    inboxes: Vec<Mutex<Vec<Handoff>>>,
    stop: AtomicBool,
    start: Instant,
}

/// Constructor and destructor calls so far.
static CTORS: AtomicU64 = AtomicU64::new(0);
static DTORS: AtomicU64 = AtomicU64::new(0);

/// One worker: keeps its share of every cache's target population, churning
/// and handing some objects to the next thread to free.
fn worker(me: usize, nthreads: usize, shared: &Shared) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (me as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9));
    let mut held: Vec<Vec<NonNull<u8>>> = vec![Vec::new(); SPECS.len()];
    let next = (me + 1) % nthreads;
    while !shared.stop.load(Ordering::Relaxed) {
        let tick_start = Instant::now();
        let inbox = std::mem::take(&mut *shared.inboxes[me].lock().expect("inbox lock"));
        for Handoff(i, p) in inbox {
            // SAFETY: p came from cache i and its sender gave it up.
            unsafe { shared.caches[i].free(p) };
        }
        let (phase, frac) = phase_at(shared.start.elapsed().as_secs_f64());
        if phase == Phase::Idle {
            std::thread::sleep(TICK);
            continue;
        }
        let mut handoff = Vec::new();
        for (i, spec) in SPECS.iter().enumerate() {
            let cache = &shared.caches[i];
            let objs = &mut held[i];
            let want = target(spec, phase, frac) / nthreads;
            // Move toward the target by at most a fixed step per tick, so a
            // ramp takes its whole phase rather than one tick.
            let step = (spec.steady / nthreads / 50).max(4);
            if objs.len() < want {
                for _ in 0..(want - objs.len()).min(step) {
                    let p = cache.alloc(KM_SLEEP).expect("KM_SLEEP never returns None");
                    objs.push(p);
                }
            } else if objs.len() > want {
                for _ in 0..(objs.len() - want).min(step) {
                    let p = objs.swap_remove(rng.below(objs.len()));
                    // SAFETY: p came from this cache and is no longer held.
                    unsafe { cache.free(p) };
                }
            }
            // Churn: replace about 1% of the population per tick, freeing a
            // quarter of those on the next thread.
            let churn = (objs.len() / 100).min(step);
            for _ in 0..churn {
                if objs.is_empty() {
                    break;
                }
                let p = objs.swap_remove(rng.below(objs.len()));
                if nthreads > 1 && rng.below(4) == 0 {
                    handoff.push(Handoff(i, p));
                } else {
                    // SAFETY: p came from this cache and is no longer held.
                    unsafe { cache.free(p) };
                }
                objs.push(cache.alloc(KM_SLEEP).expect("KM_SLEEP never returns None"));
            }
        }
        if !handoff.is_empty() {
            shared.inboxes[next]
                .lock()
                .expect("inbox lock")
                .extend(handoff);
        }
        if let Some(rest) = TICK.checked_sub(tick_start.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    for (i, objs) in held.into_iter().enumerate() {
        for p in objs {
            // SAFETY: p came from cache i and is freed once, here.
            unsafe { shared.caches[i].free(p) };
        }
    }
}

fn make_cache(spec: &Spec) -> Cache {
    let mut b = CacheBuilder::new(spec.name, spec.size).align(8);
    if spec.ctor {
        b = b.ctor(|obj: NonNull<u8>, _kmflags| {
            // SAFETY: every constructed cache's objects are at least 8 bytes
            // and 8-aligned.
            unsafe { obj.cast::<u64>().write(STAMP) };
            CTORS.fetch_add(1, Ordering::Relaxed);
            true
        });
        let name = spec.name;
        b = b.dtor(move |obj: NonNull<u8>| {
            // SAFETY: as for the constructor; the object was constructed.
            let stamp = unsafe { obj.cast::<u64>().read() };
            assert_eq!(stamp, STAMP, "{name}: object {obj:p} was corrupted");
            DTORS.fetch_add(1, Ordering::Relaxed);
        });
    }
    b.build()
        .unwrap_or_else(|e| fail(&format!("creating cache {}: {e}", spec.name)))
}

fn fail(msg: &str) -> ! {
    eprintln!("demo: {msg}");
    std::process::exit(1);
}

struct Options {
    seconds: Option<u64>,
    faults: bool,
    threads: usize,
    quiet: bool,
}

const USAGE: &str = "usage: demo [--seconds N] [--faults | --no-faults] [--threads N] [--quiet]\n\
    \n\
    A file-system-like workload on eight slabscope caches, in repeating 40 s cycles\n\
    (ramp-up, churn, burst, drain, idle). --faults slows every grow during bursts past\n\
    the grow timeout, so caches deadlock and hand out emergency objects. Runs until\n\
    killed, or for --seconds. Watch it with: sudo slabscope --pid <pid>";

fn parse_args() -> Options {
    let mut o = Options {
        seconds: None,
        faults: false,
        threads: 4,
        quiet: false,
    };
    let mut args = std::env::args().skip(1);
    let number = |flag: &str, v: Option<String>| -> u64 {
        v.and_then(|v| v.parse().ok())
            .unwrap_or_else(|| fail(&format!("{flag} needs a whole number\n{USAGE}")))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => o.seconds = Some(number("--seconds", args.next())),
            "--faults" => o.faults = true,
            "--no-faults" => o.faults = false,
            "--threads" => o.threads = number("--threads", args.next()).clamp(1, 64) as usize,
            "--quiet" => o.quiet = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => fail(&format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    o
}

/// One status line: what a glance at the inspector would say.
fn status(shared: &Shared, phase: Phase) -> String {
    let all = slabscope::stats::all();
    let ours = all
        .iter()
        .filter(|s| SPECS.iter().any(|spec| spec.name == s.name));
    let (mut objs, mut bytes, mut slabs, mut dlock, mut emerg, mut deadlocked) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for s in ours {
        let live = s.obj_alloc.saturating_sub(s.mag_objs) + s.obj_emergency;
        objs += live;
        bytes += live * s.obj_size;
        slabs += s.slab_total;
        dlock += s.obj_deadlock;
        emerg += s.obj_emergency;
        deadlocked += u64::from(s.flags & KMC_DEADLOCKED != 0);
    }
    format!(
        "demo: t={:>4.0}s {:<5} {objs} objects in use ({:.1} MiB) in {slabs} slabs; \
         deadlocks {dlock} ({deadlocked} caches now); emergency objects {emerg}; \
         ctors {} dtors {}",
        shared.start.elapsed().as_secs_f64(),
        format!("{phase:?}").to_lowercase(),
        bytes as f64 / (1024.0 * 1024.0),
        CTORS.load(Ordering::Relaxed),
        DTORS.load(Ordering::Relaxed),
    )
}

fn main() {
    let opts = parse_args();
    tunables::set(Tunables {
        grow_timeout_ms: GROW_TIMEOUT_MS,
        reap_interval_ms: 2000,
        stats_interval_ms: 500,
        ..Tunables::default()
    })
    .unwrap_or_else(|e| fail(&format!("setting tunables: {e}")));

    let caches: Vec<Cache> = SPECS.iter().map(make_cache).collect();
    let shared = Arc::new(Shared {
        caches,
        inboxes: (0..opts.threads).map(|_| Mutex::new(Vec::new())).collect(),
        stop: AtomicBool::new(false),
        start: Instant::now(),
    });
    let pid = std::process::id();
    eprintln!(
        "demo: pid {pid}, {} threads, faults {}; watch it with: sudo slabscope --pid {pid}",
        opts.threads,
        if opts.faults {
            "on (slow grows during bursts)"
        } else {
            "off"
        }
    );

    let workers: Vec<_> = (0..opts.threads)
        .map(|me| {
            let shared = Arc::clone(&shared);
            let n = opts.threads;
            std::thread::Builder::new()
                .name(format!("demo-{me}"))
                .spawn(move || worker(me, n, &shared))
                .unwrap_or_else(|e| fail(&format!("starting a worker thread: {e}")))
        })
        .collect();

    let deadline = opts.seconds.map(|s| shared.start + Duration::from_secs(s));
    let mut last_phase = None;
    let mut last_status = Instant::now();
    loop {
        let (phase, _) = phase_at(shared.start.elapsed().as_secs_f64());
        if last_phase != Some(phase) {
            // Fault injection follows the phase: only burst grows are slowed.
            let delay = if opts.faults && phase == Phase::Burst {
                FAULT_GROW_DELAY_MS
            } else {
                0
            };
            tunables::fault::set_grow_delay_ms(delay);
            last_phase = Some(phase);
        }
        if !opts.quiet && last_status.elapsed() >= Duration::from_secs(2) {
            eprintln!("{}", status(&shared, phase));
            last_status = Instant::now();
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    shared.stop.store(true, Ordering::Relaxed);
    tunables::fault::set_grow_delay_ms(0);
    for w in workers {
        if w.join().is_err() {
            fail("a worker thread panicked (see its message above)");
        }
    }
    for inbox in &shared.inboxes {
        for Handoff(i, p) in std::mem::take(&mut *inbox.lock().expect("inbox lock")) {
            // SAFETY: p came from cache i; no worker is left to free it.
            unsafe { shared.caches[i].free(p) };
        }
    }
    slabscope::reap();
    let stats = slabscope::stats::all();
    slabscope::stats::write_proc_slab(std::io::stdout().lock(), &stats)
        .unwrap_or_else(|e| fail(&format!("printing the final statistics: {e}")));
    for c in &shared.caches {
        c.destroy()
            .unwrap_or_else(|e| fail(&format!("destroying {}: {e}", c.name())));
    }
    if !opts.quiet {
        eprintln!(
            "demo: done after {:.0}s; every object freed and every cache destroyed",
            shared.start.elapsed().as_secs_f64()
        );
    }
}
