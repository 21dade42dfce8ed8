//! What the exporter knows: the processes it exports, the files it
//! watches, and the counts that outlive both.
//!
//! Discovery ([`super::discover`]) decides which processes are exported:
//! live, passing the filters, mapping a file with probes. Each such file
//! has one [`FileWatch`] whose thread publishes, per pid, the caches the
//! eBPF maps hold ([`Targets::publish`]). A scrape joins the two: the
//! series of a process exist while discovery lists it and its file's
//! session reports caches for its pid. A process that exits leaves
//! [`Inner::procs`] at the next scan and its file's maps at the next read,
//! so its series leave the next scrape; what its file counted stays in the
//! file's totals, so `slabscope_exporter_events_total` never goes back.

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    sync::{Mutex, MutexGuard},
};

use crate::collector::target::FileId;

use super::discover::ProcKey;
use super::files::{FileSample, FileWatch};

/// One exported process.
#[derive(Clone, Debug, PartialEq)]
pub struct Proc {
    /// The process's name (untrusted bytes).
    pub comm: Vec<u8>,
    /// Seconds since the epoch at which it started.
    pub start_time: f64,
    /// The watched files it maps.
    pub files: Vec<FileId>,
}

/// One watched file.
#[derive(Debug)]
pub struct Watched {
    /// The file's path, as a process that maps it names it.
    pub path: PathBuf,
    /// Its session's last read.
    pub sample: FileSample,
    /// Scans in a row that found no exported process mapping it.
    pub unmapped_scans: u32,
    /// Stops the session when dropped.
    watch: Option<FileWatch>,
}

impl Watched {
    /// A file watched through `watch` (none when the attach failed), with
    /// no sample yet.
    pub fn new(path: PathBuf, watch: Option<FileWatch>) -> Watched {
        Watched {
            path,
            sample: FileSample::default(),
            unmapped_scans: 0,
            watch,
        }
    }
}

/// Counts that outlive the files they came from.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    /// Events delivered by sessions since closed.
    pub gone_events: u64,
    /// Events lost by sessions since closed.
    pub gone_lost: u64,
    /// Unreadable snapshots counted by sessions since closed.
    pub gone_unreadable: u64,
    /// Exited processes forgotten by sessions since closed.
    pub gone_forgotten: u64,
    /// Files with probes the exporter could not attach to.
    pub attach_failures: u64,
    /// Series left out of scrapes because of the series limit.
    pub series_dropped: u64,
    /// Seconds the last scrape took to encode.
    pub last_scrape_seconds: f64,
}

/// What [`Inner::counts`] adds up over every file, past and present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events delivered through the ring buffers.
    pub events: u64,
    /// Events lost because a ring buffer was full.
    pub lost: u64,
    /// Probe hits ignored because their snapshot could not be read.
    pub unreadable: u64,
    /// Exited processes whose entries were deleted.
    pub forgotten: u64,
}

/// Everything the exporter knows, behind one lock.
#[derive(Debug, Default)]
pub struct Inner {
    /// The exported processes.
    pub procs: BTreeMap<ProcKey, Proc>,
    /// The watched files.
    pub files: BTreeMap<FileId, Watched>,
    /// Files whose attach failed: not retried while some process maps them.
    pub refused: HashSet<FileId>,
    /// Counts kept over files no longer watched.
    pub totals: Totals,
}

impl Inner {
    /// Takes `id` out; its session is returned so the caller stops it after
    /// releasing the lock (stopping joins the session's thread, which takes
    /// this lock to publish).
    pub fn remove_file(&mut self, id: FileId) -> Option<FileWatch> {
        let mut w = self.files.remove(&id)?;
        self.totals.gone_events += w.sample.events_total;
        self.totals.gone_lost += w.sample.lost_events;
        self.totals.gone_unreadable += w.sample.unreadable_snapshots;
        self.totals.gone_forgotten += w.sample.forgotten;
        w.watch.take()
    }

    /// Every file's counts, those of files no longer watched included.
    pub fn counts(&self) -> Counts {
        let t = &self.totals;
        self.files.values().fold(
            Counts {
                events: t.gone_events,
                lost: t.gone_lost,
                unreadable: t.gone_unreadable,
                forgotten: t.gone_forgotten,
            },
            |c, w| Counts {
                events: c.events + w.sample.events_total,
                lost: c.lost + w.sample.lost_events,
                unreadable: c.unreadable + w.sample.unreadable_snapshots,
                forgotten: c.forgotten + w.sample.forgotten,
            },
        )
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

    /// A file's session read its maps.
    pub fn publish(&self, id: FileId, sample: FileSample) {
        if let Some(w) = self.lock().files.get_mut(&id) {
            w.sample = sample;
        }
    }

    /// A file's session failed and stopped: forget it, do not retry it.
    pub fn file_failed(&self, id: FileId) {
        let mut inner = self.lock();
        inner.totals.attach_failures += 1;
        inner.refused.insert(id);
        // The session's own thread is the caller: it ends by itself once
        // this returns, so it is let go rather than joined from within.
        let watch = inner.remove_file(id);
        drop(inner);
        if let Some(w) = watch {
            w.let_go();
        }
    }

    /// Stops every session (at shutdown).
    pub fn clear(&self) {
        let watches: Vec<FileWatch> = {
            let mut inner = self.lock();
            inner.procs.clear();
            let ids: Vec<FileId> = inner.files.keys().copied().collect();
            ids.into_iter()
                .filter_map(|id| inner.remove_file(id))
                .collect()
        };
        drop(watches);
    }
}
