//! Seeded model test: random create / alloc / free / reap / destroy
//! sequences against a simple reference model, with `validate()` after every
//! step.
//!
//! Besides the reference model (live objects and their contents, constructor
//! and destructor counts, `Busy` exactly when objects are live), every step
//! checks `validate()` and that the bytes the `os` seam has mapped are exactly
//! the slabs the caches report; a quarter of the phases fail a fifth of the
//! slab mappings.
//!
//! Replay a failure with the seed it printed (on stderr, and in the panic):
//! `SLABSCOPE_MODEL_SEED=<seed> cargo test -p slabscope --test model`.
//! `SLABSCOPE_MODEL_OPS` changes the number of operations (default 10^5,
//! 10^6 with `SLABSCOPE_LONG=1`).

use std::collections::HashSet;
use std::io::Write;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use slabscope::flags::{KM_NOSLEEP, KM_SLEEP, KMC_GROWING, KMC_NODEBUG, KMC_SLAB};
use slabscope::tunables::{self, Tunables};
use slabscope::{Cache, CacheBuilder, Error, os};

/// splitmix64: tiny, seedable, good enough.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Model {
    cache: Cache,
    size: usize,
    /// Live objects and the tag written into each.
    live: Vec<(NonNull<u8>, u64)>,
    ctors: Arc<AtomicU64>,
    dtors: Arc<AtomicU64>,
    slab_backed: bool,
}

fn create(rng: &mut Rng, serial: u64) -> Model {
    const SIZES: [usize; 9] = [1, 8, 24, 64, 100, 512, 1104, 4096, 20000];
    let size = SIZES[rng.below(SIZES.len() as u64) as usize];
    let align = [0usize, 8, 16, 64, 256][rng.below(5) as usize];
    let flags = [0, 0, 0, KMC_NODEBUG, KMC_SLAB][rng.below(5) as usize];
    let ctors = Arc::new(AtomicU64::new(0));
    let dtors = Arc::new(AtomicU64::new(0));
    let (c2, d2) = (ctors.clone(), dtors.clone());
    let cache = CacheBuilder::new(format!("model_{serial}"), size)
        .align(align)
        .flags(flags)
        .ctor(move |_, _| {
            c2.fetch_add(1, Ordering::Relaxed);
            true
        })
        .dtor(move |_| {
            d2.fetch_add(1, Ordering::Relaxed);
        })
        .build()
        .expect("valid arguments");
    Model {
        cache,
        size,
        live: Vec::new(),
        ctors,
        dtors,
        slab_backed: flags & KMC_SLAB != 0,
    }
}

fn write_tag(p: NonNull<u8>, size: usize, tag: u64) {
    let bytes = tag.to_le_bytes();
    let n = size.min(8);
    // SAFETY: the object has `size` writable bytes; we write min(size, 8)
    // at the start and one at the end.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.as_ptr(), n) };
    // SAFETY: as above.
    unsafe { p.as_ptr().wrapping_add(size - 1).write(tag as u8 ^ 0xa5) };
}

fn check_tag(p: NonNull<u8>, size: usize, tag: u64) {
    let mut bytes = [0u8; 8];
    let n = size.min(8);
    // SAFETY: the object has `size` readable bytes.
    unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), bytes.as_mut_ptr(), n) };
    let mut want = tag.to_le_bytes();
    if size <= 8 {
        // The end byte overlaps the start for tiny objects.
        want[size - 1] = tag as u8 ^ 0xa5;
    }
    assert_eq!(&bytes[..n], &want[..n], "object {p:p} was overwritten");
    // SAFETY: as above.
    let end = unsafe { p.as_ptr().wrapping_add(size - 1).read() };
    assert_eq!(end, tag as u8 ^ 0xa5);
}

fn check(m: &Model, step: u64) {
    m.cache
        .validate()
        .unwrap_or_else(|e| panic!("step {step}: validate: {e}"));
    let s = m.cache.stats();
    let live = m.live.len() as u64;
    if m.slab_backed {
        assert_eq!(s.obj_alloc, live, "step {step}: {s:?}");
    } else {
        assert_eq!(
            s.obj_alloc - s.mag_objs + s.obj_emergency,
            live,
            "step {step}: {s:?}"
        );
        assert_eq!(s.obj_total, s.slab_total * s.slab_objs + s.obj_emergency);
    }
    let (c, d) = (
        m.ctors.load(Ordering::Relaxed),
        m.dtors.load(Ordering::Relaxed),
    );
    assert_eq!(c - d, live, "step {step}: ctor {c} dtor {d}");
}

fn long() -> bool {
    std::env::var("SLABSCOPE_LONG").is_ok_and(|v| v == "1")
}

/// The `os` seam's mapped bytes (above `base`) are exactly the slabs the
/// caches report. Only meaningful with no grow in flight: this test is the
/// only thread that dispatches grows, so once no cache is GROWING none is.
fn check_mapped(caches: &[Model], base: usize, step: u64) {
    if caches.iter().any(|m| m.cache.flags() & KMC_GROWING != 0) {
        return;
    }
    let slabs: u64 = caches
        .iter()
        .map(|m| {
            let s = m.cache.stats();
            s.slab_total * s.slab_size
        })
        .sum();
    assert_eq!(
        (os::mapped_bytes() - base) as u64,
        slabs,
        "step {step}: bytes mapped by the os seam != Σ slab_total × slab_size"
    );
}

