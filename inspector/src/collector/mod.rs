//! The collector: attaches slabscope's eBPF programs to the USDT probes of a
//! running process and turns what they record into [`Update`]s.
//!
//! ```text
//!  target ──► files with probes ──► .note.stapsdt sites ──► uprobes (cookie = spec id)
//!                                                              │ eBPF
//!  views ◄── mpsc<Update> ◄── collector thread ◄── ring buffer + per-cache maps
//! ```
//!
//! [`spawn`] resolves the target ([`target`]), parses each file's probe sites
//! ([`stapsdt`], [`argspec`]), loads and attaches the eBPF programs, and
//! starts a thread that
//!
//! - forwards every ring-buffer record as [`Update::Event`], in order;
//! - every `interval`, reads the per-cache maps (last snapshot, transition
//!   counters, destroyed mark), the timing histograms and the lost-event
//!   counter into an [`Update::Sample`];
//! - reports [`Update::TargetExited`] when a traced process goes away, or
//!   [`Update::TargetExeced`] when it replaces its program with `exec` (and,
//!   with [`Target::Pid`], then sends a last sample and stops), and
//!   [`Update::TargetAttached`] when a process starts running the traced
//!   executable ([`Target::Exe`]).
//!
//! If reading the maps or the ring buffer fails after attaching, the thread
//! sends [`Update::Failed`] with the error and stops (detaching), rather than
//! keep sending samples it cannot vouch for.
//!
//! The counters live in the kernel, so they are exact even when the ring
//! buffer overflows: events can be lost (and are counted in
//! [`Sample::lost_events`]), counts cannot. A probe hit whose snapshot
//! pointer cannot be read is counted in [`Sample::unreadable_snapshots`] and
//! otherwise ignored: it names no cache anyone could show. The thread ends when
//! [`CollectorHandle::stop`] is called, the handle is dropped, the receiver
//! is dropped, or the traced pid exits; the uprobes are detached when it ends.

pub mod argspec;
mod attach;
pub mod code;
mod error;
mod needed;
pub mod stapsdt;
pub mod target;

use std::{
    collections::{BTreeMap, BTreeSet},
    num::NonZeroU32,
    os::fd::AsRawFd as _,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, Receiver, Sender},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

pub use attach::{Scope, check_ring_bytes, plan, program_name};
// `slabscope serve` runs its own sessions, one per file (src/serve/files.rs).
pub use attach::{Session, attach as attach_sites};
pub use error::CollectError;
use slabscope_probes::{
    CacheCounters, CacheKey, CacheSnapshot, Event, HistKey, LOST_EVENTS, LOST_SNAPSHOTS,
    Log2Histogram,
};
pub use target::{ProbeFile, list_traceable};

use crate::sample::{CacheState, Sample, Update};

/// Default size of the event ring buffer.
pub const DEFAULT_RING_BYTES: u32 = 1 << 20;

/// What to trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One running process, with every shared object it maps.
    Pid(u32),
    /// Every process running this file, now or later.
    Exe(PathBuf),
}

/// How to collect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CollectorOptions {
    /// Time between two [`Update::Sample`]s.
    pub interval: Duration,
    /// Size of the event ring buffer in bytes: a power of two of at least a
    /// page. `None` means [`DEFAULT_RING_BYTES`].
    pub ring_bytes: Option<u32>,
}

impl Default for CollectorOptions {
    fn default() -> Self {
        CollectorOptions {
            interval: Duration::from_secs(1),
            ring_bytes: None,
        }
    }
}

/// A running collector. Stopping it (or dropping it) detaches every uprobe.
#[derive(Debug)]
pub struct CollectorHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    files: Vec<PathBuf>,
    sites: usize,
}

