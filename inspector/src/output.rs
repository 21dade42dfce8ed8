//! Script-friendly output: `--once` (the `/proc/spl/kmem/slab` text) and
//! `--json` (one document, or one line per sample).
//!
//! Both print what one [`Sample`] says, through the allocator's own writers:
//! `--once` is [`slabscope_probes::stats::proc_slab_text`] over the caches converted
//! with `CacheStats::from(&CacheSnapshot)`, so it is byte for byte what the
//! traced program would print itself; `--json` serializes the same
//! [`CacheStats`] plus the transition counters the collector kept.
//!
//! Names come from the target, so both go through [`crate::escape`]: `--once`
//! shows them with visible escapes, `--json` as `\uXXXX` escapes that a
//! JSON parser turns back into the real name.
//!
//! Caches are printed by name (then id): the collector cannot know the
//! creation order `/proc/spl/kmem/slab` uses. Destroyed caches are left out,
//! as `/proc` leaves them out.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Serialize;
use slabscope_probes::CacheCounters;
use slabscope_probes::flags::{KMC_NAMES, kmc_names};
use slabscope_probes::stats::{CacheStats, proc_slab_text};

use crate::columns::Column;
use crate::escape::{ascii_json, escape};
use crate::sample::{Sample, Update};

/// Why no sample could be printed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// No cache was reported within the `--timeout` given.
    #[error(
        "no cache reported within {0:?}: caches show up when they fire a probe, and every cache \
         fires cache_stats each SLABSCOPE_STATS_INTERVAL_MS (default 1000 ms); if the target runs \
         with it set to 0 or very high, restart it with e.g. SLABSCOPE_STATS_INTERVAL_MS=1000, \
         or pass a longer --timeout"
    )]
    Timeout(Duration),
    /// Every traced process exited before a cache fired a probe.
    #[error("the target exited before it reported any cache")]
    TargetExited,
    /// The collector hung up without a sample or an error.
    #[error("the collector stopped before any cache was reported")]
    Disconnected,
    /// The collector stopped with this error.
    #[error("the collector failed: {0}")]
    Failed(String),
    /// Standard output could not be written (a closed pipe, a full disk).
    #[error("writing the output")]
    Write(#[source] io::Error),
}

/// The live caches of `sample`, as (pid, stats), by pid then name then id.
pub fn live_caches(sample: &Sample) -> Vec<(u32, CacheStats)> {
    live_caches_sorted(sample, None)
}

/// The live caches of `sample` in `-s`'s order ([`crate::order`]).
pub fn live_caches_sorted(sample: &Sample, by: Option<Column>) -> Vec<(u32, CacheStats)> {
    let mut caches: Vec<(u32, CacheStats)> = sample
        .caches
        .iter()
        .filter(|c| !c.destroyed)
        .map(|c| (c.pid, CacheStats::from(&c.snapshot)))
        .collect();
    crate::order::sort(&mut caches, by);
    caches
}

/// `sample` as `/proc/spl/kmem/slab` text. With several processes traced,
/// each gets its own table after a `pid N:` line.
///
/// # Examples
///
/// ```
/// use slabscope_probes::stats::PROC_SLAB_HEADER;
/// use slabscope_inspector::output::once_text;
/// use slabscope_inspector::sample::Sample;
///
/// // No cache yet: just the header, as an empty /proc/spl/kmem/slab.
/// assert_eq!(once_text(&Sample::default()), PROC_SLAB_HEADER);
/// ```
pub fn once_text(sample: &Sample) -> String {
    once_text_sorted(sample, None)
}

/// [`once_text`] with the caches in `-s`'s order ([`crate::order`]).
pub fn once_text_sorted(sample: &Sample, by: Option<Column>) -> String {
    let mut caches = live_caches_sorted(sample, by);
    // After sorting by the real name; printed escaped.
    for (_, stats) in &mut caches {
        stats.name = escape(&stats.name).into_owned();
    }
    let mut pids: Vec<u32> = caches.iter().map(|(p, _)| *p).collect();
    pids.dedup();
    if pids.len() <= 1 {
        let stats: Vec<CacheStats> = caches.into_iter().map(|(_, s)| s).collect();
        return proc_slab_text(&stats);
    }
    let mut out = String::new();
    for pid in pids {
        let stats: Vec<CacheStats> = caches
            .iter()
            .filter(|(p, _)| *p == pid)
            .map(|(_, s)| s.clone())
            .collect();
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("pid {pid}:\n"));
        out.push_str(&proc_slab_text(&stats));
    }
    out
}

