//! The workloads, written once, generic over [`Contender`], and erased behind
//! [`Runner`] so the drivers can hold every contender at once and interleave
//! them.
//!
//! - churn (workload 1): a round allocates `live` objects, writes one byte of
//!   each, then frees them all in a given order; figures are ns per single
//!   allocate-or-free operation, as in the project's performance anchors;
//! - producer/consumer (workload 2): one thread allocates batches, a second
//!   frees them; the batches travel over a bounded channel and come back
//!   empty, so the channel allocates nothing per batch;
//! - ramp (workloads 3 and 4): allocate `count` objects from cold, then free
//!   them all and ask the allocator to give memory back, reading resident
//!   memory at each step. It runs in a fresh child process per contender.

use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::contender::Contender;
use crate::measure::{pin_to, rss_bytes};

/// One round after another of allocate-`live`-then-free-in-`order`.
/// `order` is a permutation of `0..live`.
#[inline(never)]
pub fn churn<C: Contender>(c: &C, live: usize, order: &[u32], rounds: u64) -> Duration {
    if live == 1 {
        let start = Instant::now();
        one_live(c, rounds);
        return start.elapsed();
    }
    let mut slots: Vec<Option<C::Obj<'_>>> = (0..live).map(|_| None).collect();
    let start = Instant::now();
    for r in 0..rounds {
        for slot in &mut slots {
            let mut o = c.alloc();
            // SAFETY: addr is the first byte of a live object of at least one byte.
            unsafe { C::addr(&mut o).write_volatile(r as u8) };
            *slot = Some(o);
        }
        for &i in order {
            if let Some(o) = slots[i as usize].take() {
                c.free(o);
            }
        }
    }
    start.elapsed()
}

/// `rounds` of one allocation, a one-byte write and one free: churn with
/// one live object, and the loop whose machine code `native` counts.
#[inline(always)]
pub fn one_live<C: Contender>(c: &C, rounds: u64) {
    for r in 0..rounds {
        let mut o = c.alloc();
        // SAFETY: addr is the first byte of a live object of at least one byte.
        unsafe { C::addr(&mut o).write_volatile(r as u8) };
        c.free(o);
    }
}

/// Allocate `objects` objects on a thread pinned to `cpus.0` and free them on
/// one pinned to `cpus.1`, `batch` at a time. Returns the wall time.
pub fn prodcons<C: Contender>(
    c: &C,
    objects: usize,
    batch: usize,
    cpus: (usize, usize),
) -> Duration {
    let batches = objects.div_ceil(batch);
    let (full_tx, full_rx) = sync_channel::<Vec<C::Obj<'_>>>(4);
    let (empty_tx, empty_rx) = sync_channel::<Vec<C::Obj<'_>>>(8);
    for _ in 0..8 {
        empty_tx
            .send(Vec::with_capacity(batch))
            .expect("the empty-batch channel has room for 8");
    }
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(move || {
            if let Err(e) = pin_to(cpus.1) {
                eprintln!("consumer not pinned: {e:#}");
            }
            while let Ok(mut v) = full_rx.recv() {
                for o in v.drain(..) {
                    c.free(o);
                }
                // The producer may be done and gone; that is fine.
                let _ = empty_tx.send(v);
            }
        });
        s.spawn(move || {
            if let Err(e) = pin_to(cpus.0) {
                eprintln!("producer not pinned: {e:#}");
            }
            for b in 0..batches {
                let mut v = empty_rx.recv().expect("the consumer returns every batch");
                let n = batch.min(objects - b * batch);
                for i in 0..n {
                    let mut o = c.alloc();
                    // SAFETY: addr is the first byte of a live object.
                    unsafe { C::addr(&mut o).write_volatile(i as u8) };
                    v.push(o);
                }
                full_tx
                    .send(v)
                    .expect("the consumer runs until the producer hangs up");
            }
        });
    });
    start.elapsed()
}

/// What a cold ramp measured (workloads 3 and 4). Memory figures are growth
/// of resident memory over the baseline taken just before the ramp, with the
/// pointer array already allocated and touched.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RampResult {
    pub count: usize,
    pub size: usize,
    pub ramp_ns: u64,
    pub baseline_rss: u64,
    /// Resident growth with every object live.
    pub peak_growth: u64,
    /// Resident growth after every object was freed.
    pub after_free_growth: u64,
    /// Resident growth after the allocator was asked to give memory back.
    pub after_release_growth: u64,
    /// What was called to give memory back.
    pub release: String,
}

/// Ramp to `count` live objects from cold, free them all, release.
pub fn ramp<C: Contender>(c: &C, count: usize, size: usize) -> anyhow::Result<RampResult> {
    let mut objs: Vec<Option<C::Obj<'_>>> = Vec::with_capacity(count);
    objs.resize_with(count, || None);
    objs.clear();
    let baseline = rss_bytes()?;
    let start = Instant::now();
    for i in 0..count {
        let mut o = c.alloc();
        // SAFETY: addr is the first byte of a live object.
        unsafe { C::addr(&mut o).write_volatile(i as u8) };
        objs.push(Some(o));
    }
    let ramp = start.elapsed();
    let peak = rss_bytes()?;
    for o in &mut objs {
        if let Some(o) = o.take() {
            c.free(o);
        }
    }
    let after_free = rss_bytes()?;
    let release = c.release();
    let after_release = rss_bytes()?;
    drop(objs);
    Ok(RampResult {
        count,
        size,
        ramp_ns: ramp.as_nanos() as u64,
        baseline_rss: baseline,
        peak_growth: peak.saturating_sub(baseline),
        after_free_growth: after_free.saturating_sub(baseline),
        after_release_growth: after_release.saturating_sub(baseline),
        release: release.into(),
    })
}

/// A contender with its type erased, so drivers can hold all of them.
pub trait Runner {
    fn churn(&self, live: usize, order: &[u32], rounds: u64) -> Duration;
    fn prodcons(&self, objects: usize, batch: usize, cpus: (usize, usize)) -> Duration;
    fn ramp(&self, count: usize, size: usize) -> anyhow::Result<RampResult>;
    fn slab_stats(&self) -> Option<slabscope::stats::CacheStats>;
}

impl<C: Contender> Runner for C {
    fn churn(&self, live: usize, order: &[u32], rounds: u64) -> Duration {
        churn(self, live, order, rounds)
    }

    fn prodcons(&self, objects: usize, batch: usize, cpus: (usize, usize)) -> Duration {
        prodcons(self, objects, batch, cpus)
    }

    fn ramp(&self, count: usize, size: usize) -> anyhow::Result<RampResult> {
        ramp(self, count, size)
    }

    fn slab_stats(&self) -> Option<slabscope::stats::CacheStats> {
        Contender::slab_stats(self)
    }
}
