//! The `/metrics` page: every traced cache in the OpenMetrics text format,
//! through the `prometheus-client` crate.
//!
//! The set of targets changes between scrapes, so the families are not
//! registered metrics but a [`Collector`] that encodes what [`Targets`] holds
//! at scrape time: a series exists exactly while its process is traced and
//! its cache alive.
//!
//! Per (pid, comm, cache) series carry every `/proc/spl/kmem/slab` column,
//! magazine and depot occupancy, and the counts of grows, deadlocks,
//! emergency objects, reaps and reclaims. Counts that the allocator keeps
//! itself (slabs created, deadlocks) are its own, since the cache was
//! created; counts of probe hits (grows, reaps, ...) are the eBPF
//! program's, since the exporter attached: both only grow, and a new
//! process (or a new exporter) starts them again from zero, which
//! Prometheus' `rate()` treats as a counter reset.
//!
//! Labels: `pid`, `comm`, `cache`, and `cache_id` (the cache's address, so
//! two caches of one name stay two series). `comm` and `cache` are escaped
//! by [`labels`]; the name is recoverable from the stored value.

use std::time::Instant;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet, text},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};
use std::collections::BTreeMap;

use slabscope_probes::{HistKind, Log2Histogram};

use crate::sample::CacheState;

use super::families::{
    HISTOGRAMS, SERIES_PER_HISTOGRAM, families, prometheus_buckets, series_per_cache,
};
use super::{discover::ProcKey, labels, targets::Targets};