/// The version of the `--json` document's layout, its `schema_version`.
///
/// It changes (by one) when a field is removed or renamed, or changes its
/// type or unit; adding a field does not change it, so a reader should
/// ignore fields it does not know. docs/JSON.md lists the versions.
pub const SCHEMA_VERSION: u32 = 1;

/// One cache in the JSON output: every field of the allocator's
/// `CacheStats` at the top level, plus `pid`, `destroyed`, `flag_names`, the probe `counters` and the
/// eBPF program's `histograms`.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct JsonCache {
    /// The process the cache lives in.
    pub pid: u32,
    /// Whether the cache fired `cache_destroy`; its numbers are then its
    /// last state.
    pub destroyed: bool,
    /// The cache's statistics, flattened into this object.
    #[serde(flatten)]
    pub stats: CacheStats,
    /// The names of the bits set in `flags`, SPL's (`KMC_SLAB`,
    /// `KMC_GROWING`, ...), creation flags first; a bit slabscope does not
    /// define shows as its hex value (`0x40`).
    pub flag_names: Vec<String>,
    /// Probe hits of this cache since the collector attached.
    pub counters: CacheCounters,
    /// The eBPF program's timings of this cache, when it has any (the key
    /// is absent when it has none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub histograms: Vec<crate::histogram::JsonHistogram>,
}

/// The SPL names of the bits set in `flags`, in the contract's order; bits
/// without a name as their hex value.
///
/// # Examples
///
/// ```
/// use slabscope_inspector::output::kmc_flag_names;
/// use slabscope_probes::flags::{KMC_GROWING, KMC_SLAB};
///
/// assert_eq!(kmc_flag_names(KMC_GROWING | KMC_SLAB), ["KMC_SLAB", "KMC_GROWING"]);
/// assert_eq!(kmc_flag_names(KMC_SLAB | 1 << 40), ["KMC_SLAB", "0x10000000000"]);
/// assert!(kmc_flag_names(0).is_empty());
/// ```
pub fn kmc_flag_names(flags: u64) -> Vec<String> {
    let known = KMC_NAMES.iter().fold(0, |m, (bit, _)| m | bit);
    let mut names: Vec<String> = kmc_names(flags).map(str::to_string).collect();
    let mut unknown = flags & !known;
    while unknown != 0 {
        let bit = unknown & unknown.wrapping_neg();
        names.push(format!("{bit:#x}"));
        unknown &= !bit;
    }
    names
}

/// One sample in the JSON output: the document `--json` prints (once, or
/// once per line with `--interval`). docs/JSON.md documents every field; the
/// JSON Schema generated from this type is docs/slabscope.schema.json.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[schemars(title = "slabscope --json")]
pub struct JsonSample {
    /// The version of this layout (`SCHEMA_VERSION`): 1, raised when a
    /// field is removed or renamed or changes its type or unit.
    pub schema_version: u32,
    /// When the sample was taken, in seconds since the collector attached.
    pub at: f64,
    /// Probe hits delivered through the ring buffer since the collector
    /// attached.
    pub events_total: u64,
    /// Probe hits the eBPF program could not deliver because the ring buffer
    /// was full, since the collector attached (the counters and snapshots
    /// stay exact; only the event list misses them).
    pub lost_events: u64,
    /// Probe hits ignored because their snapshot pointer could not be read.
    pub unreadable_snapshots: u64,
    /// Every cache seen, destroyed ones included (`destroyed: true`).
    pub caches: Vec<JsonCache>,
}

impl From<&Sample> for JsonSample {
    fn from(s: &Sample) -> JsonSample {
        let mut caches: Vec<JsonCache> = s
            .caches
            .iter()
            .map(|c| JsonCache {
                pid: c.pid,
                destroyed: c.destroyed,
                stats: CacheStats::from(&c.snapshot),
                flag_names: kmc_flag_names(c.snapshot.flags),
                counters: c.counters,
                histograms: crate::histogram::of_cache(&s.histograms, c.pid, c.snapshot.cache_id)
                    .iter()
                    .map(|(kind, h)| crate::histogram::JsonHistogram::new(*kind, h))
                    .collect(),
            })
            .collect();
        caches.sort_by(|a, b| crate::order::compare(None, (a.pid, &a.stats), (b.pid, &b.stats)));
        JsonSample {
            schema_version: SCHEMA_VERSION,
            at: s.at.as_secs_f64(),
            events_total: s.events_total,
            lost_events: s.lost_events,
            unreadable_snapshots: s.unreadable_snapshots,
            caches,
        }
    }
}

