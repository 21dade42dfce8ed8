//! The eBPF program's timing histograms as the views show them: names,
//! percentiles, and the JSON form.
//!
//! Each [`Log2Histogram`] counts durations in log2 buckets: bucket `i` holds
//! durations below `2^i` ns (and, but for bucket 0, at least `2^(i-1)` ns).
//! A percentile is therefore known to within a factor of two, and is shown
//! as its bucket's upper bound: "p99 ≤ 4.2 ms".

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;
use slabscope_probes::{HIST_BUCKETS, HistKey, HistKind, Log2Histogram};

/// The name of `kind` in JSON.
pub fn kind_name(kind: HistKind) -> &'static str {
    match kind {
        HistKind::Grow => "grow",
        HistKind::Deadlocked => "deadlocked",
        HistKind::Emergency => "emergency_lifetime",
    }
}

/// What `kind` measures, for titles.
pub fn title(kind: HistKind) -> &'static str {
    match kind {
        HistKind::Grow => "grow latency",
        HistKind::Deadlocked => "time DEADLOCKED",
        HistKind::Emergency => "emergency object lifetime",
    }
}

/// Upper bound, in nanoseconds, of the bucket `i`: durations in it are
/// below it.
pub fn bucket_bound_ns(i: usize) -> u64 {
    if i >= 64 { u64::MAX } else { 1u64 << i }
}

/// The upper bound (ns) of the bucket holding the `q` quantile (0 < q <= 1),
/// or `None` for an empty histogram.
pub fn quantile_bound_ns(h: &Log2Histogram, q: f64) -> Option<u64> {
    let count = h.count();
    if count == 0 {
        return None;
    }
    let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
    let mut seen = 0;
    for (i, n) in h.buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(bucket_bound_ns(i));
        }
    }
    Some(bucket_bound_ns(HIST_BUCKETS - 1))
}

/// `ns` as a short duration: `850 ns`, `4.2 µs`, `12 ms`, `3.1 s`.
pub fn duration(ns: u64) -> String {
    let f = ns as f64;
    let (v, unit) = if ns < 1_000 {
        return format!("{ns} ns");
    } else if ns < 1_000_000 {
        (f / 1e3, "µs")
    } else if ns < 1_000_000_000 {
        (f / 1e6, "ms")
    } else {
        (f / 1e9, "s")
    };
    if v < 10.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.0} {unit}")
    }
}

/// The non-empty histograms of one cache of one process, in kind order.
pub fn of_cache(
    all: &BTreeMap<HistKey, Log2Histogram>,
    pid: u32,
    cache_id: u64,
) -> Vec<(HistKind, Log2Histogram)> {
    HistKind::ALL
        .iter()
        .filter_map(|&kind| {
            let key = HistKey {
                pid,
                kind: kind as u32,
                cache_id,
            };
            all.get(&key).filter(|h| h.count() > 0).map(|h| (kind, *h))
        })
        .collect()
}

/// One non-empty bucket in JSON.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct JsonBucket {
    /// The bucket's upper bound, in seconds (a power of two nanoseconds):
    /// its durations were shorter than this and, but for the first bucket,
    /// at least half of it.
    pub lt_seconds: f64,
    /// Durations in this bucket.
    pub count: u64,
}

/// One histogram in JSON.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct JsonHistogram {
    /// What was timed: `grow` (a slab grow, start to done), `deadlocked`
    /// (a spell of the cache in KMC_DEADLOCKED) or `emergency_lifetime`
    /// (an emergency object, alloc to free).
    pub kind: &'static str,
    /// Durations recorded.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_seconds: f64,
    /// The upper bound, in seconds, of the bucket holding the median
    /// (`p50`): half the durations were shorter than this (0 when empty).
    pub p50_lt_seconds: f64,
    /// The same for the 90th percentile, in seconds (0 when empty).
    pub p90_lt_seconds: f64,
    /// The same for the 99th percentile, in seconds (0 when empty).
    pub p99_lt_seconds: f64,
    /// The non-empty log2 buckets, shortest first.
    pub buckets: Vec<JsonBucket>,
}

