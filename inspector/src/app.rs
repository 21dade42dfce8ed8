//! The inspector's state: everything the views show, fed by the collector's
//! [`Update`]s and changed by keys ([`crate::keys`]). No terminal, no clock:
//! every transition is a plain method, so tests drive it directly and the
//! renderers ([`crate::ui`]) are pure functions of it.
//!
//! Bookkeeping, for every [`State`]:
//! - `caches` holds every cache any sample named, keyed by (pid, cache id);
//!   a cache keeps its last state after its process exits or it is destroyed.
//! - each cache's `history` holds at most `history_len` points, one per sample
//!   applied (samples skipped while paused add none).
//! - `log.len() <= log.capacity()` and
//!   `log.received() == log.len() + log.dropped()`.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use slabscope_probes::stats::CacheStats;
use slabscope_probes::{CacheCounters, Event, name_bytes};

use crate::columns::Column;
use crate::escape::escape;
use crate::sample::{CacheState, Sample, Update};

/// Samples of history kept per cache by default.
pub const DEFAULT_HISTORY: usize = 120;
/// Events kept in the log by default.
pub const DEFAULT_EVENT_LOG: usize = 1000;

/// A cache of a traced process: the contract's key, as the collector's maps
/// have it.
pub use slabscope_probes::CacheKey;

/// The values the detail view charts, at one sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistPoint {
    /// Objects handed out of the slabs (SPL's `obj_alloc`).
    pub obj_alloc: u64,
    /// Slabs the cache holds.
    pub slab_total: u64,
    /// Live emergency objects.
    pub obj_emergency: u64,
}

/// A bounded ring of the last samples of one cache, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    points: VecDeque<HistPoint>,
    cap: usize,
}

impl History {
    /// An empty history keeping the last `cap` points (at least one).
    pub fn new(cap: usize) -> History {
        History {
            points: VecDeque::with_capacity(cap.min(1024)),
            cap: cap.max(1),
        }
    }

    /// Appends a point, dropping the oldest when full.
    pub fn push(&mut self, p: HistPoint) {
        if self.points.len() == self.cap {
            self.points.pop_front();
        }
        self.points.push_back(p);
    }

    /// Points kept.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether no point was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// One field over time, oldest first.
    pub fn series(&self, f: impl Fn(&HistPoint) -> u64) -> Vec<u64> {
        self.points.iter().map(f).collect()
    }
}

/// One cache as the views see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    /// The process and cache id the collector's maps key it by.
    pub key: CacheKey,
    /// The last snapshot's statistics; the name escaped for display.
    pub stats: CacheStats,
    /// Probe hits counted by the eBPF program since attach.
    pub counters: CacheCounters,
    /// The cache fired `cache_destroy`; its row shows its last state.
    pub destroyed: bool,
    /// Recent samples for the detail view's charts.
    pub history: History,
    /// The cache's grows keep failing: between the last two samples that
    /// saw a grow end, `slab_fail` went up and `slab_create` did not (a
    /// `KM_SLEEP` allocation may be retrying them forever, as in SPL).
    pub grows_failing: bool,
}

/// The bounded event log; counts what it had to drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLog {
    events: VecDeque<Event>,
    cap: usize,
    dropped: u64,
}

impl EventLog {
    /// An empty log keeping the last `cap` events (at least one).
    pub fn new(cap: usize) -> EventLog {
        EventLog {
            events: VecDeque::with_capacity(cap.min(4096)),
            cap: cap.max(1),
            dropped: 0,
        }
    }

    /// Appends an event, dropping (and counting) the oldest when full.
    pub fn push(&mut self, ev: Event) {
        if self.events.len() == self.cap {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(ev);
    }

    /// Events kept, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Event> {
        self.events.iter()
    }

    /// Events kept.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the log keeps no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The most events the log keeps.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Events pushed out of the log to make room.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Events ever pushed.
    pub fn received(&self) -> u64 {
        self.dropped + self.events.len() as u64
    }
}

/// What became of a traced process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetStatus {
    /// Traced, alive as far as the collector knows.
    Running,
    /// It exited; its caches show their last state.
    Exited,
    /// It exec'd another program, which is not traced.
    Execed,
}

/// Which screen is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// The summary, the cache table and the event log.
    Main,
    /// The detail of the selected cache.
    Detail,
}