/// The JSON Schema (draft 2020-12) of the `--json` document,
/// [`JsonSample`], pretty-printed with a final newline: what
/// docs/slabscope.schema.json holds.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(JsonSample);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema always serializes");
    text.push('\n');
    text
}

/// `sample` as one JSON document, pretty-printed, in printable ASCII
/// ([`ascii_json`]: names keep every character, escaped).
pub fn json_pretty(sample: &Sample) -> String {
    json_pretty_sorted(sample, None)
}

/// [`json_pretty`] with the caches in `-s`'s order ([`crate::order`]).
pub fn json_pretty_sorted(sample: &Sample, by: Option<Column>) -> String {
    let json = serde_json::to_string_pretty(&JsonSample::from(sample).sorted(by))
        .expect("plain data always serializes");
    ascii_json(&json).into_owned()
}

/// `sample` as one JSON line (no newline), in printable ASCII.
pub fn json_line(sample: &Sample) -> String {
    json_line_sorted(sample, None)
}

/// [`json_line`] with the caches in `-s`'s order ([`crate::order`]).
pub fn json_line_sorted(sample: &Sample, by: Option<Column>) -> String {
    let json = serde_json::to_string(&JsonSample::from(sample).sorted(by))
        .expect("plain data always serializes");
    ascii_json(&json).into_owned()
}

/// How a script-friendly output ended: what the views must still tell the
/// user on stderr.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ending {
    /// Traced processes that exited while traced, in the order reported.
    pub exited: Vec<u32>,
    /// Traced processes that exec'd another program, and that program.
    pub execed: Vec<(u32, String)>,
    /// Events lost to a full ring buffer, as of the last sample printed.
    pub lost_events: u64,
    /// Probe hits ignored for an unreadable snapshot, as of the last sample.
    pub unreadable_snapshots: u64,
}

impl Ending {
    /// Notes for stderr, one per line (none when there is nothing to say).
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for pid in &self.exited {
            notes.push(format!(
                "pid {pid} exited while traced; the output shows its last state"
            ));
        }
        for (pid, program) in &self.execed {
            notes.push(format!(
                "pid {pid} exec'd {program} while traced; the new program is not traced, \
                 and the output shows the state before the exec"
            ));
        }
        if self.lost_events > 0 {
            notes.push(format!(
                "{} events were lost because the ring buffer was full (the counts and \
                 snapshots are still exact); use a larger --ring-size to keep every event",
                self.lost_events
            ));
        }
        if self.unreadable_snapshots > 0 {
            notes.push(format!(
                "{} probe hits were ignored because the snapshot they point to could not be \
                 read (a bad pointer from the target, or memory unmapped under the probe); \
                 no cache is made up from them",
                self.unreadable_snapshots
            ));
        }
        notes
    }
}

/// Prints one JSON line per sample until the collector stops, or, with
/// `stop_on_exit`, a traced process exited and its last sample (within
/// [`EXIT_GRACE`]) was printed. Returns the lines written.
pub fn json_lines(
    rx: &Receiver<Update>,
    out: impl Write,
    stop_on_exit: bool,
) -> Result<u64, OutputError> {
    json_lines_ending(rx, out, stop_on_exit).map(|(lines, _)| lines)
}

/// [`json_lines`], also saying how the output ended.
pub fn json_lines_ending(
    rx: &Receiver<Update>,
    out: impl Write,
    stop_on_exit: bool,
) -> Result<(u64, Ending), OutputError> {
    json_lines_sorted(rx, out, stop_on_exit, None)
}

/// [`json_lines_ending`] with each line's caches in `-s`'s order
/// ([`crate::order`]).
pub fn json_lines_sorted(
    rx: &Receiver<Update>,
    mut out: impl Write,
    stop_on_exit: bool,
    by: Option<Column>,
) -> Result<(u64, Ending), OutputError> {
    let mut lines = 0;
    let mut ending = Ending::default();
    let mut deadline: Option<Instant> = None;
    loop {
        let update = match deadline {
            None => match rx.recv() {
                Ok(u) => u,
                Err(_) => break,
            },
            Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                Ok(u) => u,
                Err(_) => break,
            },
        };
        match update {
            Update::Sample(s) => {
                writeln!(out, "{}", json_line_sorted(&s, by)).map_err(OutputError::Write)?;
                out.flush().map_err(OutputError::Write)?;
                lines += 1;
                ending.lost_events = s.lost_events;
                ending.unreadable_snapshots = s.unreadable_snapshots;
            }
            Update::TargetExited { pid } => {
                ending.exited.push(pid);
                if stop_on_exit && deadline.is_none() {
                    deadline = Some(Instant::now() + EXIT_GRACE);
                }
            }
            Update::TargetExeced { pid, program } => {
                ending.execed.push((pid, program));
                if stop_on_exit && deadline.is_none() {
                    deadline = Some(Instant::now() + EXIT_GRACE);
                }
            }
            Update::Failed(msg) => return Err(OutputError::Failed(msg)),
            _ => {}
        }
    }
    Ok((lines, ending))
}

