//! The global allocator (issue 15): `slabscope::SlabscopeAlloc` against the
//! `mimalloc` crate's `MiMalloc`, the two ways a Rust program puts its heap
//! on an allocator with `#[global_allocator]`, on random-size churn.
//!
//! `LIVE` blocks stay live; each step frees one, picked at random, and
//! allocates a block of a random size from 8 B to 4 KiB in its place,
//! writing its first byte. The slots and sizes come from one seeded
//! sequence, the same for both allocators. Both are called through
//! `GlobalAlloc::alloc` / `dealloc` on their unit types, in one generic
//! loop, which inlines what each inlines into `__rust_alloc`. One process,
//! interleaved, median of the runs; ns per allocate-or-free operation.

use std::alloc::{GlobalAlloc, Layout};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use mimalloc::MiMalloc;
use slabscope::SlabscopeAlloc;

use crate::measure::{Rng, Summary, ns_per};
use crate::text::num;

/// Blocks live at once.
pub const LIVE: usize = 1000;
/// Smallest and largest block.
pub const MIN: usize = 8;
pub const MAX: usize = 4096;
/// Steps in the seeded sequence (repeated as often as a measurement needs).
const STEPS: usize = 1 << 16;

/// One step: the slot to replace and the new block's size.
#[derive(Clone, Copy, Debug)]
struct Step {
    slot: u32,
    size: u32,
}

fn sequence() -> Vec<Step> {
    let mut rng = Rng::new(0x610b_a1a1_10c0);
    (0..STEPS)
        .map(|_| Step {
            slot: rng.below(LIVE) as u32,
            size: (MIN + rng.below(MAX - MIN + 1)) as u32,
        })
        .collect()
}

fn layout(size: usize) -> Layout {
    // MIN..=MAX with alignment 8 is always a valid layout.
    Layout::from_size_align(size, 8).expect("sizes of 8 B to 4 KiB, 8-aligned")
}

/// `LIVE` blocks of the sequence's first sizes, each with its first byte written.
fn fill<A: GlobalAlloc>(a: &A, seq: &[Step]) -> Vec<(*mut u8, usize)> {
    (0..LIVE)
        .map(|i| {
            let size = seq[i % seq.len()].size as usize;
            // SAFETY: a valid, non-zero-size layout.
            let p = unsafe { a.alloc(layout(size)) };
            assert!(!p.is_null(), "allocating {size} bytes failed");
            // SAFETY: p is a live block of at least one byte.
            unsafe { p.write(i as u8) };
            (p, size)
        })
        .collect()
}

fn drain<A: GlobalAlloc>(a: &A, slots: Vec<(*mut u8, usize)>) {
    for (p, size) in slots {
        // SAFETY: p came from a.alloc with this layout, freed once.
        unsafe { a.dealloc(p, layout(size)) };
    }
}

/// `steps` steps of the sequence on `slots`; the time they took.
#[inline(never)]
fn churn<A: GlobalAlloc>(
    a: &A,
    seq: &[Step],
    slots: &mut [(*mut u8, usize)],
    steps: usize,
) -> Duration {
    let start = Instant::now();
    for k in 0..steps {
        let st = seq[k % seq.len()];
        let slot = &mut slots[st.slot as usize];
        // SAFETY: the slot's block came from a.alloc with this layout and is
        // freed once, then replaced.
        unsafe { a.dealloc(slot.0, layout(slot.1)) };
        let size = st.size as usize;
        // SAFETY: a valid, non-zero-size layout.
        let p = unsafe { a.alloc(layout(size)) };
        assert!(!p.is_null(), "allocating {size} bytes failed");
        // SAFETY: p is a live block of at least one byte.
        unsafe { p.write_volatile(k as u8) };
        *slot = (p, size);
    }
    start.elapsed()
}

/// One allocator's measurement of `steps` steps, from fresh slots.
fn measure<A: GlobalAlloc>(a: &A, seq: &[Step], steps: usize) -> Duration {
    let mut slots = fill(a, seq);
    let d = churn(a, seq, &mut slots, steps);
    drain(a, slots);
    d
}