/// Totals over every live cache, for the summary block.
///
/// As in SPL, a cache's `obj_total` counts its emergency objects but its
/// `obj_alloc` does not; the totals count them on both sides, so
/// `obj_alloc <= obj_total` holds and "in use" means every object handed out:
/// - `obj_alloc == Σ (obj_alloc + obj_emergency)`
/// - `obj_total == Σ obj_total` (`Σ obj_alloc` for KMC_SLAB caches, which
///   keep no total: all their objects are in use)
/// - `bytes_used == Σ obj_size * (obj_alloc + obj_emergency)`
/// - `bytes_held == Σ slab_size * slab_total + obj_size * obj_emergency`
///   (`obj_size * obj_alloc` for KMC_SLAB caches)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Live caches.
    pub caches: u64,
    /// Caches with objects allocated (emergency objects included).
    pub caches_active: u64,
    /// Objects the caches hold (see the equations above).
    pub obj_total: u64,
    /// Objects handed out, emergency objects included.
    pub obj_alloc: u64,
    /// Slabs held, over every cache.
    pub slab_total: u64,
    /// Slabs with an object out, over every cache.
    pub slab_alloc: u64,
    /// Bytes held: slabs and emergency objects of slabscope caches, allocated
    /// objects of KMC_SLAB ones.
    pub bytes_held: u64,
    /// Bytes of objects handed out.
    pub bytes_used: u64,
    /// Objects held in magazines and depots: freed by the program, not yet
    /// back in a slab.
    pub mag_objs: u64,
    /// Live emergency objects.
    pub obj_emergency: u64,
    /// Deadlocks detected (`obj_deadlock`), summed over the caches' lives.
    pub deadlocks: u64,
    /// Caches in KMC_DEADLOCKED now.
    pub deadlocked_caches: u64,
}

/// Everything the views show.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use slabscope_inspector::app::State;
/// use slabscope_inspector::sample::{CacheState, Sample, Update};
/// use slabscope_probes::{CacheCounters, CacheSnapshot, SlabCounters, name_buf};
///
/// let mut state = State::new("pid 4242");
/// let snapshot = CacheSnapshot {
///     cache_id: 0x1000,
///     obj_size: 1104,
///     counters: SlabCounters { obj_alloc: 40, ..SlabCounters::ZERO },
///     name: name_buf(b"zio_cache"),
///     ..CacheSnapshot::ZERO
/// };
/// state.apply(Update::Sample(Sample {
///     at: Duration::from_secs(1),
///     caches: vec![CacheState { pid: 4242, snapshot, counters: CacheCounters::default(), destroyed: false }],
///     events_total: 0,
///     lost_events: 0,
///     unreadable_snapshots: 0,
///     histograms: Default::default(),
/// }));
/// assert_eq!(state.rows()[0].stats.name, "zio_cache");
/// assert_eq!(state.totals().bytes_used, 40 * 1104);
/// assert_eq!(state.status(), "pid 4242: running");
/// ```
#[derive(Clone, Debug)]
pub struct State {
    /// What the user asked to trace (`pid 4242`, `/usr/bin/demo`).
    pub target: String,
    /// Every cache seen, destroyed ones included, by (pid, cache id).
    pub caches: BTreeMap<CacheKey, CacheEntry>,
    /// The eBPF program's timings, as of the last sample.
    pub histograms: BTreeMap<slabscope_probes::HistKey, slabscope_probes::Log2Histogram>,
    /// The traced processes and what became of them.
    pub targets: BTreeMap<u32, TargetStatus>,
    /// The latest probe hits, for the event log.
    pub log: EventLog,
    /// CLOCK_MONOTONIC nanoseconds event times are shown relative to; the
    /// first event's when unset.
    pub time_origin_ns: Option<u64>,
    /// Points of history kept per cache (`--history`).
    pub history_len: usize,
    /// Time since attach of the last sample applied.
    pub sample_at: Option<Duration>,
    /// Samples applied since attach.
    pub samples: u64,
    /// Probe hits delivered through the ring buffer since attach.
    pub events_total: u64,
    /// Probe hits lost to a full ring buffer since attach.
    pub lost_events: u64,
    /// Probe hits ignored for an unreadable snapshot pointer.
    pub unreadable_snapshots: u64,
    /// Probe hits per second between the last two samples; `None` before
    /// the second.
    pub events_per_sec: Option<f64>,
    /// The collector's last error.
    pub failed: Option<String>,
    /// The program the last process that exec'd now runs, escaped.
    pub execed: Option<String>,
    /// The collector hung up.
    pub collector_gone: bool,
    /// The selected cache; the first row when unset.
    pub selected: Option<CacheKey>,
    /// The column the table is sorted by.
    pub sort: Column,
    /// Rows run from the largest value (or Z) down: numeric columns start
    /// so, `r` flips it.
    pub descending: bool,
    /// Only caches whose name contains this, ignoring case, are shown.
    pub filter: String,
    /// The filter is being typed.
    pub filter_editing: bool,
    /// Cursor of the open column picker.
    pub picker: Option<Column>,
    /// Samples and events are held back, not applied (`space`).
    pub paused: bool,
    /// Newest sample received while paused, applied on resume.
    pending_sample: Option<Sample>,
    /// Events received while paused, applied on resume.
    pending_events: VecDeque<Event>,
    /// The help overlay is open.
    pub show_help: bool,
    /// Sizes in KiB/MiB/GiB rather than bytes.
    pub human: bool,
    /// Flags as `/proc`'s hex rather than letters (`x`).
    pub hex_flags: bool,
    /// The screen shown.
    pub view: View,
}

