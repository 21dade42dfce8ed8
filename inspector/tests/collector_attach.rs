//! The collector against the probe fixture: exact counts, exact last
//! snapshots, lost-event accounting with a tiny ring, exit handling, `--exe`
//! mode. Attaching needs root; those tests skip loudly without it.

mod collector_support;

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
};

use collector_support::{
    Fixture, events, last_sample, opts, root_or_skip, until, until_closed, wait_for_code_of,
};
use slabscope_inspector::{
    collector::{self, CollectError, Target},
    sample::Update,
};
use slabscope_probes::{CacheCounters, Event, ProbeKind};

fn without_time(mut c: CacheCounters) -> CacheCounters {
    c.last_ns = 0;
    c
}

/// Events of one cache, counted the way CacheCounters counts hits.
fn count_events(events: &[&Event]) -> CacheCounters {
    let mut c = CacheCounters::default();
    for e in events {
        match ProbeKind::from_u32(e.kind).expect("event kind") {
            ProbeKind::CacheCreate => c.creates += 1,
            ProbeKind::CacheDestroy => c.destroys += 1,
            ProbeKind::GrowStart => c.grows += 1,
            ProbeKind::GrowDone if e.values[0] == 0 => c.grows_done += 1,
            ProbeKind::GrowDone => c.grow_failures += 1,
            ProbeKind::Deadlock => c.deadlocks += 1,
            ProbeKind::EmergencyAlloc => c.emergency_allocs += 1,
            ProbeKind::EmergencyFree => c.emergency_frees += 1,
            ProbeKind::Reap => {
                c.reaps += 1;
                c.reap_slabs_released += e.values[0];
                c.reap_objs_released += e.values[1];
            }
            ProbeKind::SlabReclaim => {
                c.slab_reclaims += 1;
                c.slabs_released += e.values[0];
                c.objs_released += e.values[1];
            }
            ProbeKind::CacheStats => c.stats += 1,
        }
    }
    c
}

#[test]
fn counts_and_last_snapshots_equal_what_the_fixture_fired() {
    if !root_or_skip("counts_and_last_snapshots_equal_what_the_fixture_fired") {
        return;
    }
    let fixture = Fixture::start(&["script"]);
    let pid = fixture.pid();
    let (rx, handle) = collector::spawn(Target::Pid(pid), opts(None)).expect("attaching");
    assert!(handle.sites() >= slabscope_probes::PROBES.len());
    let report = fixture.go();
    let updates = until_closed(&rx);
    drop(handle);

    assert_eq!(
        updates.last(),
        Some(&Update::TargetExited { pid }),
        "the last update must say the target exited"
    );
    let sample = last_sample(&updates);
    assert_eq!(sample.lost_events, 0);
    assert_eq!(sample.events_total, report.fired);

    let got: BTreeMap<u64, _> = sample
        .caches
        .iter()
        .map(|c| {
            assert_eq!(c.pid, pid);
            (c.snapshot.cache_id, c)
        })
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        report.snapshots.keys().collect::<Vec<_>>()
    );
    let evs = events(&updates);
    assert_eq!(evs.len() as u64, report.fired);
    for (id, state) in &got {
        assert_eq!(
            format!("{:?}", state.snapshot),
            report.snapshots[id],
            "snapshot of {id:#x}"
        );
        assert_eq!(
            format!("{:?}", without_time(state.counters)),
            report.counters[id],
            "counters of {id:#x}"
        );
        assert_ne!(state.counters.last_ns, 0);
        assert_eq!(
            state.destroyed, report.destroyed[id],
            "destroyed mark of {id:#x}"
        );

        let mine: Vec<&Event> = evs.iter().filter(|e| e.cache_id == *id).collect();
        assert_eq!(
            without_time(count_events(&mine)),
            without_time(state.counters),
            "events of {id:#x} disagree with its counters"
        );
        for e in &mine {
            assert_eq!(e.pid, pid);
            assert_eq!(e.name, state.snapshot.name, "event name of {id:#x}");
        }
        // Every decoded scalar, including the hand-written sites' immediates,
        // memory operands and sub-register sizes.
        let decoded: Vec<(u32, String)> = mine
            .iter()
            .map(|e| (e.kind, format!("{:?}", e.values)))
            .collect();
        assert_eq!(decoded, report.hits[id], "probe values of {id:#x}");
    }
    // Hits never overlap (the worker thread is joined): ring order is firing order.
    assert!(evs.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
    assert_eq!(
        ProbeKind::from_u32(evs[0].kind),
        Some(ProbeKind::CacheCreate)
    );
    let failed: Vec<i64> = evs
        .iter()
        .filter(|e| e.kind == ProbeKind::GrowDone as u32 && e.values[0] != 0)
        .map(|e| e.values[0] as i64)
        .collect();
    // -ENOMEM from the fixture's failed grows, and -56 from the hand-written
    // grow_done site's signed-byte immediate.
    assert!(
        failed.contains(&-12) && failed.iter().all(|&r| r == -12 || r == -56),
        "{failed:?}"
    );
}