fn keys(s: &Sample) -> Vec<(u32, u64)> {
    let mut k: Vec<(u32, u64)> = s
        .caches
        .iter()
        .filter(|c| !c.destroyed)
        .map(|c| (c.pid, c.snapshot.cache_id))
        .collect();
    k.sort_unstable();
    k
}

/// How long to keep reading after the target exited: the collector sends a
/// last sample after [`Update::TargetExited`], then hangs up.
pub const EXIT_GRACE: Duration = Duration::from_secs(1);

/// Waits for a sample that shows the target's caches: the first sample with
/// caches whose set of caches the previous sample already had (so a sample
/// taken in the middle of a `cache_stats` burst is not printed half full).
/// When the time is up, the target exits (after its last sample, for at
/// most [`EXIT_GRACE`]) or the collector stops, the last sample with caches
/// is taken if there is one.
pub fn wait_for_caches(rx: &Receiver<Update>, timeout: Duration) -> Result<Sample, OutputError> {
    wait_for_caches_ending(rx, timeout).map(|(sample, _)| sample)
}

/// [`wait_for_caches`], also saying how the wait ended: the processes that
/// exited before the sample was taken, the events lost by then.
pub fn wait_for_caches_ending(
    rx: &Receiver<Update>,
    timeout: Duration,
) -> Result<(Sample, Ending), OutputError> {
    let mut deadline = Instant::now() + timeout;
    let mut last: Option<Sample> = None;
    let mut exited = false;
    let mut ending = Ending::default();
    let done = |s: Sample, mut ending: Ending| {
        ending.lost_events = s.lost_events;
        ending.unreadable_snapshots = s.unreadable_snapshots;
        Ok((s, ending))
    };
    let end = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Update::Sample(s)) => {
                let k = keys(&s);
                if k.is_empty() {
                    continue;
                }
                if !exited && last.as_ref().is_some_and(|l| keys(l) == k) {
                    return done(s, ending);
                }
                last = Some(s);
            }
            Ok(Update::Failed(msg)) => return Err(OutputError::Failed(msg)),
            Ok(Update::TargetExited { pid }) => {
                ending.exited.push(pid);
                exited = true;
                deadline = deadline.min(Instant::now() + EXIT_GRACE);
            }
            Ok(Update::TargetExeced { pid, program }) => {
                ending.execed.push((pid, program));
                exited = true;
                deadline = deadline.min(Instant::now() + EXIT_GRACE);
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) if exited => break OutputError::TargetExited,
            Err(RecvTimeoutError::Timeout) => break OutputError::Timeout(timeout),
            Err(RecvTimeoutError::Disconnected) if exited => break OutputError::TargetExited,
            Err(RecvTimeoutError::Disconnected) => break OutputError::Disconnected,
        }
    };
    match last {
        Some(s) => done(s, ending),
        None => Err(end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::CacheState;
    use crate::testdata::{HOSTILE_NAMES, cache, caches, sample};
    use slabscope_probes::stats::PROC_SLAB_HEADER;
    use std::sync::mpsc;

    #[test]
    fn once_is_the_allocators_own_text() {
        let s = sample(1000, 0, caches(2));
        let text = once_text(&s);
        let mut expected: Vec<CacheStats> = s
            .caches
            .iter()
            .filter(|c| !c.destroyed)
            .map(|c| CacheStats::from(&c.snapshot))
            .collect();
        expected.sort_by(|a, b| crate::order::natural(&a.name, &b.name));
        assert_eq!(text, proc_slab_text(&expected));
        assert!(
            !text.contains("scratch"),
            "destroyed caches are left out:\n{text}"
        );
        insta::assert_snapshot!(text);
    }

    #[test]
    fn once_with_several_processes_splits_by_pid() {
        let s = sample(0, 0, vec![cache(7, 1, "a", 1), cache(8, 1, "a", 2)]);
        let text = once_text(&s);
        assert!(text.starts_with("pid 7:\n--------"), "{text}");
        assert!(text.contains("\n\npid 8:\n"), "{text}");
    }

    #[test]
    fn json_carries_stats_and_counters() {
        let s = sample(1500, 12, caches(1));
        let doc: serde_json::Value = serde_json::from_str(&json_pretty(&s)).expect("valid JSON");
        assert_eq!(doc["at"], 1.5);
        assert_eq!(doc["events_total"], 12);
        let arr = doc["caches"].as_array().expect("caches array");
        assert_eq!(arr.len(), 5);
        let arc = arr
            .iter()
            .find(|c| c["name"] == "arc_buf_hdr_t_full")
            .expect("arc cache");
        let stats = CacheStats::from(&s.caches[2].snapshot);
        // Every CacheStats field is there, with the allocator's own names.
        let mut as_stats = arc.clone();
        for extra in [
            "pid",
            "destroyed",
            "counters",
            "flag_names",
            "schema_version",
        ] {
            as_stats.as_object_mut().unwrap().remove(extra);
        }
        let back: CacheStats = serde_json::from_value(as_stats).expect("a CacheStats");
        assert_eq!(back, stats);
        assert_eq!(arc["pid"], 4242);
        assert_eq!(arc["counters"]["deadlocks"], 1);
        assert_eq!(arc["counters"]["emergency_allocs"], 1);
        let line = json_line(&s);
        assert!(!line.contains('\n'));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&line).unwrap(),
            doc
        );
    }

    #[test]
    fn hostile_names_are_escaped_in_text_and_ascii_in_json() {
        let hostile: Vec<CacheState> = HOSTILE_NAMES
            .iter()
            .enumerate()
            .map(|(i, n)| cache(7, i as u64 + 1, n, 1))
            .collect();
        let s = sample(0, 0, hostile);
        let text = once_text(&s);
        let rows: Vec<&str> = text[PROC_SLAB_HEADER.len()..].lines().collect();
        assert_eq!(
            rows.len(),
            HOSTILE_NAMES.len(),
            "one line per cache:\n{text}"
        );
        for row in &rows {
            assert!(
                row.chars().all(|c| c == ' ' || c.is_ascii_graphic()),
                "{row:?}"
            );
            // `{name:<36}  0x...`: the flags column starts at column 38.
            assert_eq!(&row[38..40], "0x", "a name moved the columns: {row:?}");
        }
        assert!(rows.iter().any(|r| r.starts_with("\\x1b[2J ")), "{text}");

        for json in [json_pretty(&s), json_line(&s)] {
            assert!(
                json.bytes()
                    .all(|b| b == b'\n' || (0x20..0x7f).contains(&b)),
                "{json}"
            );
            let doc: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
            let mut names: Vec<&str> = doc["caches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap())
                .collect();
            let mut expected = HOSTILE_NAMES.to_vec();
            names.sort_unstable();
            expected.sort_unstable();
            assert_eq!(names, expected, "JSON keeps the real names");
        }
    }

    #[test]
    fn waits_until_the_set_of_caches_settles() {
        let (tx, rx) = mpsc::channel();
        tx.send(Update::Sample(sample(0, 0, vec![]))).unwrap();
        tx.send(Update::Sample(sample(1, 0, vec![cache(1, 1, "a", 1)])))
            .unwrap();
        tx.send(Update::Sample(sample(
            2,
            0,
            vec![cache(1, 1, "a", 1), cache(1, 2, "b", 1)],
        )))
        .unwrap();
        tx.send(Update::Sample(sample(
            3,
            0,
            vec![cache(1, 1, "a", 2), cache(1, 2, "b", 1)],
        )))
        .unwrap();
        let s = wait_for_caches(&rx, Duration::from_secs(5)).expect("a sample");
        assert_eq!(s.at, Duration::from_millis(3));
    }

    #[test]
    fn takes_the_last_sample_when_the_target_exits() {
        let (tx, rx) = mpsc::channel();
        tx.send(Update::Sample(sample(0, 0, vec![cache(1, 1, "a", 1)])))
            .unwrap();
        tx.send(Update::TargetExited { pid: 1 }).unwrap();
        // The collector's last sample, sent after the exit, wins.
        tx.send(Update::Sample(sample(1, 0, vec![cache(1, 1, "a", 1)])))
            .unwrap();
        drop(tx);
        assert_eq!(
            wait_for_caches(&rx, Duration::from_secs(5)).unwrap().at,
            Duration::from_millis(1)
        );
    }

    #[test]
    fn json_lines_until_the_target_exits() {
        let (tx, rx) = mpsc::channel();
        tx.send(Update::Sample(sample(1000, 0, vec![cache(1, 1, "a", 1)])))
            .unwrap();
        tx.send(Update::Event(crate::testdata::event(
            1,
            1,
            "a",
            slabscope_probes::ProbeKind::Reap,
            0,
        )))
        .unwrap();
        tx.send(Update::Sample(sample(2000, 1, vec![cache(1, 1, "a", 2)])))
            .unwrap();
        tx.send(Update::TargetExited { pid: 1 }).unwrap();
        // The collector's last sample after the exit is printed too.
        tx.send(Update::Sample(sample(3000, 1, vec![cache(1, 1, "a", 3)])))
            .unwrap();
        let started = Instant::now();
        let mut out = Vec::new();
        assert_eq!(json_lines(&rx, &mut out, true).expect("lines"), 3);
        assert!(
            started.elapsed() < EXIT_GRACE * 3,
            "it stops after the grace period"
        );
        let text = String::from_utf8(out).unwrap();
        let docs: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON doc per line"))
            .collect();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[1]["caches"][0]["obj_alloc"], 2);
        assert_eq!(docs[2]["caches"][0]["obj_alloc"], 3);
        // Without stop_on_exit (--exe) it follows until the collector hangs up.
        tx.send(Update::TargetExited { pid: 1 }).unwrap();
        tx.send(Update::Sample(sample(4000, 1, vec![]))).unwrap();
        let mut out = Vec::new();
        drop(tx);
        assert_eq!(json_lines(&rx, &mut out, false).expect("lines"), 1);
    }

    #[test]
    fn the_ending_names_exits_and_lost_events() {
        let (tx, rx) = mpsc::channel();
        tx.send(Update::Sample(sample(0, 0, vec![cache(9, 1, "a", 1)])))
            .unwrap();
        tx.send(Update::TargetExited { pid: 9 }).unwrap();
        let mut last = sample(1, 0, vec![cache(9, 1, "a", 2)]);
        last.lost_events = 17;
        tx.send(Update::Sample(last.clone())).unwrap();
        drop(tx);
        let (s, ending) = wait_for_caches_ending(&rx, Duration::from_secs(5)).unwrap();
        assert_eq!(s, last);
        assert_eq!(
            ending,
            Ending {
                exited: vec![9],
                lost_events: 17,
                ..Ending::default()
            }
        );
        let notes = ending.notes();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("pid 9 exited while traced"), "{notes:?}");
        assert!(notes[1].starts_with("17 events were lost"), "{notes:?}");
        assert!(Ending::default().notes().is_empty());
        let execed = Ending {
            execed: vec![(9, "/usr/bin/sleep".into())],
            ..Ending::default()
        };
        assert_eq!(
            execed.notes(),
            [
                "pid 9 exec'd /usr/bin/sleep while traced; the new program is not traced, and \
              the output shows the state before the exec"
            ]
        );
    }

    #[test]
    fn reports_why_nothing_came() {
        let (tx, rx) = mpsc::channel();
        tx.send(Update::TargetExited { pid: 1 }).unwrap();
        assert!(matches!(
            wait_for_caches(&rx, Duration::from_secs(5)),
            Err(OutputError::TargetExited)
        ));
        let (tx, rx) = mpsc::channel::<Update>();
        drop(tx);
        assert!(matches!(
            wait_for_caches(&rx, Duration::from_secs(5)),
            Err(OutputError::Disconnected)
        ));
        let (_tx, rx) = mpsc::channel::<Update>();
        let e = wait_for_caches(&rx, Duration::from_millis(20)).unwrap_err();
        assert!(
            matches!(e, OutputError::Timeout(d) if d == Duration::from_millis(20)),
            "{e}"
        );
        assert!(e.to_string().contains("SLABSCOPE_STATS_INTERVAL_MS"));
        let (tx, rx) = mpsc::channel();
        tx.send(Update::Sample(sample(1, 0, vec![cache(1, 1, "a", 1)])))
            .unwrap();
        tx.send(Update::Failed("map read failed".into())).unwrap();
        let e = wait_for_caches(&rx, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.to_string(), "the collector failed: map read failed");
    }
}
