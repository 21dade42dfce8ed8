//! Seeded model test: random create / alloc / free / reap / destroy
//! sequences against a simple reference model, with `validate()` after every
//! step.
//!
//! Replay a failure with the seed it printed:
//! `SLABSCOPE_MODEL_SEED=<seed> cargo test -p slabscope --test model`.
//! `SLABSCOPE_MODEL_OPS` changes the number of operations (default 100000).

use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use slabscope::flags::{KM_NOSLEEP, KM_SLEEP, KMC_NODEBUG, KMC_SLAB};
use slabscope::tunables::{self, Tunables};
use slabscope::{Cache, CacheBuilder, Error};

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
        .unwrap_or(100_000);
    println!("model seed {seed} ({ops} operations); replay with SLABSCOPE_MODEL_SEED={seed}");
    let mut rng = Rng(seed);
    let mut caches: Vec<Model> = Vec::new();
    let mut all_live: HashSet<usize> = HashSet::new();
    let mut serial = 0;
    let mut tag = 0u64;
    for step in 0..ops {
        // Alternate growing and shrinking phases so caches both fill and empty.
        let grow_phase = (step / 4000) % 2 == 0;
        let r = rng.below(1000);
        if caches.is_empty() || (r < 5 && caches.len() < 6) {
            serial += 1;
            caches.push(create(&mut rng, serial));
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
                        caches.swap_remove(i);
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
    }
    // Tear down: free everything, every destroy succeeds.
    for m in caches {
        for (p, t) in &m.live {
            check_tag(*p, m.size, *t);
            // SAFETY: freed once.
            unsafe { m.cache.free(*p) };
        }
        m.cache.destroy().expect("everything freed");
    }
}