impl JsonHistogram {
    /// The JSON form of `h`, a histogram of `kind`: durations in seconds,
    /// empty buckets left out.
    pub fn new(kind: HistKind, h: &Log2Histogram) -> JsonHistogram {
        let secs = |ns: u64| ns as f64 / 1e9;
        let q = |q: f64| secs(quantile_bound_ns(h, q).unwrap_or(0));
        JsonHistogram {
            kind: kind_name(kind),
            count: h.count(),
            sum_seconds: secs(h.sum_ns),
            p50_lt_seconds: q(0.5),
            p90_lt_seconds: q(0.9),
            p99_lt_seconds: q(0.99),
            buckets: h
                .buckets
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| JsonBucket {
                    lt_seconds: secs(bucket_bound_ns(i)),
                    count: *n,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(pairs: &[(usize, u64)]) -> Log2Histogram {
        let mut h = Log2Histogram::ZERO;
        for &(i, n) in pairs {
            h.buckets[i] = n;
        }
        h
    }

    #[test]
    fn percentiles_are_bucket_bounds() {
        let h = hist(&[(10, 50), (20, 40), (30, 10)]);
        assert_eq!(quantile_bound_ns(&h, 0.5), Some(1 << 10));
        assert_eq!(quantile_bound_ns(&h, 0.51), Some(1 << 20));
        assert_eq!(quantile_bound_ns(&h, 0.9), Some(1 << 20));
        assert_eq!(quantile_bound_ns(&h, 0.99), Some(1 << 30));
        assert_eq!(quantile_bound_ns(&h, 1.0), Some(1 << 30));
        assert_eq!(quantile_bound_ns(&Log2Histogram::ZERO, 0.5), None);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(850), "850 ns");
        assert_eq!(duration(4_200), "4.2 µs");
        assert_eq!(duration(12_000_000), "12 ms");
        assert_eq!(duration(3_100_000_000), "3.1 s");
    }

    #[test]
    fn a_cache_shows_its_own_non_empty_histograms() {
        let mut all = BTreeMap::new();
        let key = |pid, kind: HistKind, cache_id| HistKey {
            pid,
            kind: kind as u32,
            cache_id,
        };
        all.insert(key(1, HistKind::Emergency, 7), hist(&[(3, 1)]));
        all.insert(key(1, HistKind::Grow, 7), hist(&[(20, 2)]));
        all.insert(key(1, HistKind::Deadlocked, 7), Log2Histogram::ZERO);
        all.insert(key(2, HistKind::Grow, 7), hist(&[(1, 1)]));
        all.insert(key(1, HistKind::Grow, 8), hist(&[(1, 1)]));
        let got: Vec<HistKind> = of_cache(&all, 1, 7).into_iter().map(|(k, _)| k).collect();
        assert_eq!(got, vec![HistKind::Grow, HistKind::Emergency]);
    }

    #[test]
    fn json_lists_non_empty_buckets_in_seconds() {
        let mut h = hist(&[(20, 3), (21, 1)]);
        h.sum_ns = 3_000_000;
        let j = JsonHistogram::new(HistKind::Grow, &h);
        assert_eq!(j.kind, "grow");
        assert_eq!(j.count, 4);
        assert_eq!(j.sum_seconds, 0.003);
        assert_eq!(j.p50_lt_seconds, 0.001048576);
        assert_eq!(j.p99_lt_seconds, 0.002097152);
        assert_eq!(
            j.buckets,
            vec![
                JsonBucket {
                    lt_seconds: 0.001048576,
                    count: 3
                },
                JsonBucket {
                    lt_seconds: 0.002097152,
                    count: 1
                }
            ]
        );
    }
}
