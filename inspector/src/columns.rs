//! The columns of the cache table: `/proc/spl/kmem/slab`'s, in its order, plus
//! the magazine columns, each with its header, its cell text and its sort key.
//!
//! One table drives the view, the sort keys and the `--sort` option, so a column
//! added here is shown, sortable and documented everywhere at once. Sort letters
//! follow `slabtop(1)` where it has one (`a` active objects, `b` objects per
//! slab, `c` cache size, `l` slabs, `v` active slabs, `n` name, `o` objects,
//! `s` object size, `u` utilisation).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use slabscope_probes::stats::CacheStats;

use crate::format;

/// One column of the cache table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    /// The cache's name (sorts A to Z, digit runs as numbers).
    Name,
    /// The `KMC_*` flags, as letters or hex.
    Flags,
    /// Memory held: `slabsize * slab total` (`/proc`'s "size").
    Size,
    /// Memory in use: `objsize * object alloc` (`/proc`'s "alloc").
    Alloc,
    /// Bytes of one slab.
    SlabSize,
    /// Object size as requested.
    ObjSize,
    /// Objects per slab (slabtop's OBJ/SLAB).
    ObjPerSlab,
    /// Slabs held.
    SlabTotal,
    /// Slabs with an object out.
    SlabAlloc,
    /// The most slabs with an object out.
    SlabMax,
    /// Objects the slabs hold, emergency objects included.
    ObjTotal,
    /// Objects handed out of the slabs: in use or in magazines.
    ObjAlloc,
    /// The most objects allocated.
    ObjMax,
    /// Objects allocated of the slabs' capacity, in percent (slabtop's USE).
    Util,
    /// Deadlocks detected over the cache's life.
    EmergDlock,
    /// Live emergency objects.
    EmergAlloc,
    /// The most emergency objects live at once.
    EmergMax,
    /// Objects a per-CPU magazine holds.
    MagSize,
    /// Objects held in magazines and the depot.
    MagObjs,
}

/// Static description of a column.
#[derive(Clone, Copy, Debug)]
pub struct ColumnDef {
    /// The column described.
    pub column: Column,
    /// Header group (`slab`, `object`, ...) printed above the first column of it.
    pub group: &'static str,
    /// Header text under the group.
    pub header: &'static str,
    /// Name accepted by `--sort` and shown in the column picker.
    pub id: &'static str,
    /// Sort key in the main view, if any.
    pub key: Option<char>,
    /// What the column shows, for the picker and `--help`.
    pub about: &'static str,
    /// Width in cells (the name column grows to fill the rest).
    pub width: u16,
    /// Numeric column: right aligned, sorted largest first.
    pub numeric: bool,
}

const fn def(
    column: Column,
    group: &'static str,
    header: &'static str,
    id: &'static str,
    key: Option<char>,
    about: &'static str,
    width: u16,
) -> ColumnDef {
    ColumnDef {
        column,
        group,
        header,
        id,
        key,
        about,
        width,
        numeric: width != 0,
    }
}

/// Every column, in display order.
pub const COLUMNS: [ColumnDef; 19] = [
    ColumnDef {
        column: Column::Name,
        group: "cache",
        header: "name",
        id: "name",
        key: Some('n'),
        about: "cache name",
        width: 20,
        numeric: false,
    },
    ColumnDef {
        column: Column::Flags,
        group: "",
        header: "flags",
        id: "flags",
        key: Some('f'),
        about: "KMC_* flags (letters; x for hex)",
        width: 7,
        numeric: false,
    },
    def(
        Column::Size,
        "",
        "size",
        "size",
        Some('c'),
        "bytes held in slabs (slabsize * slabs)",
        9,
    ),
    def(
        Column::Alloc,
        "",
        "alloc",
        "alloc",
        Some('U'),
        "bytes allocated (objsize * objects allocated)",
        9,
    ),
    def(
        Column::SlabSize,
        "",
        "slabsize",
        "slabsize",
        Some('p'),
        "bytes per slab",
        8,
    ),
    def(
        Column::ObjSize,
        "",
        "objsize",
        "objsize",
        Some('s'),
        "object size as requested",
        7,
    ),
    def(
        Column::ObjPerSlab,
        "",
        "obj/slab",
        "obj-per-slab",
        Some('b'),
        "objects per slab",
        8,
    ),
    def(
        Column::SlabTotal,
        "slab",
        "total",
        "slab-total",
        Some('l'),
        "slabs held",
        5,
    ),
    def(
        Column::SlabAlloc,
        "",
        "alloc",
        "slab-alloc",
        Some('v'),
        "slabs with objects in use",
        5,
    ),
    def(
        Column::SlabMax,
        "",
        "max",
        "slab-max",
        None,
        "most slabs ever held",
        5,
    ),
    def(
        Column::ObjTotal,
        "object",
        "total",
        "obj-total",
        Some('o'),
        "object capacity of the slabs plus emergency objects",
        6,
    ),
    def(
        Column::ObjAlloc,
        "",
        "alloc",
        "obj-alloc",
        Some('a'),
        "objects allocated (in use or in magazines)",
        6,
    ),
    def(
        Column::ObjMax,
        "",
        "max",
        "obj-max",
        None,
        "most objects ever allocated",
        6,
    ),
    def(
        Column::Util,
        "",
        "use%",
        "util",
        Some('u'),
        "obj-alloc of obj-total, in percent",
        4,
    ),
    def(
        Column::EmergDlock,
        "emergency",
        "dlock",
        "dlock",
        Some('d'),
        "deadlocks detected so far",
        5,
    ),
    def(
        Column::EmergAlloc,
        "",
        "alloc",
        "emerg-alloc",
        Some('e'),
        "live emergency objects",
        5,
    ),
    def(
        Column::EmergMax,
        "",
        "max",
        "emerg-max",
        None,
        "most emergency objects at once",
        5,
    ),
    def(
        Column::MagSize,
        "magazine",
        "size",
        "mag-size",
        None,
        "objects per per-CPU magazine",
        4,
    ),
    def(
        Column::MagObjs,
        "",
        "objs",
        "mag-objs",
        Some('m'),
        "objects held in all magazines",
        6,
    ),
];

