//! A collector whose map reads start failing after it attached reports
//! [`Update::Failed`], stops and detaches, and the views show the failure.
//!
//! The failure is real, not simulated in the product: the test finds the
//! `COUNTERS` map's file descriptor in its own process (`/proc/self/fdinfo`)
//! and replaces it with `/dev/null` under the running collector, so the next
//! `bpf(BPF_MAP_GET_NEXT_KEY)` fails as it would if the map went bad. This
//! file holds a single test: no other collector may share the process.
//! Needs root; skips loudly without it.

mod collector_support;

use std::{
    fs,
    os::fd::AsRawFd as _,
    sync::mpsc::{self, RecvTimeoutError},
    time::{Duration, Instant},
};

use collector_support::{Fixture, root_or_skip};
use slabscope_inspector::{
    app::State,
    collector::{self, CollectorOptions, Target},
    output::{self, OutputError},
    sample::Update,
};
use slabscope_probes::{CacheCounters, CacheKey};

/// Descriptors of this process that are hash maps with `COUNTERS`' key and
/// value sizes.
fn counters_map_fds() -> Vec<i32> {
    let mut fds = Vec::new();
    for entry in fs::read_dir("/proc/self/fdinfo").expect("listing /proc/self/fdinfo") {
        let entry = entry.expect("fdinfo entry");
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(info) = fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<usize>().ok())
        };
        if field("map_type:") == Some(1) // BPF_MAP_TYPE_HASH
            && field("key_size:") == Some(size_of::<CacheKey>())
            && field("value_size:") == Some(size_of::<CacheCounters>())
        {
            fds.push(fd);
        }
    }
    fds
}

#[test]
fn a_map_failing_after_attach_is_reported_and_shown() {
    if !root_or_skip("a_map_failing_after_attach_is_reported_and_shown") {
        return;
    }
    let fixture = Fixture::start(&["script"]);
    let pid = fixture.pid();
    assert!(
        counters_map_fds().is_empty(),
        "a map is open before attaching"
    );
    let (rx, handle) = collector::spawn(
        Target::Pid(pid),
        CollectorOptions {
            interval: Duration::from_millis(50),
            ring_bytes: None,
        },
    )
    .expect("attaching");
    let fds = counters_map_fds();
    assert_eq!(
        fds.len(),
        1,
        "expected one COUNTERS map descriptor: {fds:?}"
    );

    // Healthy first.
    let first = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a first sample");
    assert!(matches!(first, Update::Sample(_)), "{first:?}");

    let null = fs::File::open("/dev/null").expect("opening /dev/null");
    // SAFETY: both descriptors are open; dup2 atomically replaces the map's
    // descriptor, which the collector keeps using, by /dev/null's.
    let rc = unsafe { libc::dup2(null.as_raw_fd(), fds[0]) };
    assert_eq!(rc, fds[0], "dup2: {}", std::io::Error::last_os_error());

    let start = Instant::now();
    let mut updates = vec![first];
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(u) => updates.push(u),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => assert!(
                start.elapsed() < Duration::from_secs(10),
                "the collector neither failed nor stopped: {updates:?}"
            ),
        }
    }
    let Some(Update::Failed(msg)) = updates.last().cloned() else {
        panic!("the last update is not Failed: {:?}", updates.last());
    };
    assert!(msg.contains("eBPF map COUNTERS"), "{msg}");
    drop(handle);

    // The collector detached when it stopped: the target runs unobserved.
    assert!(fixture.go().fired > 0);

    // The live view says so in its status line ...
    let mut state = State::new(format!("pid {pid}"));
    for u in &updates {
        state.apply(u.clone());
    }
    state.disconnected();
    assert_eq!(state.status(), format!("collector failed: {msg}"));
    let text = collector_support::screen(&state, 200, 40);
    assert!(
        text.contains("collector failed: eBPF map COUNTERS"),
        "the title bar shows the failure:\n{text}"
    );
    // ... and --once / --json fail with the message instead of printing.
    let (tx, rx) = mpsc::channel();
    for u in updates {
        tx.send(u).unwrap();
    }
    drop(tx);
    match output::wait_for_caches(&rx, Duration::from_secs(5)) {
        Err(OutputError::Failed(m)) => assert_eq!(m, msg),
        other => panic!("expected the failure, got {other:?}"),
    }
}
