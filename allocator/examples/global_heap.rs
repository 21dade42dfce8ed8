//! A Rust program on slabscope's global allocator: maps, strings, vectors
//! and boxed trees built and torn down over several rounds by four
//! threads, with a digest of everything computed on stdout. The digest
//! depends only on the arguments, so it is the same on any allocator;
//! `tests/global_alloc.rs` runs this program on [`SlabscopeAlloc`] and,
//! with `SLABSCOPE_EXAMPLE_SYSTEM_ALLOC=1`, on the system allocator, and
//! compares. On slabscope it prints, to stderr, how many `kmem_alloc_*`
//! classes hold slabs.
//!
//! ```sh
//! cargo run --release --example global_heap -- 20
//! cargo run --release --example global_heap -- 20 main   # one thread
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};

use slabscope::SlabscopeAlloc;

/// slabscope, or the system allocator when the environment asks; decided
/// at the first allocation (with `getenv`, which does not allocate) and
/// fixed for the life of the process.
struct Chosen;

static CHOICE: AtomicU8 = AtomicU8::new(0);
const SLABSCOPE: u8 = 1;
const SYSTEM: u8 = 2;

fn system() -> bool {
    let mut c = CHOICE.load(Ordering::Relaxed);
    if c == 0 {
        // SAFETY: getenv with a NUL-terminated name; nothing here changes
        // the environment.
        let v = unsafe { libc::getenv(c"SLABSCOPE_EXAMPLE_SYSTEM_ALLOC".as_ptr()) };
        c = if v.is_null() { SLABSCOPE } else { SYSTEM };
        CHOICE.store(c, Ordering::Relaxed);
    }
    c == SYSTEM
}

// SAFETY: every call goes to the allocator chosen once for the process,
// which is itself a GlobalAlloc.
unsafe impl GlobalAlloc for Chosen {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if system() {
            // SAFETY: forwarded caller guarantee.
            unsafe { System.alloc(l) }
        } else {
            // SAFETY: forwarded caller guarantee.
            unsafe { SlabscopeAlloc.alloc(l) }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if system() {
            // SAFETY: forwarded caller guarantee.
            unsafe { System.dealloc(p, l) }
        } else {
            // SAFETY: forwarded caller guarantee.
            unsafe { SlabscopeAlloc.dealloc(p, l) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if system() {
            // SAFETY: forwarded caller guarantee.
            unsafe { System.realloc(p, l, n) }
        } else {
            // SAFETY: forwarded caller guarantee.
            unsafe { SlabscopeAlloc.realloc(p, l, n) }
        }
    }
}

#[global_allocator]
static GLOBAL: Chosen = Chosen;

/// FNV-1a over everything the rounds compute.
struct Digest(u64);

impl Digest {
    fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

enum Tree {
    Leaf(String),
    Node(Vec<Tree>),
}

fn tree(depth: u32, seed: u64) -> Tree {
    if depth == 0 {
        return Tree::Leaf(format!("leaf-{seed:x}"));
    }
    Tree::Node(
        (0..=(seed % 4))
            .map(|i| tree(depth - 1, seed.wrapping_mul(31).wrapping_add(i)))
            .collect(),
    )
}

fn weigh(t: &Tree) -> u64 {
    match t {
        Tree::Leaf(s) => s.len() as u64,
        Tree::Node(kids) => 1 + kids.iter().map(weigh).sum::<u64>(),
    }
}

/// One thread's rounds; returns its digest.
fn work(thread: u64, rounds: u64) -> u64 {
    let mut d = Digest(0xcbf2_9ce4_8422_2325 ^ thread);
    for r in 0..rounds {
        let mut words: HashMap<String, Vec<u64>> = HashMap::new();
        for i in 0..5000u64 {
            let key = format!("w{}", (i * 7919 + r * 31 + thread) % 1500);
            words.entry(key).or_default().push(i);
        }
        let ordered: BTreeMap<_, _> = words.iter().map(|(k, v)| (k.clone(), v.len())).collect();
        for (k, n) in &ordered {
            d.add(k.as_bytes());
            d.add(&n.to_le_bytes());
        }
        let mut text = String::new();
        for (k, v) in ordered.iter().take(300) {
            text.push_str(&format!("{k}:{};", v * 3));
        }
        d.add(text.as_bytes());
        let t = tree(7, r * 1000 + thread);
        d.add(&weigh(&t).to_le_bytes());
        let mut big: Vec<u32> = Vec::new();
        for i in 0..(50_000 + r * 1000) as u32 {
            big.push(i ^ (thread as u32));
        }
        big.truncate(1000);
        big.shrink_to_fit();
        d.add(&big.iter().map(|&x| u64::from(x)).sum::<u64>().to_le_bytes());
    }
    d.0
}

fn main() {
    let rounds: u64 = match std::env::args().nth(1) {
        None => 10,
        Some(a) => a.parse().unwrap_or_else(|_| {
            eprintln!("global_heap: ROUNDS must be a whole number, got {a:?}");
            std::process::exit(2)
        }),
    };
    // `global_heap ROUNDS main`: the four workers' work done one after the
    // other on the main thread, so the process never has a second thread
    // (slabscope then publishes its statistics from the allocations' slow
    // paths), with a cache of slabscope's built and destroyed after each,
    // whose registration allocates while it holds the registry's lock.
    let on_main = match std::env::args().nth(2).as_deref() {
        None => false,
        Some("main") => true,
        Some(a) => {
            eprintln!("global_heap: the second argument can only be `main`, got {a:?}");
            std::process::exit(2)
        }
    };
    let results: Vec<u64> = if on_main {
        (0..4)
            .map(|t| {
                let x = work(t, rounds);
                let c = slabscope::CacheBuilder::new(format!("global_heap_{t}"), 40)
                    .build()
                    .expect("a cache");
                c.destroy().expect("an empty cache is destroyed");
                x
            })
            .collect()
    } else {
        (0..4)
            .map(|t| std::thread::spawn(move || work(t, rounds)))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect()
    };
    let mut d = Digest(0);
    for (t, x) in results.into_iter().enumerate() {
        println!("thread {t}: {x:016x}");
        d.add(&x.to_le_bytes());
    }
    println!("global_heap ok: {rounds} rounds, digest {:016x}", d.0);
    if !system() {
        let classes = slabscope::kmem::built_classes()
            .filter(|(_, c)| c.stats().slab_total > 0)
            .count();
        eprintln!("kmem classes with slabs: {classes}");
    }
}
