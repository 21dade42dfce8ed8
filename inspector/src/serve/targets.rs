//! The traced processes: attaching the collector to each, keeping its last
//! sample, and forgetting it when it exits.
//!
//! Each target has its own collector ([`crate::collector::spawn`] with
//! [`Target::Pid`]), so its uprobes are scoped to that process, its maps
//! hold only its caches, and everything the kernel kept for it is freed when
//! the process exits and the collector detaches. A thread per target drains
//! the collector's channel: it keeps the last [`Sample`] and drops the
//! events (the exporter reads counts, never event streams).
//!
//! A target that exits, fails or whose pid is reused leaves [`Targets`] at
//! once, so its series leave the next scrape; what it had counted moves into
//! the exporter's totals so `slabscope_exporter_events_total` never goes
//! back.

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use crate::collector::{self, CollectorHandle, CollectorOptions, Target};
use crate::sample::{Sample, Update};

use super::discover::{self, Candidate, ProcKey};
use super::labels;

/// One traced process.
#[derive(Debug)]
pub struct Traced {
    /// The process's name (untrusted bytes).
    pub comm: Vec<u8>,
    /// Seconds since the epoch at which it started.
    pub start_time: f64,
    /// Files whose probes are attached.
    pub files: Vec<PathBuf>,
    /// The last sample of its caches, once one arrived.
    pub sample: Option<Sample>,
    /// Stops the collector when dropped.
    handle: Option<CollectorHandle>,
}

impl Traced {
    /// A target with no collector behind it, for tests of the views.
    #[cfg(test)]
    pub fn without_collector(comm: &[u8], start_time: f64, sample: Option<Sample>) -> Traced {
        Traced {
            comm: comm.to_vec(),
            start_time,
            files: Vec::new(),
            sample,
            handle: None,
        }
    }
}

/// Counts that outlive the targets they came from.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    /// Events delivered by targets that are gone.
    pub gone_events: u64,
    /// Events lost by targets that are gone.
    pub gone_lost: u64,
    /// Attach attempts that failed.
    pub attach_failures: u64,
    /// Targets that were attached and have since gone.
    pub detached: u64,
    /// Series left out of scrapes because of the series limit.
    pub series_dropped: u64,
    /// Seconds the last scrape took to encode.
    pub last_scrape_seconds: f64,
}

/// Everything the exporter knows, behind one lock.
#[derive(Debug, Default)]
pub struct Inner {
    pub targets: BTreeMap<ProcKey, Traced>,
    /// Processes that refused attaching (or lost the race with their exit):
    /// not retried while they live.
    pub refused: HashSet<ProcKey>,
    pub totals: Totals,
}

impl Inner {
    /// Takes `key` out; its collector is returned so the caller stops it
    /// after releasing the lock (stopping joins the collector's thread).
    fn remove(&mut self, key: ProcKey) -> Option<CollectorHandle> {
        let mut t = self.targets.remove(&key)?;
        if let Some(s) = &t.sample {
            self.totals.gone_events += s.events_total;
            self.totals.gone_lost += s.lost_events;
        }
        self.totals.detached += 1;
        t.handle.take()
    }
}

/// The shared state of the exporter.
#[derive(Debug, Default)]
pub struct Targets {
    inner: Mutex<Inner>,
}

impl Targets {
    /// The state, even after a thread panicked while holding it: every
    /// update leaves it consistent, so the exporter keeps serving.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether discovery should skip `key`: traced already or refused.
    pub fn knows(&self, key: ProcKey) -> bool {
        let inner = self.lock();
        inner.targets.contains_key(&key) || inner.refused.contains(&key)
    }

    /// Drops targets whose process is gone or whose pid now belongs to
    /// another process, and forgets refusals of processes that are gone.
    pub fn prune(&self) {
        let keys: Vec<ProcKey> = self.lock().targets.keys().copied().collect();
        let dead: Vec<ProcKey> = keys
            .into_iter()
            .filter(|k| !discover::is_alive(*k))
            .collect();
        let handles: Vec<CollectorHandle> = {
            let mut inner = self.lock();
            let handles = dead.iter().filter_map(|k| inner.remove(*k)).collect();
            inner.refused.retain(|k| discover::is_alive(*k));
            handles
        };
        drop(handles);
    }

    /// Stops every collector (at shutdown).
    pub fn clear(&self) {
        let handles: Vec<CollectorHandle> = {
            let mut inner = self.lock();
            let keys: Vec<ProcKey> = inner.targets.keys().copied().collect();
            keys.into_iter().filter_map(|k| inner.remove(k)).collect()
        };
        drop(handles);
    }
}

/// Attaches the collector to `cand` and starts the thread that follows it.
/// A failure is logged and remembered; the exporter goes on.
pub fn attach(targets: &Arc<Targets>, cand: Candidate, opts: CollectorOptions) {
    let key = cand.info.key;
    let comm = labels::visible(&cand.info.comm);
    let (rx, handle) = match collector::spawn(Target::Pid(key.pid), opts) {
        Ok(ok) => ok,
        Err(e) => {
            let mut inner = targets.lock();
            inner.refused.insert(key);
            // A process that exited before we attached is no failure.
            if discover::is_alive(key) {
                inner.totals.attach_failures += 1;
                drop(inner);
                eprintln!("slabscope serve: not tracing pid {} ({comm}): {e}", key.pid);
            }
            return;
        }
    };
    // The pid may have been reused between the scan and the attach.
    if !discover::is_alive(key) {
        targets.lock().refused.insert(key);
        handle.stop();
        return;
    }
    let start_time = discover::start_time_seconds(key.start_ticks).unwrap_or(0.0);
    targets.lock().targets.insert(
        key,
        Traced {
            comm: cand.info.comm,
            start_time,
            files: cand.files,
            sample: None,
            handle: Some(handle),
        },
    );
    let follower = Arc::clone(targets);
    let spawned = std::thread::Builder::new()
        .name(format!("serve-{}", key.pid))
        .spawn(move || follow(&follower, key, rx));
    if let Err(e) = spawned {
        let handle = targets.lock().remove(key);
        drop(handle);
        eprintln!(
            "slabscope serve: not tracing pid {}: starting a thread: {e}",
            key.pid
        );
    }
}

/// Keeps the last sample of `key` until its collector says it is done.
fn follow(targets: &Targets, key: ProcKey, rx: std::sync::mpsc::Receiver<Update>) {
    for update in rx.iter() {
        match update {
            Update::Sample(sample) => {
                if let Some(t) = targets.lock().targets.get_mut(&key) {
                    t.sample = Some(sample);
                } else {
                    // Pruned meanwhile: the handle is stopping the collector.
                    return;
                }
            }
            Update::TargetExited { .. } => break,
            Update::Failed(msg) => {
                let comm = targets
                    .lock()
                    .targets
                    .get(&key)
                    .map(|t| labels::visible(&t.comm))
                    .unwrap_or_default();
                eprintln!(
                    "slabscope serve: stopped tracing pid {} ({comm}): {msg}",
                    key.pid
                );
                targets.lock().refused.insert(key);
                break;
            }
            Update::Event(_) | Update::TargetAttached { .. } => {}
        }
    }
    let handle = targets.lock().remove(key);
    // Stopping joins the collector thread, which has ended or is ending.
    drop(handle);
}

/// The collector options `serve` uses: samples at `interval`, and a ring
/// buffer sized for counts, not for event streams.
pub fn collector_options(interval: Duration, ring_bytes: u32) -> CollectorOptions {
    CollectorOptions {
        interval,
        ring_bytes: Some(ring_bytes),
    }
}
