//! One eBPF session per file that carries probes, shared by every process
//! that maps it.
//!
//! `slabscope --pid N` scopes its uprobes to one process. A host-wide
//! exporter cannot afford that: the kernel registers and unregisters a
//! process-scoped uprobe under the file's lock and waits for RCU grace
//! periods on the way out, so with one session per process a burst of
//! short-lived processes of one program queues up behind itself (measured:
//! 4 of 1000 one-second processes attached, the rest gone first). Here the
//! collector's planner and loader ([`collector::plan`],
//! [`collector::attach_sites`]) attach each file once, for all processes
//! ([`Scope::AllProcesses`]), as `--exe` does: a process is traced from its
//! first instruction, whenever it starts, at no cost per process.
//!
//! The maps are keyed by (pid, cache), so this thread splits them by pid
//! and, because nothing else would, deletes the entries of every pid that
//! has exited or been reused (`Forget`): a thousand short-lived processes
//! leave nothing in the kernel's maps or in the exporter.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuHashMap};
use slabscope_probes::{
    CacheCounters, CacheKey, CacheSnapshot, Event, HistKey, HistKind, LOST_EVENTS, LOST_SNAPSHOTS,
    Log2Histogram,
};

use crate::collector::{
    self, CollectError, Scope, Session,
    target::{FileId, ProbeFile},
};
use crate::sample::CacheState;

use super::discover;
use super::targets::Targets;

/// What one file's session saw at its last read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileSample {
    /// Live caches of each process, by pid, in cache id order.
    pub caches: BTreeMap<u32, Vec<CacheState>>,
    /// Events delivered through the ring buffer since attaching.
    pub events_total: u64,
    /// Events lost because the ring buffer was full.
    pub lost_events: u64,
    /// Probe hits ignored because their snapshot pointer could not be read
    /// (the eBPF program counts them and makes up no cache).
    pub unreadable_snapshots: u64,
    /// (pid, cache) entries the kernel holds for this file after cleanup.
    pub map_entries: u64,
    /// Processes whose entries were deleted because they exited.
    pub forgotten: u64,
    /// Histograms of each process, by pid, then by (cache id, kind), the
    /// CPUs' copies added up.
    pub histograms: BTreeMap<u32, BTreeMap<(u64, HistKind), Log2Histogram>>,
}

/// A running session on one file; dropping it detaches.
#[derive(Debug)]
pub struct FileWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FileWatch {
    /// Lets the thread end by itself, without waiting for it (for the
    /// thread itself, which cannot join itself).
    pub fn let_go(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take();
    }
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Attaches to every probe site of `file` for all processes, and starts
/// the thread that reads its maps every `interval` into `targets`.
pub fn watch(
    targets: &Arc<Targets>,
    id: FileId,
    file: &ProbeFile,
    ring_bytes: u32,
    interval: Duration,
) -> Result<FileWatch, CollectError> {
    let sites = collector::plan(std::slice::from_ref(file))?;
    let what = format!("tracing {}", file.path.display());
    let mut session = collector::attach_sites(&sites, Scope::AllProcesses, ring_bytes, &what)?;
    let timing = Timing {
        histograms: take(&mut session, "HISTOGRAMS")?,
        starts: [
            take(&mut session, "GROW_START")?,
            take(&mut session, "DEADLOCK_START")?,
            take(&mut session, "EMERGENCY_START")?,
        ],
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut reader = Reader {
        session,
        timing,
        id,
        path: file.path.clone(),
        owner: HashMap::new(),
        sample: FileSample::default(),
    };
    let thread = {
        let stop = Arc::clone(&stop);
        let targets = Arc::clone(targets);
        std::thread::Builder::new()
            .name("serve-file".into())
            .spawn(move || reader.run(&targets, interval, &stop))
            .map_err(|source| CollectError::Io {
                path: PathBuf::from("(serve file thread)"),
                source,
            })?
    };
    Ok(FileWatch {
        stop,
        thread: Some(thread),
    })
}

/// How often the ring buffer is drained between two reads of the maps.
const DRAIN_SLICE: Duration = Duration::from_millis(50);

/// The maps of the eBPF program's timings.
struct Timing {
    histograms: PerCpuHashMap<MapData, HistKey, Log2Histogram>,
    /// Start times of grows, DEADLOCKED spells and emergency objects.
    starts: [BpfHashMap<MapData, CacheKey, u64>; 3],
}

fn take<T>(session: &mut Session, name: &'static str) -> Result<T, CollectError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = session.take_map(name).ok_or_else(|| CollectError::Map {
        map: name,
        source: Box::new(aya::maps::MapError::InvalidName {
            name: name.to_owned(),
        }),
    })?;
    T::try_from(map).map_err(|e| map_error(name, e))
}