impl Column {
    /// Every column, in display order.
    pub fn all() -> impl Iterator<Item = Column> {
        COLUMNS.iter().map(|d| d.column)
    }

    /// This column's description.
    pub fn def(self) -> &'static ColumnDef {
        &COLUMNS[self as usize]
    }

    /// The column sorted by key `c` in the main view.
    pub fn by_key(c: char) -> Option<Column> {
        COLUMNS.iter().find(|d| d.key == Some(c)).map(|d| d.column)
    }

    /// The column `n` places after this one, wrapping around.
    pub fn offset(self, n: isize) -> Column {
        let len = COLUMNS.len() as isize;
        COLUMNS[((self as isize + n).rem_euclid(len)) as usize].column
    }

    /// Whether the column is sorted largest first unless reversed.
    pub fn descending_by_default(self) -> bool {
        self.def().numeric
    }

    /// The value this column sorts by, for numeric columns.
    pub fn value(self, s: &CacheStats) -> u64 {
        match self {
            Column::Name => 0,
            Column::Flags => s.flags,
            Column::Size => s.slab_size.wrapping_mul(s.slab_total),
            Column::Alloc => s.obj_size.wrapping_mul(s.obj_alloc),
            Column::SlabSize => s.slab_size,
            Column::ObjSize => s.obj_size,
            Column::ObjPerSlab => s.slab_objs,
            Column::SlabTotal => s.slab_total,
            Column::SlabAlloc => s.slab_alloc,
            Column::SlabMax => s.slab_max,
            Column::ObjTotal => s.obj_total,
            Column::ObjAlloc => s.obj_alloc,
            Column::ObjMax => s.obj_max,
            // Per mille, so the sort sees what the percentage rounds; in
            // u128, as a hostile target's counters may be anything.
            Column::Util => (u128::from(s.obj_alloc) * 1000)
                .checked_div(u128::from(s.obj_total))
                .map_or(0, |v| u64::try_from(v).unwrap_or(u64::MAX)),
            Column::EmergDlock => s.obj_deadlock,
            Column::EmergAlloc => s.obj_emergency,
            Column::EmergMax => s.obj_emergency_max,
            Column::MagSize => u64::from(s.mag_size),
            Column::MagObjs => s.mag_objs,
        }
    }

    /// Ascending order of `a` and `b` by this column; ties by name, in
    /// natural order ([`crate::order::natural`]).
    pub fn compare(self, a: &CacheStats, b: &CacheStats) -> Ordering {
        let primary = match self {
            Column::Name => Ordering::Equal,
            _ => self.value(a).cmp(&self.value(b)),
        };
        primary.then_with(|| crate::order::natural(&a.name, &b.name))
    }

    /// The cell text, as `/proc/spl/kmem/slab` would print it: `-` where a
    /// `KMC_SLAB` cache keeps no such counter.
    pub fn cell(self, s: &CacheStats, human: bool, hex_flags: bool) -> String {
        let slab_backed = s.is_slab_backed();
        let dash = |v: String| if slab_backed { "-".to_string() } else { v };
        match self {
            Column::Name => s.name.clone(),
            Column::Flags if hex_flags => format::flag_hex(s.flags),
            Column::Flags => format::flag_letters(s.flags),
            Column::Size => dash(format::bytes(self.value(s), human)),
            Column::Alloc => format::bytes(self.value(s), human),
            Column::SlabSize => dash(format::bytes(s.slab_size, human)),
            Column::ObjSize => format::bytes(s.obj_size, human),
            Column::ObjAlloc => s.obj_alloc.to_string(),
            Column::Util => dash(format!("{}", (self.value(s) + 5) / 10)),
            Column::MagSize => u64::from(s.mag_size).to_string(),
            Column::MagObjs => s.mag_objs.to_string(),
            _ => dash(self.value(s).to_string()),
        }
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.def().id)
    }
}

/// A `--sort` value that names no column.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown sort column `{0}`: use one of {ids} or a sort key letter", ids = ids())]
pub struct UnknownColumn(pub String);

