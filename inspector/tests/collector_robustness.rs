//! The collector when things around it change: the target killed while it
//! fires, the traced executable restarted under `--exe`, two collectors on
//! one target, and a new cache at a destroyed cache's address. Attaching
//! needs root; every test skips loudly without it.

mod collector_support;

use std::{collections::BTreeMap, sync::mpsc::Receiver, thread::sleep, time::Duration};

use collector_support::{Fixture, Report, last_sample, opts, root_or_skip, until, until_closed};
use serde::Deserialize;
use slabscope_inspector::{
    app::State,
    collector::{self, CollectorHandle, CollectorOptions, Target},
    sample::{Sample, Update},
};
use slabscope_probes::CacheCounters;
use slabscope_probes::stats::CacheStats;

fn attach(target: Target) -> (Receiver<Update>, CollectorHandle) {
    let what = format!("{target:?}");
    collector::spawn(target, opts(None)).unwrap_or_else(|e| panic!("attaching to {what}: {e}"))
}

fn event_count(updates: &[Update], pid: u32) -> usize {
    updates
        .iter()
        .filter(|u| matches!(u, Update::Event(e) if e.pid == pid))
        .count()
}

fn without_time(mut c: CacheCounters) -> CacheCounters {
    c.last_ns = 0;
    c
}

/// The caches of `pid` in `sample` are exactly what the fixture reported.
fn assert_sample_is_report(sample: &Sample, pid: u32, report: &Report, who: &str) {
    let mine: BTreeMap<u64, _> = sample
        .caches
        .iter()
        .filter(|c| c.pid == pid)
        .map(|c| (c.snapshot.cache_id, c))
        .collect();
    assert_eq!(
        mine.keys().collect::<Vec<_>>(),
        report.snapshots.keys().collect::<Vec<_>>(),
        "{who}: caches of pid {pid}"
    );
    for (id, c) in mine {
        assert_eq!(
            format!("{:?}", c.snapshot),
            report.snapshots[&id],
            "{who}: snapshot of {id:#x}"
        );
        assert_eq!(
            format!("{:?}", without_time(c.counters)),
            report.counters[&id],
            "{who}: counters of {id:#x}"
        );
        assert_eq!(c.destroyed, report.destroyed[&id], "{who}: mark of {id:#x}");
    }
}

#[test]
fn a_target_killed_while_firing_ends_with_a_final_exact_sample() {
    if !root_or_skip("a_target_killed_while_firing_ends_with_a_final_exact_sample") {
        return;
    }
    // Far more hits than it can fire before the kill.
    let mut fixture = Fixture::start(&["burst", "50000000"]);
    let pid = fixture.pid();
    let (rx, handle) = attach(Target::Pid(pid));
    fixture.release();
    let mut updates = until(&rx, |u| matches!(u, Update::Event(e) if e.pid == pid));
    sleep(Duration::from_millis(200));
    fixture.kill();
    updates.extend(until_closed(&rx));
    drop(handle);

    assert_eq!(
        updates.last(),
        Some(&Update::TargetExited { pid }),
        "the last update must say the target exited"
    );
    assert!(
        matches!(updates[updates.len() - 2], Update::Sample(_)),
        "a final sample comes right before the exit"
    );
    let sample = last_sample(&updates);
    assert_eq!(sample.caches.len(), 1, "{:?}", sample.caches);
    let c = &sample.caches[0];
    assert_eq!(c.pid, pid);
    assert_eq!(c.counters.creates, 1);
    assert!(c.counters.stats > 0, "no cache_stats hit before the kill");
    // burst sets obj_alloc = i before hit i: the last snapshot and the
    // counters agree on how far the target got before it died.
    assert_eq!(c.snapshot.obj_alloc + 1, c.counters.stats);
    // Every hit is either delivered or counted as lost.
    assert_eq!(
        sample.events_total + sample.lost_events,
        c.counters.creates + c.counters.stats,
        "hits delivered + lost != hits counted"
    );
    assert_eq!(event_count(&updates, pid) as u64, sample.events_total);

    // The views keep the last state and mark the process exited.
    let mut state = State::new(format!("pid {pid}"));
    for u in updates {
        state.apply(u);
    }
    state.disconnected();
    assert!(state.exited(pid));
    assert_eq!(
        state.status(),
        format!("pid {pid}: exited (collector stopped)")
    );
}