struct Reader {
    session: Session,
    timing: Timing,
    id: FileId,
    path: PathBuf,
    /// The start time (ticks) of the process each pid's entries belong to.
    owner: HashMap<u32, u64>,
    sample: FileSample,
}

/// What to do with a pid's entries.
#[derive(Debug, PartialEq, Eq)]
enum Forget {
    /// Its process lives: keep them.
    Keep,
    /// Its process exited: delete them, and count it.
    Exited,
    /// Its pid now belongs to another process: delete the old process's.
    Reused,
}

impl Reader {
    fn run(&mut self, targets: &Targets, interval: Duration, stop: &AtomicBool) {
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.drain();
            if Instant::now() >= next {
                next = Instant::now() + interval;
                match self.read() {
                    Ok(()) => targets.publish(self.id, self.sample.clone()),
                    Err(e) => {
                        eprintln!(
                            "slabscope serve: stopped tracing {}: {}",
                            labels_path(&self.path),
                            crate::escape::escape(&e.to_string())
                        );
                        targets.file_failed(self.id);
                        return;
                    }
                }
            }
            std::thread::sleep(DRAIN_SLICE.min(interval));
        }
    }

    /// Counts and drops every record in the ring buffer: the exporter
    /// reads counts from the maps, not events.
    fn drain(&mut self) {
        while let Some(item) = self.session.ring.next() {
            if item.len() >= size_of::<Event>() {
                self.sample.events_total += 1;
            }
        }
    }

    /// Whether the entries of `pid` may stay.
    fn judge(&mut self, pid: u32) -> Forget {
        let Some(start) = discover::current_start(pid) else {
            self.owner.remove(&pid);
            return Forget::Exited;
        };
        match self.owner.insert(pid, start) {
            Some(old) if old != start => Forget::Reused,
            _ => Forget::Keep,
        }
    }

    fn read(&mut self) -> Result<(), CollectError> {
        let s = &mut self.session;
        let mut caches: BTreeMap<CacheKey, CacheState> = BTreeMap::new();
        let blank = |key: &CacheKey| CacheState {
            pid: key.pid,
            snapshot: CacheSnapshot {
                cache_id: key.cache_id,
                ..CacheSnapshot::ZERO
            },
            counters: CacheCounters::default(),
            destroyed: false,
        };
        for entry in &s.snapshots {
            let (key, snapshot) = entry.map_err(|e| map_error("SNAPSHOTS", e))?;
            let snapshot = collector::settled_snapshot(&s.snapshots, &key, snapshot);
            caches.entry(key).or_insert_with(|| blank(&key)).snapshot = snapshot;
        }
        for entry in &s.counters {
            let (key, counters) = entry.map_err(|e| map_error("COUNTERS", e))?;
            caches.entry(key).or_insert_with(|| blank(&key)).counters = counters;
        }
        let mut destroyed = Vec::new();
        for key in s.destroyed.keys() {
            let key = key.map_err(|e| map_error("DESTROYED", e))?;
            destroyed.push(key);
            if let Some(c) = caches.get_mut(&key) {
                c.destroyed = true;
            }
        }
        self.sample.lost_events = s
            .lost
            .get(&LOST_EVENTS, 0)
            .map_err(|e| map_error("LOST", e))?
            .iter()
            .sum();
        self.sample.unreadable_snapshots = s
            .lost
            .get(&LOST_SNAPSHOTS, 0)
            .map_err(|e| map_error("LOST", e))?
            .iter()
            .sum();

        let mut hists: Vec<(HistKey, Log2Histogram)> = Vec::new();
        for entry in &self.timing.histograms {
            let (key, per_cpu) = entry.map_err(|e| map_error("HISTOGRAMS", e))?;
            let mut sum = Log2Histogram::ZERO;
            for h in per_cpu.iter() {
                sum.add(h);
            }
            hists.push((key, sum));
        }
        // Grow and DEADLOCKED slots stay once created, 0 when nothing is
        // in flight; emergency entries exist only while in flight.
        let mut starts: Vec<(usize, CacheKey, bool)> = Vec::new();
        for (i, m) in self.timing.starts.iter().enumerate() {
            for entry in m {
                let (key, t) = entry.map_err(|e| map_error("GROW_START", e))?;
                starts.push((i, key, t != 0));
            }
        }

        let mut pids: Vec<u32> = caches.keys().map(|k| k.pid).collect();
        pids.extend(destroyed.iter().map(|k| k.pid));
        pids.extend(hists.iter().map(|(k, _)| k.pid));
        pids.extend(starts.iter().map(|(_, k, _)| k.pid));
        pids.sort_unstable();
        pids.dedup();
        let mut gone = Vec::new();
        for pid in pids {
            match self.judge(pid) {
                Forget::Keep => {}
                Forget::Exited => {
                    self.sample.forgotten += 1;
                    gone.push(pid);
                }
                Forget::Reused => gone.push(pid),
            }
        }
        let s = &mut self.session;
        for key in caches.keys().chain(&destroyed) {
            if gone.binary_search(&key.pid).is_ok() {
                // Already gone (a cache_create restarts its counters by
                // deleting them) is fine.
                let _ = s.snapshots.remove(key);
                let _ = s.counters.remove(key);
                let _ = s.destroyed.remove(key);
            }
        }
        let is_gone = |pid: u32| gone.binary_search(&pid).is_ok();
        for (key, _) in hists.iter().filter(|(k, _)| is_gone(k.pid)) {
            let _ = self.timing.histograms.remove(key);
        }
        for (i, key, _) in starts.iter().filter(|(_, k, _)| is_gone(k.pid)) {
            let _ = self.timing.starts[*i].remove(key);
        }
        let mut histograms: BTreeMap<u32, BTreeMap<(u64, HistKind), Log2Histogram>> =
            BTreeMap::new();
        for (key, h) in hists.into_iter().filter(|(k, _)| !is_gone(k.pid)) {
            if let Some(kind) = HistKind::from_u32(key.kind) {
                histograms
                    .entry(key.pid)
                    .or_default()
                    .insert((key.cache_id, kind), h);
            }
        }
        self.sample.histograms = histograms;
        caches.retain(|k, _| gone.binary_search(&k.pid).is_err());
        self.owner.retain(|pid, _| gone.binary_search(pid).is_err());
        self.sample.map_entries = (caches.len()
            + self
                .sample
                .histograms
                .values()
                .map(BTreeMap::len)
                .sum::<usize>()
            + starts
                .iter()
                .filter(|(_, k, in_flight)| *in_flight && !is_gone(k.pid))
                .count()) as u64;
        let mut by_pid: BTreeMap<u32, Vec<CacheState>> = BTreeMap::new();
        for (key, c) in caches {
            if !c.destroyed {
                by_pid.entry(key.pid).or_default().push(c);
            }
        }
        self.sample.caches = by_pid;
        Ok(())
    }
}

fn map_error(map: &'static str, e: aya::maps::MapError) -> CollectError {
    CollectError::Map {
        map,
        source: Box::new(e),
    }
}

/// A path for a log line: visible escapes for whatever the path holds.
fn labels_path(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    crate::escape::escape_bytes(path.as_os_str().as_bytes()).into_owned()
}
