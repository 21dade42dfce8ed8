//! In-process drivers of workloads 1 (churn) and 2 (producer/consumer): every
//! contender is built once per object size, then the contenders take turns,
//! run after run, so that drift in the machine (other load, frequency, the
//! host) spreads over all of them alike. Each cell is the min and median of
//! the runs.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;

use crate::contenders::{Kind, build};
use crate::measure::{Summary, free_order, ns_per};
use crate::workloads::Runner;

/// How long and how often to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Interleaved runs per cell.
    pub runs: usize,
    /// Target duration of one churn measurement.
    pub target: Duration,
    /// Most objects passed from producer to consumer per measurement (each
    /// contender's count is sized to last about `target`).
    pub prodcons_objects: usize,
    /// CPUs of the producer and the consumer.
    pub pair: (usize, usize),
}

/// Object sizes of workload 1.
pub const CHURN_SIZES: [usize; 3] = [64, 4096, 128 << 10];
/// (live objects per round, random free order) of workload 1. With one live
/// object the free order does not matter.
pub const CHURN_SHAPES: [(usize, bool); 3] = [(1, false), (1000, false), (1000, true)];

/// One row of a table: a configuration and each contender's ns/op.
#[derive(Clone, Debug)]
pub struct Row {
    pub size: usize,
    pub live: usize,
    pub random: bool,
    pub cells: BTreeMap<Kind, Summary>,
    /// What slabscope's cache did during one extra measurement of this row.
    pub internals: Option<Internals>,
}

/// slabscope's counters over one measurement: how often the cache grew
/// (a slab mapped through the grow worker) and reclaimed per round.
#[derive(Clone, Debug)]
pub struct Internals {
    pub rounds: u64,
    pub slabs_created: u64,
    pub slabs_destroyed: u64,
    pub slab_size: u64,
    pub slab_objs: u64,
    pub mag_size: u32,
    pub mag_refill: u32,
    /// Objects in the per-CPU magazines and in the depot after the last
    /// round (every object freed).
    pub mag_objs: u64,
    pub depot_objs: u64,
}

impl Internals {
    pub fn grows_per_round(&self) -> f64 {
        self.slabs_created as f64 / self.rounds.max(1) as f64
    }
}

/// Run one more measurement of slabscope and read its counters around it.
fn internals(r: &dyn Runner, live: usize, order: &[u32], rounds: u64) -> Option<Internals> {
    let before = r.slab_stats()?;
    r.churn(live, order, rounds);
    let after = r.slab_stats()?;
    Some(Internals {
        rounds,
        slabs_created: after.slab_create - before.slab_create,
        slabs_destroyed: after.slab_destroy - before.slab_destroy,
        slab_size: after.slab_size,
        slab_objs: after.slab_objs,
        mag_size: after.mag_size,
        mag_refill: after.mag_refill,
        mag_objs: after.mag_objs - after.depot_objs,
        depot_objs: after.depot_objs,
    })
}

impl Row {
    /// The best peer's median and which peer it is.
    pub fn best_peer(&self) -> Option<(Kind, f64)> {
        self.cells
            .iter()
            .filter(|(k, _)| k.is_peer())
            .map(|(k, s)| (*k, s.median))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// Rounds that make one measurement last about `target`. One round runs
/// first, unmeasured: a cold contender's first round maps memory (slabscope
/// waits for a grow), which would make a short `target` (quick mode) settle
/// on a handful of rounds that measure the clock.
fn calibrate(r: &dyn Runner, live: usize, order: &[u32], target: Duration) -> u64 {
    r.churn(live, order, 1);
    let mut rounds = 1u64;
    loop {
        let d = r.churn(live, order, rounds);
        if d >= target / 8 || rounds >= 1 << 40 {
            let scaled = rounds as u128 * target.as_nanos() / d.as_nanos().max(1);
            return scaled.clamp(1, u64::MAX as u128) as u64;
        }
        rounds *= 4;
    }
}

/// Build every contender in `kinds` for `size`; contenders that cannot be
/// built (tcmalloc missing) are reported in `notes` and left out.
fn runners(kinds: &[Kind], size: usize, notes: &mut Vec<String>) -> Vec<(Kind, Box<dyn Runner>)> {
    let mut out = Vec::new();
    for &k in kinds {
        match build(k, size) {
            Ok(r) => out.push((k, r)),
            Err(e) => {
                let note = format!("{}: {e:#}", k.label());
                if !notes.contains(&note) {
                    notes.push(note);
                }
            }
        }
    }
    out
}

/// Workload 1 for every size and shape.
pub fn churn(plan: &Plan, kinds: &[Kind], notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for size in CHURN_SIZES {
        let rs = runners(kinds, size, notes);
        for (live, random) in CHURN_SHAPES {
            let order = free_order(live, random);
            let rounds: Vec<u64> = rs
                .iter()
                .map(|(_, r)| calibrate(r.as_ref(), live, &order, plan.target))
                .collect();
            let mut samples = vec![Vec::new(); rs.len()];
            for run in 0..plan.runs {
                for j in 0..rs.len() {
                    let i = (j + run) % rs.len();
                    let d = rs[i].1.churn(live, &order, rounds[i]);
                    samples[i].push(ns_per(d, rounds[i] * live as u64 * 2));
                }
            }
            let cells = rs
                .iter()
                .zip(&samples)
                .filter_map(|((k, _), s)| Summary::of(s).map(|s| (*k, s)))
                .collect();
            let internals = rs
                .iter()
                .zip(&rounds)
                .find(|((k, _), _)| *k == Kind::Slabscope)
                .and_then(|((_, r), &n)| internals(r.as_ref(), live, &order, n));
            eprintln!(
                "  churn {size} B, {live} live, {}: done",
                order_name(random)
            );
            rows.push(Row {
                size,
                live,
                random,
                cells,
                internals,
            });
        }
    }
    Ok(rows)
}

/// Workload 2: 64 B and 4 KiB objects, 256 per batch; ns per operation of
/// wall time (two operations per object: its allocation and its free).
pub fn prodcons(plan: &Plan, kinds: &[Kind], notes: &mut Vec<String>) -> Result<Vec<Row>> {
    const BATCH: usize = 256;
    let mut rows = Vec::new();
    for size in [64, 4096] {
        let rs = runners(kinds, size, notes);
        // One unmeasured pass each to warm up, which also sizes each
        // contender's measurement to about `plan.target` (some take 100×
        // longer than others), between 16 batches and `prodcons_objects`.
        let objects: Vec<usize> = rs
            .iter()
            .map(|(_, r)| {
                let n = BATCH * 16;
                let d = r.prodcons(n, BATCH, plan.pair);
                let scaled = n as u128 * plan.target.as_nanos() / d.as_nanos().max(1);
                (scaled as usize).clamp(n, plan.prodcons_objects.max(n))
            })
            .collect();
        let mut samples = vec![Vec::new(); rs.len()];
        for run in 0..plan.runs {
            for j in 0..rs.len() {
                let i = (j + run) % rs.len();
                let d = rs[i].1.prodcons(objects[i], BATCH, plan.pair);
                samples[i].push(ns_per(d, objects[i] as u64 * 2));
            }
        }
        let cells = rs
            .iter()
            .zip(&samples)
            .filter_map(|((k, _), s)| Summary::of(s).map(|s| (*k, s)))
            .collect();
        eprintln!("  producer/consumer {size} B: done");
        rows.push(Row {
            size,
            live: BATCH,
            random: false,
            cells,
            internals: None,
        });
    }
    Ok(rows)
}

pub fn order_name(random: bool) -> &'static str {
    if random { "random" } else { "LIFO" }
}