#[test]
fn exe_mode_attaches_a_restarted_target_and_marks_the_old_one_exited() {
    if !root_or_skip("exe_mode_attaches_a_restarted_target_and_marks_the_old_one_exited") {
        return;
    }
    // A private copy: other tests run the fixture at the same time, and
    // --exe would see their processes too.
    let exe = std::env::temp_dir().join(format!("slabscope-restart-{}", std::process::id()));
    std::fs::copy(collector_support::fixture(), &exe).expect("copying the fixture");
    let (rx, handle) = attach(Target::Exe(exe.clone()));
    let mut state = State::new("probe_fixture");
    let mut all = Vec::new();
    let mut take = |updates: Vec<Update>, state: &mut State| {
        for u in &updates {
            state.apply(u.clone());
        }
        all.extend(updates.clone());
        updates
    };

    let first = Fixture::start_program(exe.clone(), &["script"]);
    let old = first.pid();
    take(
        until(&rx, |u| *u == Update::TargetAttached { pid: old }),
        &mut state,
    );
    let old_report = first.go();
    take(
        until(&rx, |u| *u == Update::TargetExited { pid: old }),
        &mut state,
    );
    assert!(state.exited(old));

    // The same executable again: a new process.
    let second = Fixture::start_program(exe.clone(), &["script"]);
    let new = second.pid();
    assert_ne!(new, old);
    take(
        until(&rx, |u| *u == Update::TargetAttached { pid: new }),
        &mut state,
    );
    assert!(state.exited(old), "the old process stays marked exited");
    assert!(!state.exited(new), "the new process is running");
    assert_eq!(state.status(), "probe_fixture: 1 running, 1 exited");
    let new_report = second.go();
    take(
        until(&rx, |u| *u == Update::TargetExited { pid: new }),
        &mut state,
    );
    let tail = take(until(&rx, |u| matches!(u, Update::Sample(_))), &mut state);
    handle.stop();
    let _ = std::fs::remove_file(&exe);

    assert!(event_count(&all, new) > 0, "no event of the new process");
    let sample = last_sample(&tail);
    assert_sample_is_report(&sample, new, &new_report, "restarted process");
    assert_sample_is_report(&sample, old, &old_report, "first process");
    assert!(state.exited(new) && state.exited(old));
}

#[test]
fn two_collectors_on_one_target_both_count_exactly_and_detach_alone() {
    if !root_or_skip("two_collectors_on_one_target_both_count_exactly_and_detach_alone") {
        return;
    }
    let fixture = Fixture::start(&["script"]);
    let pid = fixture.pid();
    let (rx_a, a) = attach(Target::Pid(pid));
    let (rx_b, b) = attach(Target::Pid(pid));
    let report = fixture.go();
    let (ua, ub) = (until_closed(&rx_a), until_closed(&rx_b));
    drop((a, b));
    for (who, updates) in [("first collector", &ua), ("second collector", &ub)] {
        let sample = last_sample(updates);
        assert_sample_is_report(&sample, pid, &report, who);
        assert_eq!(sample.lost_events, 0, "{who}");
        assert_eq!(sample.events_total, report.fired, "{who}");
        assert_eq!(event_count(updates, pid) as u64, report.fired, "{who}");
    }

    // One detaches before the target fires: the other misses nothing.
    let fixture = Fixture::start(&["script"]);
    let pid = fixture.pid();
    let (rx_a, a) = attach(Target::Pid(pid));
    let (rx_b, b) = attach(Target::Pid(pid));
    a.stop();
    let report = fixture.go();
    let ua = until_closed(&rx_a);
    let ub = until_closed(&rx_b);
    drop(b);
    assert_eq!(event_count(&ua, pid), 0, "the stopped collector saw events");
    let sample = last_sample(&ub);
    assert_sample_is_report(&sample, pid, &report, "remaining collector");
    assert_eq!(sample.events_total, report.fired);
    assert_eq!(ub.last(), Some(&Update::TargetExited { pid }));
}

