//! The final proof: the collector against the real allocator. The workload
//! (`allocator/examples/workload.rs`) runs a fixed script with forced grows,
//! deadlocks and emergency objects, and reports its own counts and final
//! statistics; every transition count the collector gathered must equal the
//! workload's, and every live cache's last snapshot must equal its final
//! statistics. Needs root; skips loudly without it.

mod collector_support;

use std::{collections::BTreeMap, sync::mpsc::RecvTimeoutError, time::Duration};

use collector_support::{Fixture, root_or_skip};
use serde::Deserialize;
use slabscope_inspector::{
    collector::{self, CollectorOptions, Target},
    sample::{Sample, Update},
};
use slabscope_probes::stats::CacheStats;
use slabscope_probes::{CacheCounters, Event, ProbeKind};

/// `CacheCounters` without `last_ns`, as the workload reports them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Counters {
    creates: u64,
    destroys: u64,
    grows: u64,
    grows_done: u64,
    grow_failures: u64,
    deadlocks: u64,
    emergency_allocs: u64,
    emergency_frees: u64,
    reaps: u64,
    reap_slabs_released: u64,
    reap_objs_released: u64,
    slab_reclaims: u64,
    slabs_released: u64,
    objs_released: u64,
    stats: u64,
}

impl Counters {
    fn to_probe_counters(&self) -> CacheCounters {
        CacheCounters {
            creates: self.creates,
            destroys: self.destroys,
            grows: self.grows,
            grows_done: self.grows_done,
            grow_failures: self.grow_failures,
            deadlocks: self.deadlocks,
            emergency_allocs: self.emergency_allocs,
            emergency_frees: self.emergency_frees,
            reaps: self.reaps,
            reap_slabs_released: self.reap_slabs_released,
            reap_objs_released: self.reap_objs_released,
            slab_reclaims: self.slab_reclaims,
            slabs_released: self.slabs_released,
            objs_released: self.objs_released,
            stats: self.stats,
            last_ns: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Expected {
    id: u64,
    name: String,
    destroyed: bool,
    counters: Counters,
}

#[derive(Debug, Deserialize)]
struct Report {
    #[serde(rename = "final")]
    final_stats: Vec<CacheStats>,
    expected: Vec<Expected>,
}

fn hits(c: &CacheCounters) -> u64 {
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

#[test]
fn collector_counts_equal_the_workloads_own() {
    if !root_or_skip("collector_counts_equal_the_workloads_own") {
        return;
    }
    let workload = Fixture::start_program(collector_support::workload(), &[]);
    let pid = workload.pid();
    let (rx, handle) = collector::spawn(
        Target::Pid(pid),
        CollectorOptions {
            interval: Duration::from_millis(200),
            ring_bytes: None,
        },
    )
    .expect("attaching to the workload");
    let output = workload.go_raw();
    let report: Report = serde_json::from_str(output.trim())
        .unwrap_or_else(|e| panic!("workload output is not its JSON report ({e}):\n{output}"));

    let mut updates = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(u) => updates.push(u),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("the collector did not finish"),
        }
    }
    drop(handle);
    assert_eq!(updates.last(), Some(&Update::TargetExited { pid }));
    let sample: Sample = updates
        .iter()
        .rev()
        .find_map(|u| match u {
            Update::Sample(s) => Some(s.clone()),
            _ => None,
        })
        .expect("no sample");
    let events: Vec<Event> = updates
        .iter()
        .filter_map(|u| match u {
            Update::Event(e) => Some(*e),
            _ => None,
        })
        .collect();
    assert_eq!(sample.lost_events, 0);

    let got: BTreeMap<u64, _> = sample
        .caches
        .iter()
        .map(|c| (c.snapshot.cache_id, c))
        .collect();
    assert_eq!(got.len(), report.expected.len(), "caches seen: {got:?}");
    let mut total_hits = 0;
    for want in &report.expected {
        let state = got
            .get(&want.id)
            .unwrap_or_else(|| panic!("cache {} ({:#x}) was not seen", want.name, want.id));
        assert_eq!(state.pid, pid);
        let mut counters = state.counters;
        counters.last_ns = 0;
        assert_eq!(
            counters,
            want.counters.to_probe_counters(),
            "transition counts of {}",
            want.name
        );
        assert_eq!(
            state.destroyed, want.destroyed,
            "destroyed mark of {}",
            want.name
        );
        assert_eq!(
            slabscope_probes::name_bytes(&state.snapshot.name),
            want.name.as_bytes()
        );
        let mine = events.iter().filter(|e| e.cache_id == want.id);
        assert_eq!(
            mine.clone().count() as u64,
            hits(&counters),
            "events of {}",
            want.name
        );
        let deadlocks = mine
            .filter(|e| e.kind == ProbeKind::Deadlock as u32)
            .count() as u64;
        assert_eq!(deadlocks, counters.deadlocks);
        total_hits += hits(&counters);
    }
    assert_eq!(sample.events_total, total_hits);
    assert_eq!(events.len() as u64, total_hits);

    // The script forces what the issue asks for.
    let all = |f: fn(&CacheCounters) -> u64| got.values().map(|c| f(&c.counters)).sum::<u64>();
    assert!(all(|c| c.grows_done) > 0, "no grow");
    assert!(all(|c| c.deadlocks) > 0, "no deadlock");
    assert!(all(|c| c.emergency_allocs) > 0, "no emergency object");
    assert!(all(|c| c.destroys) == 1, "no destroyed cache");

    // Last snapshot of each live cache == the statistics publish() fired last.
    assert!(!report.final_stats.is_empty());
    for stats in &report.final_stats {
        let state = got[&stats.id];
        assert_eq!(
            state.snapshot,
            stats.to_snapshot(),
            "last snapshot of {} differs from its final statistics",
            stats.name
        );
    }
}
