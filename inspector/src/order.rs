//! The order `--once` and `--json` print caches in, with `-s`: by process,
//! then by the sort column as the live view starts it (largest first for a
//! numeric column, A to Z for the name), ties by name, then cache id.
//! Without `-s` they print by process, name, then id (the collector cannot
//! know the creation order `/proc/spl/kmem/slab` uses).
//!
//! Names compare naturally ([`natural`]): a run of digits compares as the
//! number it spells, so `kmem_alloc_104` comes before `kmem_alloc_10240`,
//! as a reader of the size-class caches expects. The live view's columns
//! break their ties the same way ([`Column::compare`]).

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
        .then_with(|| natural(&sa.name, &sb.name))
        .then(sa.id.cmp(&sb.id))
}

/// Compares two names naturally: runs of ASCII digits compare as numbers
/// (of any length, leading zeros aside), everything else character by
/// character. Names that spell the same numbers differently (`a01`, `a1`)
/// fall back to plain string order, so the order is total and agrees with
/// equality.
///
/// # Examples
///
/// ```
/// use std::cmp::Ordering;
/// use slabscope_inspector::order::natural;
///
/// assert_eq!(natural("kmem_alloc_104", "kmem_alloc_10240"), Ordering::Less);
/// assert_eq!(natural("kmem_alloc_8", "kmem_alloc_16"), Ordering::Less);
/// assert_eq!(natural("zio_buf", "zio_buf"), Ordering::Equal);
/// ```
pub fn natural(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(cx), Some(cy)) if cx.is_ascii_digit() && cy.is_ascii_digit() => {
                let (nx, rx) = split_digits(x);
                let (ny, ry) = split_digits(y);
                let o = compare_numbers(nx, ny);
                if o != Ordering::Equal {
                    return o;
                }
                (x, y) = (rx, ry);
            }
            (Some(cx), Some(cy)) => {
                if cx != cy {
                    // Byte order within UTF-8 is code point order.
                    return cx.cmp(cy);
                }
                (x, y) = (&x[1..], &y[1..]);
            }
        }
    }
}

/// The leading run of ASCII digits of `s`, and the rest.
fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let end = s
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Compares two runs of ASCII digits as the numbers they spell, however long.
fn compare_numbers(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |d: &[u8]| -> usize { d.iter().position(|&c| c != b'0').unwrap_or(d.len()) };
    let (a, b) = (&a[strip(a)..], &b[strip(b)..]);
    // Without leading zeros, the longer run is the larger number.
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
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
    fn names_sort_naturally() {
        let mut names = vec![
            "kmem_alloc_10240",
            "kmem_alloc_104",
            "kmem_alloc_8",
            "kmem_alloc_1024",
            "kmem_alloc_96",
            "zio_buf_512",
            "arc_buf",
            "kmem_alloc_",
            "a99999999999999999999999999",
            "a100000000000000000000000000",
            "a01",
            "a1",
            "a2",
        ];
        names.sort_by(|a, b| natural(a, b));
        assert_eq!(
            names,
            [
                "a01",
                "a1",
                "a2",
                "a99999999999999999999999999",
                "a100000000000000000000000000",
                "arc_buf",
                "kmem_alloc_",
                "kmem_alloc_8",
                "kmem_alloc_96",
                "kmem_alloc_104",
                "kmem_alloc_1024",
                "kmem_alloc_10240",
                "zio_buf_512",
            ]
        );
        // A total order that agrees with equality.
        assert_eq!(natural("a1", "a1"), Ordering::Equal);
        assert_eq!(natural("a01", "a1"), Ordering::Less);
        assert_eq!(natural("a1", "a01"), Ordering::Greater);
        assert_eq!(natural("é2", "é10"), Ordering::Less);
        assert_eq!(natural("a", "é"), Ordering::Less);
    }

    #[test]
    fn the_size_classes_print_in_size_order() {
        let mut c = vec![
            (1, stats("kmem_alloc_10240", 1, 1)),
            (1, stats("kmem_alloc_104", 2, 1)),
            (1, stats("kmem_alloc_1024", 3, 1)),
        ];
        sort(&mut c, None);
        assert_eq!(
            names(&c),
            [
                (1, "kmem_alloc_104"),
                (1, "kmem_alloc_1024"),
                (1, "kmem_alloc_10240")
            ]
        );
        // Ties of a column, and the name column itself, too.
        sort(&mut c, Some(Column::ObjTotal));
        assert_eq!(names(&c)[0], (1, "kmem_alloc_104"));
        sort(&mut c, Some(Column::Name));
        assert_eq!(names(&c)[2], (1, "kmem_alloc_10240"));
        let (a, b) = (&c[0].1, &c[2].1);
        assert_eq!(Column::Name.compare(a, b), Ordering::Less);
        assert_eq!(Column::ObjAlloc.compare(a, b), Ordering::Less);
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