impl State {
    /// A state with nothing received yet.
    pub fn new(target: impl Into<String>) -> State {
        State {
            target: escape(&target.into()).into_owned(),
            caches: BTreeMap::new(),
            histograms: BTreeMap::new(),
            targets: BTreeMap::new(),
            log: EventLog::new(DEFAULT_EVENT_LOG),
            time_origin_ns: None,
            history_len: DEFAULT_HISTORY,
            sample_at: None,
            samples: 0,
            events_total: 0,
            lost_events: 0,
            unreadable_snapshots: 0,
            events_per_sec: None,
            failed: None,
            execed: None,
            collector_gone: false,
            selected: None,
            sort: Column::ObjTotal,
            descending: true,
            filter: String::new(),
            filter_editing: false,
            picker: None,
            paused: false,
            pending_sample: None,
            pending_events: VecDeque::new(),
            show_help: false,
            human: false,
            hex_flags: false,
            view: View::Main,
        }
    }

    /// Sets the sort column, in its natural direction.
    pub fn sort_by(&mut self, col: Column) {
        self.sort = col;
        self.descending = col.descending_by_default();
    }

    /// Keeps `n` events in the log (drops the log).
    pub fn with_event_log(mut self, n: usize) -> State {
        self.log = EventLog::new(n);
        self
    }

    /// Keeps `n` samples of history per cache (before any sample arrived).
    pub fn with_history(mut self, n: usize) -> State {
        self.history_len = n.max(1);
        self
    }