fn ids() -> String {
    COLUMNS.iter().map(|d| d.id).collect::<Vec<_>>().join(", ")
}

impl FromStr for Column {
    type Err = UnknownColumn;

    /// A column id (`obj-alloc`) or its sort key letter (`a`).
    fn from_str(s: &str) -> Result<Column, UnknownColumn> {
        let lower = s.trim().to_ascii_lowercase();
        if let Some(d) = COLUMNS.iter().find(|d| d.id == lower) {
            return Ok(d.column);
        }
        let mut chars = s.trim().chars();
        if let (Some(c), None) = (chars.next(), chars.next())
            && let Some(col) = Column::by_key(c)
        {
            return Ok(col);
        }
        Err(UnknownColumn(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slabscope_probes::SlabCounters;
    use slabscope_probes::flags::{KMC_KVMEM, KMC_SLAB};

    fn stats(name: &str, obj_alloc: u64) -> CacheStats {
        CacheStats {
            name: name.into(),
            flags: KMC_KVMEM,
            obj_size: 100,
            slab_size: 4096,
            counters: SlabCounters {
                slab_total: 3,
                obj_alloc,
                ..SlabCounters::ZERO
            },
            ..CacheStats::default()
        }
    }

    #[test]
    fn table_is_indexed_by_discriminant() {
        for (i, d) in COLUMNS.iter().enumerate() {
            assert_eq!(d.column as usize, i, "{:?} out of place", d.column);
            assert_eq!(d.column.def().id, d.id);
        }
    }

    #[test]
    fn keys_and_ids_are_unique_and_parse() {
        let mut keys: Vec<char> = COLUMNS.iter().filter_map(|d| d.key).collect();
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), n, "duplicate sort key");
        for d in COLUMNS {
            assert_eq!(d.id.parse::<Column>(), Ok(d.column));
            if let Some(k) = d.key {
                assert_eq!(k.to_string().parse::<Column>(), Ok(d.column));
            }
        }
        assert_eq!("OBJ-ALLOC".parse::<Column>(), Ok(Column::ObjAlloc));
        let err = "bogus".parse::<Column>().unwrap_err().to_string();
        assert!(err.contains("obj-alloc"), "{err}");
    }

    #[test]
    fn the_navigation_keys_are_not_sort_keys() {
        for k in ['j', 'k', 'q', 'h', 'x', 'r', 'g', 'G', '/', '?', ' '] {
            assert_eq!(Column::by_key(k), None, "{k} is taken by navigation");
        }
    }

    #[test]
    fn compare_breaks_ties_by_name() {
        let a = stats("a", 5);
        let b = stats("b", 5);
        let c = stats("c", 1);
        assert_eq!(Column::ObjAlloc.compare(&a, &b), Ordering::Less);
        assert_eq!(Column::ObjAlloc.compare(&c, &a), Ordering::Less);
        assert_eq!(Column::Name.compare(&b, &a), Ordering::Greater);
    }

    #[test]
    fn cells_mirror_proc_slab() {
        let s = stats("zio", 7);
        assert_eq!(Column::Size.cell(&s, false, false), "12288");
        assert_eq!(Column::Size.cell(&s, true, false), "12K");
        assert_eq!(Column::Alloc.cell(&s, false, false), "700");
        assert_eq!(Column::Flags.cell(&s, false, false), "K");
        assert_eq!(Column::Flags.cell(&s, false, true), "0x00080");
        let mut slab = s.clone();
        slab.flags = KMC_SLAB;
        assert_eq!(Column::Size.cell(&slab, false, false), "-");
        assert_eq!(Column::SlabTotal.cell(&slab, false, false), "-");
        assert_eq!(Column::ObjAlloc.cell(&slab, false, false), "7");
        assert_eq!(Column::Alloc.cell(&slab, false, false), "700");
        assert_eq!(Column::Util.cell(&slab, false, false), "-");
        assert_eq!(Column::ObjPerSlab.cell(&slab, false, false), "-");
    }

    #[test]
    fn slabtop_keys_b_and_u() {
        assert_eq!(Column::by_key('b'), Some(Column::ObjPerSlab));
        assert_eq!(Column::by_key('u'), Some(Column::Util));
        let mut s = stats("zio", 7);
        s.counters.obj_total = 8;
        s.slab_objs = 8;
        assert_eq!(Column::Util.cell(&s, false, false), "88", "7 of 8, rounded");
        assert_eq!(Column::ObjPerSlab.cell(&s, false, false), "8");
        let mut empty = s.clone();
        empty.counters.obj_total = 0;
        empty.counters.obj_alloc = 0;
        assert_eq!(Column::Util.cell(&empty, false, false), "0");
        assert_eq!(
            Column::Util.compare(&empty, &s),
            std::cmp::Ordering::Less,
            "sorted by the ratio"
        );
    }

    #[test]
    fn offset_wraps() {
        assert_eq!(Column::Name.offset(-1), Column::MagObjs);
        assert_eq!(Column::MagObjs.offset(1), Column::Name);
        assert_eq!(Column::Size.offset(2), Column::SlabSize);
    }
}