#[test]
fn a_tiny_ring_counts_every_event_it_could_not_deliver() {
    if !root_or_skip("a_tiny_ring_counts_every_event_it_could_not_deliver") {
        return;
    }
    let fixture = Fixture::start(&["burst", "20000"]);
    let pid = fixture.pid();
    let (rx, _handle) =
        collector::spawn(Target::Pid(pid), opts(Some(4096))).expect("attaching with a 4 KiB ring");
    let report = fixture.go();
    let updates = until_closed(&rx);
    let sample = last_sample(&updates);
    let delivered = events(&updates).len() as u64;
    assert_eq!(sample.events_total, delivered);
    assert!(
        sample.lost_events > 0,
        "a 4 KiB ring cannot hold a burst of {}",
        report.fired
    );
    assert_eq!(
        sample.lost_events,
        report.fired - delivered,
        "lost = fired - delivered"
    );
    // The counters live in maps, not in the ring: they stay exact.
    let cache = &sample.caches[0];
    assert_eq!(cache.counters.stats, 20000);
    assert_eq!(cache.counters.creates, 1);
}

#[test]
fn stopping_detaches_while_the_target_runs_on() {
    if !root_or_skip("stopping_detaches_while_the_target_runs_on") {
        return;
    }
    let fixture = Fixture::start(&["script"]);
    let (rx, handle) = collector::spawn(Target::Pid(fixture.pid()), opts(None)).expect("attaching");
    handle.stop();
    let updates = until_closed(&rx);
    assert!(events(&updates).is_empty());
    // The target fires into no probes now, and runs to completion.
    let report = fixture.go();
    assert!(report.fired > 0);
}

#[test]
fn exe_mode_reports_processes_that_start_and_exit() {
    if !root_or_skip("exe_mode_reports_processes_that_start_and_exit") {
        return;
    }
    let (rx, handle) = collector::spawn(Target::Exe(collector_support::fixture()), opts(None))
        .expect("attaching to the fixture executable");
    let fixture = Fixture::start(&["script"]);
    let pid = fixture.pid();
    until(&rx, |u| *u == Update::TargetAttached { pid });
    let report = fixture.go();
    let updates = until(&rx, |u| *u == Update::TargetExited { pid });
    let mut updates = updates;
    // One more sample after the exit carries the final maps.
    updates.extend(until(&rx, |u| matches!(u, Update::Sample(_))));

    // A process that fires and exits between two scans is still reported,
    // attached before its first event and exited after its last.
    let quick = Fixture::start(&["script"]);
    let qpid = quick.pid();
    quick.go();
    let later = until(&rx, |u| *u == Update::TargetExited { pid: qpid });
    let attached_at = later
        .iter()
        .position(|u| *u == Update::TargetAttached { pid: qpid })
        .expect("the short-lived process was never reported attached");
    let first_event = later
        .iter()
        .position(|u| matches!(u, Update::Event(e) if e.pid == qpid))
        .expect("no event from the short-lived process");
    assert!(attached_at < first_event);
    handle.stop();
    let sample = last_sample(&updates);
    let mine: Vec<_> = sample.caches.iter().filter(|c| c.pid == pid).collect();
    assert_eq!(mine.len(), report.snapshots.len());
    for c in mine {
        let id = c.snapshot.cache_id;
        assert_eq!(format!("{:?}", c.snapshot), report.snapshots[&id]);
        assert_eq!(
            format!("{:?}", without_time(c.counters)),
            report.counters[&id]
        );
    }
}