#[test]
fn random_operations_match_the_model() {
    tunables::set(Tunables {
        magazine_size: 4,
        stats_interval_ms: 0,
        ..Tunables::default()
    })
    .unwrap();
    let seed = std::env::var("SLABSCOPE_MODEL_SEED")
        .ok()
        .map(|s| s.parse().expect("SLABSCOPE_MODEL_SEED must be an integer"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let ops: u64 = std::env::var("SLABSCOPE_MODEL_OPS")
        .ok()
        .map(|s| s.parse().expect("SLABSCOPE_MODEL_OPS must be an integer"))
        .unwrap_or(if long() { 1_000_000 } else { 100_000 });
    let banner = format!(
        "model seed {seed} ({ops} operations); replay with \
         SLABSCOPE_MODEL_SEED={seed} SLABSCOPE_MODEL_OPS={ops}"
    );
    // Straight to fd 2, past libtest's capture, so the seed survives even a
    // failure that aborts the process (a corruption check).
    let _ = writeln!(std::io::stderr(), "{banner}");
    if let Err(e) = std::panic::catch_unwind(|| run(seed, ops)) {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("{msg}\n{banner}");
    }
}

fn run(seed: u64, ops: u64) {
    let mapped_base = os::mapped_bytes();
    let mut rng = Rng(seed);
    let mut caches: Vec<Model> = Vec::new();
    let mut all_live: HashSet<usize> = HashSet::new();
    let mut serial = 0;
    let mut tag = 0u64;
    for step in 0..ops {
        // Alternate growing and shrinking phases so caches both fill and
        // empty, and every fourth phase fail a fifth of the slab mappings.
        let phase = step / 4000;
        let grow_phase = phase % 2 == 0;
        let fail = if phase % 4 == 3 { 200 } else { 0 };
        if step % 4000 == 0 {
            tunables::fault::set_slab_fail_permille(fail).unwrap();
        }
        let r = rng.below(1000);
        if caches.is_empty() || (r < 5 && caches.len() < 6) {
            serial += 1;
            caches.push(create(&mut rng, serial));
            check(caches.last().unwrap(), step);
            continue;
        }
        let i = rng.below(caches.len() as u64) as usize;
        let m = &mut caches[i];
        let alloc_cut = if grow_phase { 700 } else { 300 };
        match r {
            5..=9 => {
                // Destroy: Busy exactly when objects are live.
                match m.cache.destroy() {
                    Ok(()) => {
                        assert!(m.live.is_empty(), "step {step}: destroy freed live objects");
                        let id = m.cache.id();
                        caches.swap_remove(i);
                        assert!(
                            slabscope::stats::all().iter().all(|s| s.id != id),
                            "step {step}: a destroyed cache is still registered"
                        );
                        check_mapped(&caches, mapped_base, step);
                        continue;
                    }
                    Err(Error::Busy { .. }) => {
                        assert!(!m.live.is_empty(), "step {step}: Busy with nothing live")
                    }
                    Err(e) => panic!("step {step}: {e}"),
                }
            }
            10..=29 => m.cache.reap_now(),
            30..=34 => slabscope::reap(),
            _ if r < alloc_cut => {
                let kmflags = if rng.below(10) == 0 {
                    KM_NOSLEEP
                } else {
                    KM_SLEEP
                };
                match m.cache.alloc(kmflags) {
                    Some(p) => {
                        assert!(
                            all_live.insert(p.as_ptr() as usize),
                            "step {step}: {p:p} handed out twice"
                        );
                        tag += 1;
                        write_tag(p, m.size, tag);
                        m.live.push((p, tag));
                    }
                    None => assert_eq!(kmflags, KM_NOSLEEP, "step {step}: KM_SLEEP failed"),
                }
            }
            _ => {
                if !m.live.is_empty() {
                    let j = rng.below(m.live.len() as u64) as usize;
                    let (p, t) = m.live.swap_remove(j);
                    check_tag(p, m.size, t);
                    assert!(all_live.remove(&(p.as_ptr() as usize)));
                    // SAFETY: allocated from this cache, freed once.
                    unsafe { m.cache.free(p) };
                }
            }
        }
        check(&caches[i], step);
        if step % 64 == 0 {
            check_mapped(&caches, mapped_base, step);
        }
    }
    tunables::fault::set_slab_fail_permille(0).unwrap();
    // Tear down: free everything, every destroy succeeds, nothing stays mapped.
    for m in caches {
        for (p, t) in &m.live {
            check_tag(*p, m.size, *t);
            // SAFETY: freed once.
            unsafe { m.cache.free(*p) };
        }
        m.cache.validate().unwrap();
        m.cache.destroy().expect("everything freed");
    }
    assert_eq!(
        os::mapped_bytes(),
        mapped_base,
        "slab memory is still mapped after every cache was destroyed"
    );
}