    /// Applies one message from the collector.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Sample(s) if self.paused => self.pending_sample = Some(s),
            Update::Sample(s) => self.apply_sample(s),
            Update::Event(ev) if self.paused => {
                if self.pending_events.len() == self.log.capacity() {
                    self.pending_events.pop_front();
                    self.log.dropped += 1;
                }
                self.pending_events.push_back(ev);
            }
            Update::Event(ev) => self.apply_event(ev),
            Update::TargetExited { pid } => {
                self.targets.insert(pid, TargetStatus::Exited);
            }
            Update::TargetExeced { pid, program } => {
                self.targets.insert(pid, TargetStatus::Execed);
                // The program's path is the target's to choose.
                self.execed = Some(escape(&program).into_owned());
            }
            Update::TargetAttached { pid } => {
                self.targets.insert(pid, TargetStatus::Running);
            }
            // The message may quote a file or probe name of the target.
            Update::Failed(msg) => self.failed = Some(escape(&msg).into_owned()),
        }
    }

    /// The collector's channel closed.
    pub fn disconnected(&mut self) {
        self.collector_gone = true;
    }

    fn apply_sample(&mut self, s: Sample) {
        if let Some(prev) = self.sample_at
            && s.at > prev
            && s.events_total >= self.events_total
        {
            let dt = (s.at - prev).as_secs_f64();
            self.events_per_sec = Some((s.events_total - self.events_total) as f64 / dt);
        }
        self.sample_at = Some(s.at);
        self.samples += 1;
        self.events_total = s.events_total;
        self.lost_events = s.lost_events;
        self.unreadable_snapshots = s.unreadable_snapshots;
        self.histograms = s.histograms.clone();
        for c in &s.caches {
            self.targets.entry(c.pid).or_insert(TargetStatus::Running);
            self.apply_cache(c);
        }
    }

    fn apply_cache(&mut self, c: &CacheState) {
        let key = CacheKey::new(c.pid, c.snapshot.cache_id);
        let mut stats = CacheStats::from(&c.snapshot);
        // The name is the target's: every view shows it escaped, and sorts
        // and filters by what it shows.
        stats.name = escape(&stats.name).into_owned();
        let point = HistPoint {
            obj_alloc: stats.obj_alloc,
            slab_total: stats.slab_total,
            obj_emergency: stats.obj_emergency,
        };
        let history_len = self.history_len;
        let entry = self.caches.entry(key).or_insert_with(|| CacheEntry {
            key,
            stats: CacheStats::default(),
            counters: CacheCounters::default(),
            destroyed: false,
            history: History::new(history_len),
            grows_failing: false,
        });
        if stats.slab_create != entry.stats.slab_create {
            entry.grows_failing = false;
        } else if stats.slab_fail > entry.stats.slab_fail {
            entry.grows_failing = true;
        }
        entry.stats = stats;
        entry.counters = c.counters;
        entry.destroyed = c.destroyed;
        entry.history.push(point);
    }

    fn apply_event(&mut self, ev: Event) {
        if self.time_origin_ns.is_none() {
            self.time_origin_ns = Some(ev.ts_ns);
        }
        self.log.push(ev);
    }

    /// Stops or resumes applying updates; on resume, what arrived meanwhile
    /// is applied (the newest sample and the events).
    pub fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if !self.paused {
            if let Some(s) = self.pending_sample.take() {
                self.apply_sample(s);
            }
            while let Some(ev) = self.pending_events.pop_front() {
                self.apply_event(ev);
            }
        }
    }

    /// Updates waiting for the end of the pause.
    pub fn pending(&self) -> usize {
        self.pending_events.len() + usize::from(self.pending_sample.is_some())
    }

    /// Whether the cache's process has exited.
    pub fn exited(&self, pid: u32) -> bool {
        matches!(
            self.targets.get(&pid),
            Some(TargetStatus::Exited | TargetStatus::Execed)
        )
    }

    /// The caches the table shows: filtered by name, sorted.
    pub fn rows(&self) -> Vec<&CacheEntry> {
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<&CacheEntry> = self
            .caches
            .values()
            .filter(|c| needle.is_empty() || c.stats.name.to_lowercase().contains(&needle))
            .collect();
        rows.sort_by(|a, b| {
            let o = self
                .sort
                .compare(&a.stats, &b.stats)
                .then(a.key.cmp(&b.key));
            if self.descending { o.reverse() } else { o }
        });
        rows
    }

    /// Index of the selected cache in [`State::rows`]; the first row when the
    /// selection is unset or filtered out; `None` when there are no rows.
    pub fn selected_index(&self, rows: &[&CacheEntry]) -> Option<usize> {
        if rows.is_empty() {
            return None;
        }
        Some(
            self.selected
                .and_then(|k| rows.iter().position(|c| c.key == k))
                .unwrap_or(0),
        )
    }

    /// Moves the selection by `delta` rows, clamped to the table.
    pub fn move_selection(&mut self, delta: isize) {
        let rows = self.rows();
        let Some(i) = self.selected_index(&rows) else {
            return;
        };
        let j = (i as isize + delta).clamp(0, rows.len() as isize - 1) as usize;
        self.selected = Some(rows[j].key);
    }

    /// Selects the first (`false`) or last (`true`) row.
    pub fn select_end(&mut self, last: bool) {
        let rows = self.rows();
        let pick = if last { rows.last() } else { rows.first() };
        self.selected = pick.map(|c| c.key);
    }

    /// The cache the detail view shows: the selected one, or the first row.
    pub fn selected_entry(&self) -> Option<&CacheEntry> {
        match self.selected.and_then(|k| self.caches.get(&k)) {
            Some(c) => Some(c),
            None => {
                let rows = self.rows();
                rows.first().copied()
            }
        }
    }

    /// Totals over the caches not destroyed, of the processes still running
    /// (of every process once all have exited, so a finished target still
    /// shows its last state).
    pub fn totals(&self) -> Totals {
        let any_running = self.targets.values().any(|s| *s == TargetStatus::Running);
        let mut t = Totals::default();
        for c in self
            .caches
            .values()
            .filter(|c| !(c.destroyed || (any_running && self.exited(c.key.pid))))
        {
            // The target's numbers: saturate rather than overflow.
            let s = &c.stats;
            t.caches += 1;
            let handed_out = s.obj_alloc.saturating_add(s.obj_emergency);
            t.caches_active += u64::from(handed_out > 0);
            t.obj_alloc = t.obj_alloc.saturating_add(handed_out);
            t.obj_total = t.obj_total.saturating_add(if s.is_slab_backed() {
                s.obj_alloc
            } else {
                s.obj_total
            });
            t.slab_total = t.slab_total.saturating_add(s.slab_total);
            t.slab_alloc = t.slab_alloc.saturating_add(s.slab_alloc);
            t.bytes_used = t
                .bytes_used
                .saturating_add(s.obj_size.saturating_mul(handed_out));
            t.bytes_held = t.bytes_held.saturating_add(if s.is_slab_backed() {
                s.obj_size.saturating_mul(s.obj_alloc)
            } else {
                s.slab_size
                    .saturating_mul(s.slab_total)
                    .saturating_add(s.obj_size.saturating_mul(s.obj_emergency))
            });
            t.mag_objs = t.mag_objs.saturating_add(s.mag_objs);
            t.obj_emergency = t.obj_emergency.saturating_add(s.obj_emergency);
            t.deadlocks = t.deadlocks.saturating_add(s.obj_deadlock);
            t.deadlocked_caches +=
                u64::from(s.flags & slabscope_probes::flags::KMC_DEADLOCKED != 0);
        }
        t
    }

    /// One line on what the collector and the target are doing.
    pub fn status(&self) -> String {
        if let Some(e) = &self.failed {
            return format!("collector failed: {e}");
        }
        let running = self
            .targets
            .values()
            .filter(|s| **s == TargetStatus::Running)
            .count();
        let exited = self.targets.len() - running;
        let mut s = match (running, exited) {
            (0, 0) => format!("waiting for {}", self.target),
            (0, 1) if let Some(p) = &self.execed => {
                format!("{}: exec'd {p}, not traced", self.target)
            }
            (0, _) => format!("{}: exited", self.target),
            (1, 0) => format!("{}: running", self.target),
            (r, 0) => format!("{}: {r} processes running", self.target),
            (r, e) => format!("{}: {r} running, {e} exited", self.target),
        };
        if self.collector_gone {
            s.push_str(" (collector stopped)");
        }
        if self.paused {
            s.push_str(&format!(" [PAUSED, {} updates waiting]", self.pending()));
        }
        s
    }

    /// Events of one cache, newest last.
    pub fn events_of(&self, key: CacheKey) -> impl DoubleEndedIterator<Item = &Event> {
        self.log
            .iter()
            .filter(move |e| e.pid == key.pid && e.cache_id == key.cache_id)
    }

    /// Nanoseconds of `ev` after the time origin.
    pub fn event_offset_ns(&self, ev: &Event) -> u64 {
        ev.ts_ns
            .saturating_sub(self.time_origin_ns.unwrap_or(ev.ts_ns))
    }

    /// The cache name of an event, lossily decoded and [`escape`]d.
    pub fn event_cache_name(ev: &Event) -> String {
        escape(&String::from_utf8_lossy(name_bytes(&ev.name))).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{self, cache, event, sample};
    use slabscope_probes::ProbeKind;
    use slabscope_probes::flags::KMC_DEADLOCKED;

    #[test]
    fn samples_fill_caches_history_and_rate() {
        let mut st = State::new("pid 42");
        st.apply(Update::Sample(sample(
            1_000,
            10,
            vec![cache(42, 1, "a", 5)],
        )));
        assert_eq!(st.events_per_sec, None);
        st.apply(Update::Sample(sample(
            3_000,
            50,
            vec![cache(42, 1, "a", 9), cache(42, 2, "b", 1)],
        )));
        assert_eq!(st.events_per_sec, Some(20.0));
        assert_eq!(st.caches.len(), 2);
        let a = &st.caches[&CacheKey::new(42, 1)];
        assert_eq!(a.history.series(|p| p.obj_alloc), vec![5, 9]);
        assert_eq!(st.targets[&42], TargetStatus::Running);
        assert_eq!(st.status(), "pid 42: running");
    }

    #[test]
    fn history_is_bounded() {
        let mut st = State::new("t").with_history(3);
        for i in 0..5 {
            st.apply(Update::Sample(sample(
                i * 1000,
                0,
                vec![cache(1, 1, "a", i)],
            )));
        }
        let a = &st.caches[&CacheKey::new(1, 1)];
        assert_eq!(a.history.series(|p| p.obj_alloc), vec![2, 3, 4]);
    }

    #[test]
    fn event_log_is_bounded_and_counts_drops() {
        let mut st = State::new("t").with_event_log(3);
        for i in 0..5 {
            st.apply(Update::Event(event(
                1,
                1,
                "a",
                ProbeKind::GrowStart,
                100 + i,
            )));
        }
        assert_eq!(st.log.len(), 3);
        assert_eq!(st.log.dropped(), 2);
        assert_eq!(st.log.received(), 5);
        let ts: Vec<u64> = st.log.iter().map(|e| e.ts_ns).collect();
        assert_eq!(ts, [102, 103, 104]);
        assert_eq!(st.event_offset_ns(st.log.iter().last().unwrap()), 4);
    }

    #[test]
    fn pause_holds_updates_until_resumed() {
        let mut st = State::new("t");
        st.apply(Update::Sample(sample(1000, 0, vec![cache(1, 1, "a", 1)])));
        st.toggle_pause();
        st.apply(Update::Sample(sample(2000, 0, vec![cache(1, 1, "a", 2)])));
        st.apply(Update::Sample(sample(3000, 0, vec![cache(1, 1, "a", 3)])));
        st.apply(Update::Event(event(1, 1, "a", ProbeKind::Reap, 5)));
        st.apply(Update::TargetExited { pid: 1 });
        assert_eq!(st.caches[&CacheKey::new(1, 1)].stats.obj_alloc, 1);
        assert!(st.log.is_empty());
        assert_eq!(st.pending(), 2);
        assert!(st.exited(1), "exits are shown even while paused");
        assert!(
            st.status().contains("PAUSED, 2 updates waiting"),
            "{}",
            st.status()
        );
        st.toggle_pause();
        let a = &st.caches[&CacheKey::new(1, 1)];
        assert_eq!(a.stats.obj_alloc, 3);
        assert_eq!(a.history.series(|p| p.obj_alloc), vec![1, 3]);
        assert_eq!(st.log.len(), 1);
        assert_eq!(st.pending(), 0);
    }

    #[test]
    fn rows_are_filtered_and_sorted() {
        let mut st = State::new("t");
        st.apply(Update::Sample(sample(
            0,
            0,
            vec![
                cache(1, 1, "zio_cache", 5),
                cache(1, 2, "dnode_t", 9),
                cache(1, 3, "zio_buf", 1),
            ],
        )));
        let names = |st: &State| {
            st.rows()
                .iter()
                .map(|c| c.stats.name.clone())
                .collect::<Vec<_>>()
        };
        st.sort_by(Column::ObjAlloc);
        assert_eq!(names(&st), ["dnode_t", "zio_cache", "zio_buf"]);
        st.descending = false;
        assert_eq!(names(&st), ["zio_buf", "zio_cache", "dnode_t"]);
        st.sort_by(Column::Name);
        assert_eq!(names(&st), ["dnode_t", "zio_buf", "zio_cache"]);
        st.filter = "ZIO".into();
        assert_eq!(names(&st), ["zio_buf", "zio_cache"]);
    }

    #[test]
    fn selection_follows_the_cache_and_clamps() {
        let mut st = testdata::state();
        st.sort_by(Column::Name);
        let rows = st.rows();
        assert_eq!(st.selected_index(&rows), Some(0));
        drop(rows);
        st.move_selection(1);
        let second = st.selected.unwrap();
        st.sort_by(Column::ObjAlloc);
        assert_eq!(
            st.selected,
            Some(second),
            "selection follows the cache across sorts"
        );
        st.move_selection(100);
        let rows = st.rows();
        assert_eq!(st.selected_index(&rows), Some(rows.len() - 1));
        drop(rows);
        st.move_selection(-100);
        assert_eq!(st.selected_index(&st.rows()), Some(0));
        st.select_end(true);
        assert_eq!(st.selected_index(&st.rows()), Some(st.rows().len() - 1));
        let mut empty = State::new("t");
        empty.move_selection(1);
        assert_eq!(empty.selected, None);
        assert!(empty.selected_entry().is_none());
    }

    #[test]
    fn totals_skip_destroyed_caches() {
        let mut st = State::new("t");
        let mut dead = cache(1, 3, "gone", 100);
        dead.destroyed = true;
        let mut dl = cache(1, 2, "b", 4);
        dl.snapshot.flags |= KMC_DEADLOCKED;
        dl.snapshot.obj_emergency = 2;
        dl.snapshot.obj_deadlock = 1;
        st.apply(Update::Sample(sample(
            0,
            0,
            vec![cache(1, 1, "a", 5), dl, dead],
        )));
        let t = st.totals();
        assert_eq!(t.caches, 2);
        assert_eq!(t.obj_alloc, 9 + 2, "emergency objects are handed out");
        assert_eq!(t.obj_emergency, 2);
        assert_eq!(t.deadlocks, 1);
        assert_eq!(t.deadlocked_caches, 1);
        assert_eq!(t.bytes_used, 11 * 1104);
        assert_eq!(t.bytes_held, 2 * 4 * 16384 + 2 * 1104);
        assert_eq!(t.obj_total, 2 * 56);
    }

    #[test]
    fn totals_leave_out_exited_processes_while_others_run() {
        let mut st = State::new("/bin/demo");
        st.apply(Update::Sample(sample(
            0,
            0,
            vec![cache(1, 1, "a", 5), cache(2, 1, "a", 7)],
        )));
        assert_eq!(st.totals().obj_alloc, 12);
        st.apply(Update::TargetExited { pid: 1 });
        assert_eq!(st.totals().obj_alloc, 7);
        st.apply(Update::TargetExited { pid: 2 });
        assert_eq!(
            st.totals().obj_alloc,
            12,
            "all exited: the last state of all"
        );
    }

    #[test]
    fn slab_backed_caches_count_their_objects_as_active_and_total() {
        let mut st = State::new("t");
        let mut slab = cache(1, 1, "kmalloc_like", 30);
        slab.snapshot.flags = slabscope_probes::flags::KMC_SLAB;
        slab.snapshot.obj_total = 0;
        slab.snapshot.slab_total = 0;
        st.apply(Update::Sample(sample(
            0,
            0,
            vec![slab, cache(1, 2, "b", 6)],
        )));
        let t = st.totals();
        assert_eq!((t.obj_alloc, t.obj_total), (36, 86));
        assert_eq!(t.bytes_held, 30 * 1104 + 4 * 16384);
    }

    #[test]
    fn status_tracks_targets_and_failures() {
        let mut st = State::new("/bin/demo");
        assert_eq!(st.status(), "waiting for /bin/demo");
        st.apply(Update::TargetAttached { pid: 7 });
        st.apply(Update::TargetAttached { pid: 8 });
        assert_eq!(st.status(), "/bin/demo: 2 processes running");
        st.apply(Update::TargetExited { pid: 7 });
        assert_eq!(st.status(), "/bin/demo: 1 running, 1 exited");
        st.apply(Update::TargetExited { pid: 8 });
        st.disconnected();
        assert_eq!(st.status(), "/bin/demo: exited (collector stopped)");
        st.apply(Update::Failed("ring buffer gone".into()));
        assert_eq!(st.status(), "collector failed: ring buffer gone");
    }

    #[test]
    fn an_exec_is_shown_as_such_with_the_program_escaped() {
        let mut st = State::new("pid 7");
        st.apply(Update::Sample(sample(1000, 0, vec![cache(7, 1, "a", 1)])));
        st.apply(Update::TargetExeced {
            pid: 7,
            program: "/bin/x\x1b[2J".into(),
        });
        assert!(st.exited(7));
        assert_eq!(st.status(), "pid 7: exec'd /bin/x\\x1b[2J, not traced");
    }
}