/// Steps that make one measurement last about `target`.
fn calibrate<A: GlobalAlloc>(a: &A, seq: &[Step], target: Duration) -> usize {
    measure(a, seq, STEPS);
    let mut steps = 1024usize;
    loop {
        let d = measure(a, seq, steps);
        if d >= target / 8 || steps >= 1 << 32 {
            let scaled = steps as u128 * target.as_nanos() / d.as_nanos().max(1);
            return scaled.clamp(1, usize::MAX as u128) as usize;
        }
        steps *= 4;
    }
}

/// What the global allocator section measured.
#[derive(Clone, Debug)]
pub struct GlobalChurn {
    pub slabscope: Summary,
    pub mimalloc: Summary,
}

impl GlobalChurn {
    /// slabscope's median over mimalloc's (target: at most 1.0).
    pub fn ratio(&self) -> f64 {
        self.slabscope.median / self.mimalloc.median
    }
}

/// Run both allocators `runs` times, interleaved.
pub fn run(runs: usize, target: Duration) -> Option<GlobalChurn> {
    let seq = sequence();
    let (s, m) = (SlabscopeAlloc, MiMalloc);
    let steps = [calibrate(&s, &seq, target), calibrate(&m, &seq, target)];
    let mut samples = [Vec::new(), Vec::new()];
    for run in 0..runs {
        for j in 0..2 {
            let i = (j + run) % 2;
            let d = if i == 0 {
                measure(&s, &seq, steps[0])
            } else {
                measure(&m, &seq, steps[1])
            };
            samples[i].push(ns_per(d, steps[i] as u64 * 2));
        }
    }
    eprintln!("  global allocator churn: done");
    Some(GlobalChurn {
        slabscope: Summary::of(&samples[0])?,
        mimalloc: Summary::of(&samples[1])?,
    })
}

impl GlobalChurn {
    pub fn markdown(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "`#[global_allocator]` candidates called through `GlobalAlloc::alloc` / `dealloc` \
             in one generic loop: `slabscope::SlabscopeAlloc` (the `kmem_alloc_*` size classes) \
             and the `mimalloc` crate's `MiMalloc`. {LIVE} blocks live; each step frees a random \
             one and allocates a random size from {MIN} B to {} KiB in its place (one seeded \
             sequence for both), writing its first byte. Median of {} interleaved runs (min in \
             parentheses), ns per allocate-or-free operation. Target: at most 1.0× mimalloc.\n",
            MAX / 1024,
            self.slabscope.n
        );
        let _ = writeln!(
            md,
            "| workload | slabscope | mimalloc | slabscope / mimalloc |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|");
        let _ = writeln!(
            md,
            "| random sizes {MIN} B–{} KiB, {LIVE} live | {} ({}) | {} ({}) | **{:.2}×** |\n",
            MAX / 1024,
            num(self.slabscope.median),
            num(self.slabscope.min),
            num(self.mimalloc.median),
            num(self.mimalloc.min),
            self.ratio()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_seeded_and_in_range() {
        let a = sequence();
        assert_eq!(a.len(), STEPS);
        assert!(
            a.iter()
                .all(|s| (s.slot as usize) < LIVE && (MIN..=MAX).contains(&(s.size as usize)))
        );
        let b = sequence();
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.slot == y.slot && x.size == y.size),
            "one sequence for every allocator"
        );
        let small = a.iter().filter(|s| s.size < 64).count();
        assert!(
            small > 0 && small < STEPS / 10,
            "sizes spread over the range: {small}"
        );
    }

    #[test]
    fn both_allocators_churn_and_report() {
        let g = run(2, Duration::from_millis(2)).expect("two runs each");
        assert_eq!((g.slabscope.n, g.mimalloc.n), (2, 2));
        assert!(g.slabscope.median > 0.0 && g.mimalloc.median > 0.0);
        let mut md = String::new();
        g.markdown(&mut md);
        assert!(md.contains("| random sizes 8 B–4 KiB, 1000 live |"), "{md}");
    }
}