/// What the `recreate` example prints.
#[derive(Debug, Deserialize)]
struct Recreated {
    id: u64,
    rounds: u64,
    #[serde(rename = "final")]
    final_stats: CacheStats,
}

#[test]
fn a_cache_created_at_a_destroyed_caches_address_starts_from_zero() {
    if !root_or_skip("a_cache_created_at_a_destroyed_caches_address_starts_from_zero") {
        return;
    }
    let program = Fixture::start_program(collector_support::recreate(), &[]);
    let pid = program.pid();
    let (rx, handle) = attach(Target::Pid(pid));
    let output = program.go_raw();
    let r: Recreated = serde_json::from_str(output.trim())
        .unwrap_or_else(|e| panic!("recreate printed no report ({e}):\n{output}"));
    let updates = until_closed(&rx);
    drop(handle);
    assert!(r.rounds >= 1);

    let sample = last_sample(&updates);
    let c = sample
        .caches
        .iter()
        .find(|c| c.snapshot.cache_id == r.id)
        .unwrap_or_else(|| panic!("cache {:#x} not seen: {:?}", r.id, sample.caches));
    // Earlier caches at this address were created and destroyed; none of
    // that may show in the new cache's counters.
    let s = &r.final_stats;
    let want = CacheCounters {
        creates: 1,
        grows: s.slab_create + s.slab_fail,
        grows_done: s.slab_create,
        grow_failures: s.slab_fail,
        deadlocks: s.obj_deadlock,
        stats: 1,
        ..CacheCounters::default()
    };
    let mut got = without_time(c.counters);
    // Emergency objects only appear when a grow outlasts its timeout.
    got.emergency_allocs = 0;
    assert_eq!(got, want, "counters of the reused id {:#x}", r.id);
    assert!(!c.destroyed, "the live cache is marked destroyed");
    assert_eq!(
        c.snapshot,
        s.to_snapshot(),
        "last snapshot of the new cache"
    );
    // The events still tell the whole story: every incarnation's create.
    let creates = updates
        .iter()
        .filter(|u| {
            matches!(u, Update::Event(e) if e.cache_id == r.id
                && e.kind == slabscope_probes::ProbeKind::CacheCreate as u32)
        })
        .count() as u64;
    assert!(
        creates >= 2,
        "only {creates} cache_create events at {:#x}",
        r.id
    );
}

#[test]
fn lost_events_are_shown_in_the_live_view() {
    if !root_or_skip("lost_events_are_shown_in_the_live_view") {
        return;
    }
    let fixture = Fixture::start(&["burst", "20000"]);
    let pid = fixture.pid();
    let (rx, handle) = collector::spawn(
        Target::Pid(pid),
        CollectorOptions {
            interval: Duration::from_millis(100),
            ring_bytes: Some(4096),
        },
    )
    .expect("attaching with a 4 KiB ring");
    let report = fixture.go();
    let updates = until_closed(&rx);
    drop(handle);
    let sample = last_sample(&updates);
    assert!(sample.lost_events > 0, "a 4 KiB ring cannot hold the burst");
    assert_eq!(sample.lost_events + sample.events_total, report.fired);

    let mut state = State::new(format!("pid {pid}"));
    for u in updates {
        state.apply(u);
    }
    state.disconnected();
    assert_eq!(state.lost_events, sample.lost_events);
    let text = collector_support::screen(&state, 160, 40);
    let lost = sample.lost_events;
    assert!(text.contains(&format!("lost: {lost}")), "summary:\n{text}");
    assert!(
        text.contains(&format!("{lost} lost")),
        "event log title:\n{text}"
    );
}
