//! The order `--once` and `--json` print caches in, with `-s`: by process,
//! then by the sort column as the live view starts it (largest first for a
//! numeric column, A to Z for the name), ties by name, then cache id.
//! Without `-s` they print by process, name, then id (the collector cannot
//! know the creation order `/proc/spl/kmem/slab` uses).

use std::cmp::Ordering;

use slabscope_probes::stats::CacheStats;

use crate::columns::Column;
use crate::output::JsonSample;

/// Compares two caches of the output, `(pid, stats)`.
pub fn compare(sort: Option<Column>, a: (u32, &CacheStats), b: (u32, &CacheStats)) -> Ordering {
    let (pa, sa) = a;
    let (pb, sb) = b;
    let by_column = match sort {
        None | Some(Column::Name) => Ordering::Equal,
        Some(col) => {
            let o = col.value(sa).cmp(&col.value(sb));
            if col.descending_by_default() {
                o.reverse()
            } else {
                o
            }
        }
    };
    pa.cmp(&pb)
        .then(by_column)
        .then_with(|| sa.name.cmp(&sb.name))
        .then(sa.id.cmp(&sb.id))
}

/// Sorts `(pid, stats)` pairs.
pub fn sort(caches: &mut [(u32, CacheStats)], by: Option<Column>) {
    caches.sort_by(|(pa, a), (pb, b)| compare(by, (*pa, a), (*pb, b)));
}

impl JsonSample {
    /// The same sample with its caches in `by`'s order.
    pub fn sorted(mut self, by: Option<Column>) -> JsonSample {
        self.caches
            .sort_by(|a, b| compare(by, (a.pid, &a.stats), (b.pid, &b.stats)));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slabscope_probes::SlabCounters;

    fn stats(name: &str, id: u64, obj_total: u64) -> CacheStats {
        CacheStats {
            id,
            name: name.into(),
            counters: SlabCounters {
                obj_total,
                ..SlabCounters::ZERO
            },
            ..CacheStats::default()
        }
    }

    fn names(c: &[(u32, CacheStats)]) -> Vec<(u32, &str)> {
        c.iter().map(|(p, s)| (*p, s.name.as_str())).collect()
    }

    #[test]
    fn numeric_columns_largest_first_within_each_process() {
        let mut c = vec![
            (2, stats("a", 1, 100)),
            (1, stats("small", 2, 1)),
            (1, stats("big", 3, 50)),
            (1, stats("also-big", 4, 50)),
        ];
        sort(&mut c, Some(Column::ObjTotal));
        assert_eq!(
            names(&c),
            [(1, "also-big"), (1, "big"), (1, "small"), (2, "a")]
        );
        sort(&mut c, None);
        assert_eq!(
            names(&c),
            [(1, "also-big"), (1, "big"), (1, "small"), (2, "a")]
        );
        sort(&mut c, Some(Column::Name));
        assert_eq!(names(&c)[2], (1, "small"));
    }

    #[test]
    fn once_and_json_print_in_the_sort_order() {
        use crate::output::{json_line_sorted, once_text_sorted};
        use crate::testdata::{cache, sample};
        let s = sample(
            1000,
            0,
            vec![
                cache(1, 1, "few", 2),
                cache(1, 2, "many", 90),
                cache(1, 3, "mid", 40),
            ],
        );
        let order = |text: &str| {
            let mut at: Vec<(usize, &str)> = ["few", "many", "mid"]
                .into_iter()
                .map(|n| {
                    (
                        text.find(&format!("{n}\""))
                            .or_else(|| text.find(&format!("\n{n} ")))
                            .unwrap_or_else(|| panic!("{n} missing:\n{text}")),
                        n,
                    )
                })
                .collect();
            at.sort_unstable();
            at.into_iter().map(|(_, n)| n).collect::<Vec<_>>()
        };
        assert_eq!(order(&once_text_sorted(&s, None)), ["few", "many", "mid"]);
        assert_eq!(
            order(&once_text_sorted(&s, Some(Column::ObjAlloc))),
            ["many", "mid", "few"]
        );
        assert_eq!(
            order(&json_line_sorted(&s, Some(Column::ObjAlloc))),
            ["many", "mid", "few"]
        );
        assert_eq!(order(&json_line_sorted(&s, None)), ["few", "many", "mid"]);
    }

    #[test]
    fn without_a_column_by_name_then_id() {
        let mut c = vec![
            (1, stats("z", 1, 9)),
            (1, stats("a", 7, 1)),
            (1, stats("a", 2, 5)),
        ];
        sort(&mut c, None);
        let ids: Vec<u64> = c.iter().map(|(_, s)| s.id).collect();
        assert_eq!(ids, [2, 7, 1]);
    }
}