impl CollectorHandle {
    /// Stops the collector thread and detaches.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// The files whose probes are attached.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Number of probe sites attached.
    pub fn sites(&self) -> usize {
        self.sites
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for CollectorHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Attaches to `target` and starts collecting. Returns once every probe site
/// is attached, so a workload released after this returns is fully traced.
pub fn spawn(
    target: Target,
    opts: CollectorOptions,
) -> Result<(Receiver<Update>, CollectorHandle), CollectError> {
    if opts.interval.is_zero() {
        return Err(CollectError::BadOption(
            "the sampling interval must be greater than zero".into(),
        ));
    }
    let ring_bytes = check_ring_bytes(opts.ring_bytes.unwrap_or(DEFAULT_RING_BYTES))?;
    let (files, scope, mode, what) = match &target {
        Target::Pid(pid) => {
            let files = target::probe_files_of_pid(*pid)?;
            let nz = NonZeroU32::new(*pid).ok_or(CollectError::NoSuchProcess { pid: 0 })?;
            (
                files,
                Scope::Process(nz),
                Mode::Pid(*pid, target::exe_id(*pid)),
                format!("tracing pid {pid}"),
            )
        }
        Target::Exe(path) => {
            let (id, files) = target::probe_files_of_exe(path)?;
            let what = format!("tracing {}", path.display());
            // Probes outside the executable (in a library) fire in every
            // process using the library: only PATH's processes are kept.
            let only_exe = files
                .iter()
                .all(|f| target::FileId::of(&f.attach_path).is_ok_and(|f| f == id));
            (
                files,
                Scope::AllProcesses,
                Mode::Exe {
                    id,
                    pids: BTreeSet::new(),
                    seen: BTreeSet::new(),
                    foreign: BTreeSet::new(),
                    only_exe,
                },
                what,
            )
        }
    };
    let sites = plan(&files)?;
    let mut session = attach::attach(&sites, scope, ring_bytes, &what)?;
    let histograms = histograms_map(&mut session)?;
    let n_sites = session.sites;

    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let runner = Runner {
        session,
        histograms,
        tx,
        stop: Arc::clone(&stop),
        mode,
        interval: opts.interval,
        start: Instant::now(),
        events_total: 0,
    };
    let thread = std::thread::Builder::new()
        .name("slabscope-collector".into())
        .spawn(move || runner.run())
        .map_err(|source| CollectError::Io {
            path: PathBuf::from("(collector thread)"),
            source,
        })?;
    Ok((
        rx,
        CollectorHandle {
            stop,
            thread: Some(thread),
            files: files.iter().map(|f| f.path.clone()).collect(),
            sites: n_sites,
        },
    ))
}

enum Mode {
    /// The pid, and the program it ran when attached (to tell an exec).
    Pid(u32, Option<target::FileId>),
    Exe {
        id: target::FileId,
        /// Processes running the file now.
        pids: BTreeSet<u32>,
        /// Every process that ran it since attach (their caches are shown).
        seen: BTreeSet<u32>,
        /// Processes whose events came from a library they share with the
        /// file, without running it: ignored.
        foreign: BTreeSet<u32>,
        /// Every traced file is the executable, so every event is one of
        /// its processes'.
        only_exe: bool,
    },
}

/// Reads of a snapshot that the eBPF program is rewriting before it is
/// taken as it is.
const SNAPSHOT_RETRIES: usize = 8;

/// `snapshot`, read from `snapshots` under `key`, once no copy into it is
/// under way.
///
/// The eBPF program rewrites a cache's entry in place, with its
/// `cache_id` at 0 while it copies (`store_snapshot` in the eBPF crate).
/// A snapshot read then may mix two moments, so it is read again; after
/// `SNAPSHOT_RETRIES` (8) reads (a writer preempted mid-copy) it is taken as
/// it is, with its id, and the next sample has the whole one.
pub fn settled_snapshot<T: std::borrow::Borrow<aya::maps::MapData>>(
    snapshots: &aya::maps::HashMap<T, CacheKey, CacheSnapshot>,
    key: &CacheKey,
    mut snapshot: CacheSnapshot,
) -> CacheSnapshot {
    for _ in 0..SNAPSHOT_RETRIES {
        if snapshot.cache_id == key.cache_id {
            return snapshot;
        }
        std::thread::yield_now();
        match snapshots.get(key, 0) {
            Ok(again) => snapshot = again,
            // Deleted meanwhile (its process exited): the last read stands.
            Err(_) => break,
        }
    }
    snapshot.cache_id = key.cache_id;
    snapshot
}

/// How long the thread waits for ring-buffer data before checking for stop.
const POLL_SLICE: Duration = Duration::from_millis(50);

/// The eBPF program's per-CPU timing histograms.
type HistogramMap = aya::maps::PerCpuHashMap<aya::maps::MapData, HistKey, Log2Histogram>;

fn histograms_map(session: &mut attach::Session) -> Result<HistogramMap, CollectError> {
    let map = session
        .take_map("HISTOGRAMS")
        .ok_or_else(|| CollectError::Map {
            map: "HISTOGRAMS",
            source: Box::new(aya::maps::MapError::InvalidName {
                name: "HISTOGRAMS".into(),
            }),
        })?;
    HistogramMap::try_from(map).map_err(|e| CollectError::Map {
        map: "HISTOGRAMS",
        source: Box::new(e),
    })
}

struct Runner {
    session: attach::Session,
    histograms: HistogramMap,
    tx: Sender<Update>,
    stop: Arc<AtomicBool>,
    mode: Mode,
    interval: Duration,
    start: Instant,
    events_total: u64,
}

/// The receiver is gone: nobody listens any more.
struct Hangup;

/// Why the collector thread stops before it is told to.
enum Stop {
    /// The receiver is gone.
    Hangup,
    /// Reading the eBPF maps or the ring buffer failed after attaching: the
    /// data can no longer be trusted, so the collector reports
    /// [`Update::Failed`] and stops rather than send samples with holes.
    Failed(CollectError),
}

impl From<Hangup> for Stop {
    fn from(_: Hangup) -> Stop {
        Stop::Hangup
    }
}

fn map_error(map: &'static str, e: aya::maps::MapError) -> Stop {
    Stop::Failed(CollectError::Map {
        map,
        source: Box::new(e),
    })
}

impl Runner {
    fn run(mut self) {
        match self.run_inner() {
            Ok(()) => {}
            // Nothing to report to; dropping the session detaches.
            Err(Stop::Hangup) => {}
            // The views show the error; the thread ends and detaches.
            Err(Stop::Failed(e)) => {
                let _ = self.send(Update::Failed(e.to_string()));
            }
        }
    }

    fn send(&self, update: Update) -> Result<(), Hangup> {
        self.tx.send(update).map_err(|_| Hangup)
    }

    fn run_inner(&mut self) -> Result<(), Stop> {
        self.refresh_exe_pids()?;
        let mut next_sample = Instant::now() + self.interval;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            self.wait_readable(next_sample.saturating_duration_since(now).min(POLL_SLICE))?;
            self.drain()?;
            if let Mode::Pid(pid, exe) = self.mode {
                let gone = if target::has_exited(pid) {
                    Some(Update::TargetExited { pid })
                } else if exe.is_some()
                    && target::exe_id(pid).is_some_and(|now| Some(now) != exe)
                    && !target::has_exited(pid)
                {
                    // The uprobes were on the old program's files: the new
                    // one is not traced. A process that is exiting has no
                    // program for a moment before it becomes a zombie: that
                    // is not an exec.
                    Some(Update::TargetExeced {
                        pid,
                        program: target::exe_path(pid),
                    })
                } else {
                    None
                };
                if let Some(gone) = gone {
                    // Everything the process fired is in the ring by now.
                    self.drain()?;
                    let last = self.sample()?;
                    self.send(Update::Sample(last))?;
                    return Ok(self.send(gone)?);
                }
            }
            let now = Instant::now();
            if now >= next_sample {
                next_sample += self.interval;
                if next_sample < now {
                    next_sample = now + self.interval;
                }
                self.refresh_exe_pids()?;
                let sample = self.sample()?;
                self.send(Update::Sample(sample))?;
            }
        }
        Ok(())
    }

    /// Blocks until the ring buffer has data or `timeout` passes.
    fn wait_readable(&self, timeout: Duration) -> Result<(), Stop> {
        let mut pfd = libc::pollfd {
            fd: self.session.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `pfd` is one valid pollfd for the duration of the call, and
        // the ring buffer's fd stays open while `self` lives.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(Stop::Failed(CollectError::Io {
                    path: PathBuf::from("(eBPF ring buffer EVENTS)"),
                    source: err,
                }));
            }
        }
        if rc > 0 && pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
            return Err(Stop::Failed(CollectError::Io {
                path: PathBuf::from("(eBPF ring buffer EVENTS)"),
                source: std::io::Error::other("poll reports the ring buffer's fd as invalid"),
            }));
        }
        Ok(())
    }

    /// Forwards every record in the ring buffer.
    fn drain(&mut self) -> Result<(), Hangup> {
        let mut batch = Vec::new();
        while let Some(item) = self.session.ring.next() {
            if item.len() >= size_of::<Event>() {
                // SAFETY: the record holds at least one Event, written whole by
                // the eBPF program; Event is plain integers (any bit pattern
                // is valid) and read_unaligned needs no alignment.
                let ev = unsafe { item.as_ptr().cast::<Event>().read_unaligned() };
                batch.push(ev);
            }
        }
        self.events_total += batch.len() as u64;
        for ev in batch {
            // A process too short-lived for the periodic scan still shows up
            // through its events.
            if let Mode::Exe {
                id,
                pids,
                seen,
                foreign,
                only_exe,
            } = &mut self.mode
                && !pids.contains(&ev.pid)
            {
                if foreign.contains(&ev.pid) {
                    continue;
                }
                // An event from a library's probe may come from any process
                // using the library. One whose map cannot be read any more
                // is dropped: it may not have been running the file.
                if !*only_exe && target::maps_file(ev.pid, *id) != Some(true) {
                    foreign.insert(ev.pid);
                    continue;
                }
                pids.insert(ev.pid);
                seen.insert(ev.pid);
                self.send(Update::TargetAttached { pid: ev.pid })?;
            }
            self.send(Update::Event(ev))?;
        }
        Ok(())
    }

    /// With [`Target::Exe`]: reports processes that started or stopped
    /// running the file.
    fn refresh_exe_pids(&mut self) -> Result<(), Hangup> {
        let Mode::Exe { id, pids, seen, .. } = &mut self.mode else {
            return Ok(());
        };
        let id = *id;
        let Ok(now) = target::pids_mapping(id) else {
            return Ok(());
        };
        seen.extend(now.iter().copied());
        let started: Vec<u32> = now.difference(pids).copied().collect();
        let exited: Vec<u32> = pids.difference(&now).copied().collect();
        *pids = now;
        for pid in started {
            self.send(Update::TargetAttached { pid })?;
        }
        if !exited.is_empty() {
            self.drain()?;
        }
        for pid in exited {
            // Alive but running another program: it exec'd.
            let update = if !target::has_exited(pid) && target::exe_id(pid).is_some_and(|e| e != id)
            {
                Update::TargetExeced {
                    pid,
                    program: target::exe_path(pid),
                }
            } else {
                Update::TargetExited { pid }
            };
            self.send(update)?;
        }
        Ok(())
    }

    /// Reads the per-cache maps. An entry deleted while it is read is
    /// skipped (aya's iterators do that); any other failure is an error. A
    /// cache is reported only once its snapshot is in (its counters may be
    /// read a moment before it): a cache without one would have no name.
    fn sample(&self) -> Result<Sample, Stop> {
        let s = &self.session;
        let mut caches: BTreeMap<CacheKey, CacheState> = BTreeMap::new();
        for entry in &s.snapshots {
            let (key, snapshot) = entry.map_err(|e| map_error("SNAPSHOTS", e))?;
            let snapshot = settled_snapshot(&s.snapshots, &key, snapshot);
            caches.insert(
                key,
                CacheState {
                    pid: key.pid,
                    snapshot,
                    counters: CacheCounters::default(),
                    destroyed: false,
                },
            );
        }
        for entry in &s.counters {
            let (key, counters) = entry.map_err(|e| map_error("COUNTERS", e))?;
            if let Some(c) = caches.get_mut(&key) {
                c.counters = counters;
            }
        }
        for key in s.destroyed.keys() {
            let key = key.map_err(|e| map_error("DESTROYED", e))?;
            if let Some(c) = caches.get_mut(&key) {
                c.destroyed = true;
            }
        }
        let lost = |slot| -> Result<u64, Stop> {
            Ok(s.lost
                .get(&slot, 0)
                .map_err(|e| map_error("LOST", e))?
                .iter()
                .sum())
        };
        if let Mode::Exe {
            seen,
            only_exe: false,
            ..
        } = &self.mode
        {
            caches.retain(|key, _| seen.contains(&key.pid));
        }
        let lost_events = lost(LOST_EVENTS)?;
        let unreadable_snapshots = lost(LOST_SNAPSHOTS)?;
        let mut histograms = BTreeMap::new();
        for entry in &self.histograms {
            let (key, per_cpu) = entry.map_err(|e| map_error("HISTOGRAMS", e))?;
            let mut sum = Log2Histogram::ZERO;
            for h in per_cpu.iter() {
                sum.add(h);
            }
            histograms.insert(key, sum);
        }
        Ok(Sample {
            at: self.start.elapsed(),
            caches: caches.into_values().collect(),
            events_total: self.events_total,
            lost_events,
            unreadable_snapshots,
            histograms,
        })
    }
}
