//! What the collector hands to the views: periodic samples of every traced
//! cache, individual events, and changes of the target's state.

use std::time::Duration;

use std::collections::BTreeMap;

use slabscope_probes::{CacheCounters, CacheSnapshot, Event, HistKey, Log2Histogram};

/// One cache of one traced process, as the eBPF maps last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheState {
    /// Process the cache lives in.
    pub pid: u32,
    /// The snapshot carried by the last probe that fired for this cache.
    pub snapshot: CacheSnapshot,
    /// Transition counters since the collector attached.
    pub counters: CacheCounters,
    /// The cache fired `cache_destroy`.
    pub destroyed: bool,
}

/// Everything the collector knows at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Time since the collector attached.
    pub at: Duration,
    /// Every cache seen so far, ordered by (pid, cache id).
    pub caches: Vec<CacheState>,
    /// Events delivered through the ring buffer since attach.
    pub events_total: u64,
    /// Events the eBPF side could not deliver because the ring buffer was full.
    pub lost_events: u64,
    /// Probe hits ignored because their snapshot pointer could not be read
    /// (a target passing a bad pointer, or memory unmapped under the probe).
    pub unreadable_snapshots: u64,
    /// Durations timed by the eBPF program (grows, DEADLOCKED spells,
    /// emergency object lifetimes), per process, cache and kind, the CPUs'
    /// copies added up.
    pub histograms: BTreeMap<HistKey, Log2Histogram>,
}

/// A message from the collector to the views.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// A periodic sample of the maps.
    Sample(Sample),
    /// One probe hit, in ring-buffer order.
    Event(Event),
    /// A traced process exited; its caches stay as last seen.
    TargetExited {
        /// The process that exited.
        pid: u32,
    },
    /// A traced process replaced its program (`exec`) with `program`, which
    /// is not traced; its caches stay as last seen before the exec.
    TargetExeced {
        /// The process that exec'd.
        pid: u32,
        /// The program it runs now, as `/proc/PID/exe` names it; the
        /// target's to choose, so print it through [`crate::escape`].
        program: String,
    },
    /// A process started running the traced executable (`--exe`) and was attached.
    TargetAttached {
        /// The process now traced.
        pid: u32,
    },
    /// The collector stopped because of this error.
    Failed(String),
}