/// The labels of one cache's series, already escaped for the exposition.
type CacheLabels = [(&'static str, String); 4];

/// One cache ready to encode.
struct Row {
    labels: CacheLabels,
    state: CacheState,
    histograms: Vec<(HistKind, Log2Histogram)>,
}

/// One process ready to encode.
struct Proc {
    labels: [(&'static str, String); 2],
    start_time: f64,
}

/// What one scrape shows, copied out of [`Targets`] so the lock is not
/// held while encoding.
struct View {
    rows: Vec<Row>,
    procs: Vec<Proc>,
    events: u64,
    lost: u64,
    unreadable: u64,
    forgotten: u64,
    files: u64,
    map_entries: u64,
    attach_failures: u64,
    series: usize,
    dropped_now: u64,
    dropped_total: u64,
    last_scrape_seconds: f64,
}

/// The exporter's metrics, encoded at each scrape.
#[derive(Debug)]
pub struct Exporter {
    targets: std::sync::Arc<Targets>,
    max_series: usize,
}

impl Exporter {
    /// An exporter of `targets` that stops adding per-cache series beyond
    /// `max_series` (and counts what it left out).
    pub fn new(targets: std::sync::Arc<Targets>, max_series: usize) -> Exporter {
        Exporter {
            targets,
            max_series,
        }
    }

    fn view(&self) -> View {
        let per_cache = series_per_cache();
        let mut inner = self.targets.lock();
        let mut rows = Vec::new();
        let mut procs = Vec::new();
        let counts = inner.counts();
        let mut series = 0usize;
        let mut dropped_now = 0u64;
        for (key, p) in &inner.procs {
            let ProcKey { pid, .. } = *key;
            let comm = labels::label_value(&p.comm);
            procs.push(Proc {
                labels: [("pid", pid.to_string()), ("comm", comm.clone())],
                start_time: p.start_time,
            });
            let caches = p
                .files
                .iter()
                .filter_map(|id| inner.files.get(id)?.sample.caches.get(&pid))
                .flatten();
            let hists = p
                .files
                .iter()
                .filter_map(|id| inner.files.get(id)?.sample.histograms.get(&pid))
                .flatten();
            let mut by_cache: BTreeMap<u64, Vec<(HistKind, Log2Histogram)>> = BTreeMap::new();
            for ((cache_id, kind), h) in hists {
                by_cache.entry(*cache_id).or_default().push((*kind, *h));
            }
            for c in caches.filter(|c| !c.destroyed) {
                let histograms = by_cache.remove(&c.snapshot.cache_id).unwrap_or_default();
                let cost = per_cache + histograms.len() * SERIES_PER_HISTOGRAM;
                if series + cost > self.max_series {
                    dropped_now += cost as u64;
                    continue;
                }
                series += cost;
                rows.push(Row {
                    labels: [
                        ("pid", pid.to_string()),
                        ("comm", comm.clone()),
                        ("cache", labels::label_value(c.snapshot.name_bytes())),
                        ("cache_id", format!("{:#x}", c.snapshot.cache_id)),
                    ],
                    state: *c,
                    histograms,
                });
            }
        }
        inner.totals.series_dropped += dropped_now;
        View {
            rows,
            procs,
            events: counts.events,
            lost: counts.lost,
            unreadable: counts.unreadable,
            forgotten: counts.forgotten,
            files: inner.files.len() as u64,
            map_entries: inner.files.values().map(|w| w.sample.map_entries).sum(),
            attach_failures: inner.totals.attach_failures,
            series,
            dropped_now,
            dropped_total: inner.totals.series_dropped,
            last_scrape_seconds: inner.totals.last_scrape_seconds,
        }
    }

    /// The whole page, and records how long it took to encode.
    pub fn render(self: &std::sync::Arc<Self>) -> String {
        let started = Instant::now();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(std::sync::Arc::clone(self)));
        let mut out = String::new();
        // Encoding into a String fails only if a metric's encoder does,
        // and ours write plain numbers.
        if let Err(e) = text::encode(&mut out, &registry) {
            out = format!("# encoding failed: {e}\n# EOF\n");
        }
        self.targets.lock().totals.last_scrape_seconds = started.elapsed().as_secs_f64();
        out
    }
}

fn encode_gauge<L, V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: impl IntoIterator<Item = (L, V)>,
) -> Result<(), std::fmt::Error>
where
    L: prometheus_client::encoding::EncodeLabelSet,
    V: prometheus_client::encoding::EncodeGaugeValue + Copy + std::fmt::Debug + Send + Sync,
{
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn encode_counter<L: prometheus_client::encoding::EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A family of one unlabelled gauge.
fn single_gauge<V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: V,
) -> Result<(), std::fmt::Error>
where
    V: prometheus_client::encoding::EncodeGaugeValue + Copy + std::fmt::Debug + Send + Sync,
{
    ConstGauge::new(v).encode(enc.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

/// A family of one unlabelled counter.
fn single_counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    ConstCounter::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// The Prometheus text format (version 0.0.4) of an OpenMetrics text, for
/// scrapers and tools that do not ask for OpenMetrics (`promtool check
/// metrics`, `curl`): a counter family is named after its `_total` samples,
/// and `# UNIT` and `# EOF` are left out.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len() + 1024);
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if line.starts_with("# HELP ") {
            help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, ""));
            let rename = kind == "counter";
            if let Some(h) = help.take() {
                let text = h.strip_prefix("# HELP ").unwrap_or(h);
                let text = text.strip_prefix(name).unwrap_or(text);
                out.push_str("# HELP ");
                out.push_str(name);
                if rename {
                    out.push_str("_total");
                }
                out.push_str(text);
                out.push('\n');
            }
            out.push_str("# TYPE ");
            out.push_str(name);
            if rename {
                out.push_str("_total");
            }
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

impl Collector for Exporter {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let view = self.view();
        for f in families() {
            let series = view.rows.iter().map(|r| {
                let v = (f.value)(&r.state.snapshot, &r.state.counters);
                (r.labels.clone(), v)
            });
            match f.kind {
                MetricType::Counter => {
                    encode_counter(&mut enc, f.name, f.help, f.unit.as_ref(), series)?
                }
                _ => encode_gauge(&mut enc, f.name, f.help, f.unit.as_ref(), series)?,
            }
        }
        for (kind, name, help) in HISTOGRAMS {
            let mut m =
                enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
            for r in &view.rows {
                for (_, h) in r.histograms.iter().filter(|(k, _)| *k == kind) {
                    let (buckets, sum, count) = prometheus_buckets(h);
                    m.encode_family(&r.labels)?
                        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
                }
            }
        }
        encode_gauge(
            &mut enc,
            "slabscope_process_start_time",
            "Start time of a traced process since the Unix epoch.",
            Some(&Unit::Seconds),
            view.procs.iter().map(|p| (p.labels.clone(), p.start_time)),
        )?;
        single_gauge(
            &mut enc,
            "slabscope_exporter_attached_processes",
            "Processes the exporter traces now.",
            None,
            view.procs.len() as u64,
        )?;
        single_counter(
            &mut enc,
            "slabscope_exporter_exited_processes",
            "Traced processes that exited, whose caches were dropped from the exporter and the kernel's maps.",
            view.forgotten,
        )?;
        single_gauge(
            &mut enc,
            "slabscope_exporter_watched_files",
            "Files with slabscope probes (executables, shared objects) the exporter has attached to.",
            None,
            view.files,
        )?;
        single_gauge(
            &mut enc,
            "slabscope_exporter_kernel_map_entries",
            "Entries the exporter's eBPF maps hold for live processes: caches, histograms, timings in flight.",
            None,
            view.map_entries,
        )?;
        single_counter(
            &mut enc,
            "slabscope_exporter_attach_failures",
            "Files with slabscope probes that the exporter could not attach to (stderr says why).",
            view.attach_failures,
        )?;
        single_counter(
            &mut enc,
            "slabscope_exporter_events",
            "Probe events delivered through the eBPF ring buffers, every target's since it was attached.",
            view.events,
        )?;
        single_counter(
            &mut enc,
            "slabscope_exporter_lost_events",
            "Probe events lost because a ring buffer was full (counts stay exact: they live in eBPF maps).",
            view.lost,
        )?;
        single_counter(
            &mut enc,
            "slabscope_exporter_unreadable_snapshots",
            "Probe hits ignored because the snapshot they point to could not be read (no cache is made up for them).",
            view.unreadable,
        )?;
        single_gauge(
            &mut enc,
            "slabscope_exporter_series",
            "Per-cache series in this scrape.",
            None,
            view.series as u64,
        )?;
        single_gauge(
            &mut enc,
            "slabscope_exporter_series_limit",
            "Most per-cache series one scrape carries (--max-series).",
            None,
            self.max_series as u64,
        )?;
        single_gauge(
            &mut enc,
            "slabscope_exporter_series_over_limit",
            "Per-cache series left out of this scrape by the series limit.",
            None,
            view.dropped_now,
        )?;
        single_counter(
            &mut enc,
            "slabscope_exporter_dropped_series",
            "Per-cache series left out by the series limit, summed over scrapes.",
            view.dropped_total,
        )?;
        single_gauge(
            &mut enc,
            "slabscope_exporter_scrape_duration",
            "Time the previous scrape took to encode.",
            Some(&Unit::Seconds),
            view.last_scrape_seconds,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use slabscope_probes::{CacheCounters, CacheSnapshot, SlabCounters, name_buf};
    use std::sync::Arc;

    use super::*;
    use crate::collector::target::FileId;
    use crate::serve::files::FileSample;
    use crate::serve::targets::{Proc as TargetProc, Watched};

    fn cache(id: u64, name: &[u8], obj_alloc: u64, destroyed: bool) -> CacheState {
        CacheState {
            pid: 42,
            snapshot: CacheSnapshot {
                cache_id: id,
                obj_size: 64,
                slab_size: 4096,
                counters: SlabCounters {
                    slab_total: 3,
                    obj_alloc,
                    ..SlabCounters::ZERO
                },
                depot_objs: 7,
                name: name_buf(name),
                ..CacheSnapshot::ZERO
            },
            counters: CacheCounters {
                grows: 5,
                reaps: 2,
                ..CacheCounters::default()
            },
            destroyed,
        }
    }

    fn exporter(max_series: usize) -> Arc<Exporter> {
        let targets = Arc::new(Targets::default());
        let file = FileId {
            major: 1,
            minor: 2,
            inode: 3,
        };
        let mut sample = FileSample {
            events_total: 100,
            lost_events: 3,
            unreadable_snapshots: 5,
            map_entries: 3,
            forgotten: 4,
            ..FileSample::default()
        };
        sample.caches.insert(
            42,
            vec![
                cache(0x10, b"zio_cache", 11, false),
                cache(0x20, b"evil\x1b[2J\"x\\\ny", 22, false),
                cache(0x30, b"gone", 33, true),
            ],
        );
        let mut grow = Log2Histogram::ZERO;
        grow.buckets[0] = 1; // 0 ns: merged into the first bucket
        grow.buckets[20] = 2; // [0.52 ms, 1.05 ms)
        grow.buckets[40] = 1; // beyond 69 s: +Inf only
        grow.sum_ns = 3_000_000;
        sample
            .histograms
            .entry(42)
            .or_default()
            .insert((0x10, HistKind::Grow), grow);
        // A process no longer exported: its caches are not shown.
        sample
            .caches
            .insert(43, vec![cache(0x40, b"stale", 1, false)]);
        let mut watched = Watched::new("/usr/bin/demo".into(), None);
        watched.sample = sample;
        let mut inner = targets.lock();
        inner.files.insert(file, watched);
        inner.procs.insert(
            ProcKey {
                pid: 42,
                start_ticks: 1,
            },
            TargetProc {
                comm: b"dem\x07o".to_vec(),
                start_time: 1.5e9,
                files: vec![file],
            },
        );
        drop(inner);
        Arc::new(Exporter::new(targets, max_series))
    }

    fn value(page: &str, prefix: &str) -> Option<String> {
        page.lines()
            .find(|l| l.starts_with(prefix))
            .map(|l| l.rsplit_once(' ').unwrap().1.to_owned())
    }

    #[test]
    fn every_family_has_help_and_type_and_base_units() {
        let page = exporter(1000).render();
        assert!(page.ends_with("# EOF\n"), "{page}");
        let mut families = 0;
        for line in page.lines().filter(|l| l.starts_with("# TYPE ")) {
            families += 1;
            let name = line.split(' ').nth(2).unwrap();
            assert!(
                page.contains(&format!("# HELP {name} ")),
                "{name} has no HELP"
            );
            assert!(name.starts_with("slabscope_"), "{name}");
            for bad in ["_milliseconds", "_kb", "_kib", "_percent"] {
                assert!(!name.contains(bad), "{name}: use base units");
            }
            if line.ends_with(" counter") {
                assert!(page.contains(&format!("\n{name}_total")), "{name}");
            }
        }
        assert_eq!(families, series_per_cache() + 3 + 14, "{page}");
    }

    #[test]
    fn cache_series_carry_the_snapshot_and_the_counters() {
        let page = exporter(1000).render();
        let zio = r#"{pid="42",comm="dem\\x07o",cache="zio_cache",cache_id="0x10"}"#;
        let get = |family: &str| value(&page, &format!("{family}{zio}"));
        assert_eq!(
            get("slabscope_cache_objects_allocated").as_deref(),
            Some("11")
        );
        assert_eq!(get("slabscope_cache_size_bytes").as_deref(), Some("12288"));
        assert_eq!(get("slabscope_cache_depot_objects").as_deref(), Some("7"));
        assert_eq!(get("slabscope_cache_grows_total").as_deref(), Some("5"));
        assert_eq!(get("slabscope_cache_reaps_total").as_deref(), Some("2"));
        // A destroyed cache has no series.
        assert!(!page.contains("cache=\"gone\""), "{page}");
        assert!(!page.contains("stale"), "{page}");
        assert_eq!(
            value(&page, "slabscope_exporter_exited_processes_total").as_deref(),
            Some("4")
        );
        assert_eq!(
            value(&page, "slabscope_exporter_kernel_map_entries").as_deref(),
            Some("3")
        );
        assert_eq!(
            value(&page, "slabscope_exporter_events_total").as_deref(),
            Some("100")
        );
        assert_eq!(
            value(&page, "slabscope_exporter_lost_events_total").as_deref(),
            Some("3")
        );
        assert_eq!(
            value(&page, "slabscope_exporter_unreadable_snapshots_total").as_deref(),
            Some("5")
        );
        assert_eq!(
            value(&page, "slabscope_exporter_attached_processes").as_deref(),
            Some("1")
        );
    }

    #[test]
    fn kernel_histograms_become_cumulative_buckets_in_seconds() {
        let page = exporter(1000).render();
        let zio = r#"pid="42",comm="dem\\x07o",cache="zio_cache",cache_id="0x10""#;
        let get = |suffix: &str| {
            value(
                &page,
                &format!("slabscope_cache_grow_duration_seconds_{suffix}{{{zio}"),
            )
        };
        assert_eq!(get("count").as_deref(), Some("4"), "{page}");
        assert_eq!(get("sum").as_deref(), Some("0.003"));
        let bucket = |le: &str| {
            value(
                &page,
                &format!("slabscope_cache_grow_duration_seconds_bucket{{le=\"{le}\",{zio}}}"),
            )
        };
        assert_eq!(bucket("0.000001024").as_deref(), Some("1"), "{page}");
        assert_eq!(bucket("0.000524288").as_deref(), Some("1"));
        assert_eq!(bucket("0.001048576").as_deref(), Some("3"));
        assert_eq!(bucket("68.719476736").as_deref(), Some("3"));
        assert_eq!(bucket("+Inf").as_deref(), Some("4"));
        // Only caches that have a histogram carry one.
        assert!(!page.contains("slabscope_cache_grow_duration_seconds_count{pid=\"42\",comm=\"dem\\\\x07o\",cache=\"evil"));
        assert!(!page.contains("slabscope_cache_deadlocked_duration_seconds_count"));
    }

    #[test]
    fn hostile_names_stay_inside_their_label_and_are_recoverable() {
        let page = exporter(1000).render();
        let line = page
            .lines()
            .find(|l| l.starts_with("slabscope_cache_objects_allocated{") && l.contains("0x20"))
            .expect("the hostile cache's series");
        assert!(!line.chars().any(char::is_control), "{line:?}");
        let stored = r#"evil\x1b[2J"x\\\ny"#;
        assert!(
            line.contains(&format!("cache=\"{}\"", labels::exposition(stored))),
            "{line}"
        );
        assert_eq!(
            labels::recover(stored).unwrap(),
            b"evil\x1b[2J\"x\\\ny".to_vec()
        );
        assert!(line.ends_with(" 22"), "{line}");
    }

    #[test]
    fn the_series_limit_drops_whole_caches_and_counts_them() {
        // Room for the first cache and its histogram only.
        let e = exporter(series_per_cache() + SERIES_PER_HISTOGRAM);
        let page = e.render();
        assert!(page.contains("cache=\"zio_cache\""));
        assert!(!page.contains("0x20"), "the second cache is over the limit");
        let per = series_per_cache().to_string();
        assert_eq!(
            value(&page, "slabscope_exporter_series_over_limit").as_deref(),
            Some(per.as_str())
        );
        let again = e.render();
        let twice = (2 * series_per_cache()).to_string();
        assert_eq!(
            value(&page, "slabscope_exporter_series").as_deref(),
            Some(
                (series_per_cache() + SERIES_PER_HISTOGRAM)
                    .to_string()
                    .as_str()
            )
        );
        assert_eq!(
            value(&again, "slabscope_exporter_dropped_series_total").as_deref(),
            Some(twice.as_str())
        );
    }

    #[test]
    fn the_prometheus_text_names_counters_after_their_samples() {
        let om = "# HELP a_things Things.\n# TYPE a_things counter\na_things_total 3\n\
                  # HELP b_seconds Time.\n# TYPE b_seconds gauge\n# UNIT b_seconds seconds\n\
                  b_seconds 0.5\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP a_things_total Things.\n# TYPE a_things_total counter\na_things_total 3\n\
             # HELP b_seconds Time.\n# TYPE b_seconds gauge\nb_seconds 0.5\n"
        );
    }
}