#[test]
fn exe_mode_reports_a_process_that_execs_as_such() {
    if !root_or_skip("exe_mode_reports_a_process_that_execs_as_such") {
        return;
    }
    let (rx, handle) = collector::spawn(Target::Exe(collector_support::fixture()), opts(None))
        .expect("attaching to the fixture executable");
    let sleep = which_sleep();
    let fixture = Fixture::start(&["exec", &sleep, "3"]);
    let pid = fixture.pid();
    until(&rx, |u| *u == Update::TargetAttached { pid });
    // Fires, reports, execs sleep and waits for it to end.
    fixture.go();
    let updates = until(
        &rx,
        |u| matches!(u, Update::TargetExeced { pid: p, .. } | Update::TargetExited { pid: p } if *p == pid),
    );
    handle.stop();
    match updates.last() {
        Some(Update::TargetExeced { program, .. }) => {
            assert!(program.ends_with("/sleep"), "{program}")
        }
        other => panic!("pid {pid} was reported {other:?}, not as an exec"),
    }
}

/// The path of `sleep`.
fn which_sleep() -> String {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("sleep"))
        .find(|p| p.is_file())
        .expect("sleep is on PATH")
        .display()
        .to_string()
}

#[test]
fn a_missing_pid_is_reported() {
    let err = collector::spawn(Target::Pid(4_194_305), opts(None)).unwrap_err();
    assert!(
        matches!(err, CollectError::NoSuchProcess { pid: 4_194_305 }),
        "{err}"
    );
}

#[test]
fn a_process_without_probes_names_the_files_searched() {
    let mut sleeper = Command::new("sleep")
        .arg("30")
        .stdout(Stdio::null())
        .spawn()
        .expect("starting sleep");
    // A shared object must be there to be searched.
    wait_for_code_of(sleeper.id(), ".so", std::time::Duration::from_secs(10));
    let err = collector::spawn(Target::Pid(sleeper.id()), opts(None)).unwrap_err();
    sleeper.kill().ok();
    sleeper.wait().ok();
    match &err {
        CollectError::NoProbes { searched } => {
            assert!(
                searched
                    .iter()
                    .any(|p| p.to_string_lossy().contains("sleep")),
                "{searched:?}"
            );
            assert!(err.to_string().contains("sleep"), "{err}");
            // Shared objects are searched too (a C program may carry the
            // probes in libslabscope.so).
            assert!(
                searched.iter().any(|p| p.to_string_lossy().contains(".so")),
                "{searched:?}"
            );
        }
        other => panic!("expected NoProbes, got {other}"),
    }
}

#[test]
fn bad_options_are_rejected_before_attaching() {
    let err = collector::spawn(Target::Pid(std::process::id()), opts(Some(5000))).unwrap_err();
    assert!(matches!(err, CollectError::BadOption(_)), "{err}");
    assert!(err.to_string().contains("power of two"), "{err}");
}

#[test]
fn list_traceable_finds_a_running_fixture() {
    let fixture = Fixture::start(&["script"]);
    let pid = fixture.pid();
    let list = collector::list_traceable().expect("scanning /proc");
    let exe = std::fs::canonicalize(collector_support::fixture()).unwrap();
    assert!(
        list.iter()
            .any(|(p, path)| *p == pid && std::fs::canonicalize(path).ok() == Some(exe.clone())),
        "pid {pid} running {} is not in {list:?}",
        exe.display()
    );
    // Our own test binary carries no probes.
    assert!(!list.iter().any(|(p, _)| *p == std::process::id()));
    fixture.go();
}
