//! Cache statistics (feature `std`): the serializable per-cache snapshot and
//! the `/proc/spl/kmem/slab` text.
//!
//! [`CacheStats`] carries every counter SPL keeps in `spl_kmem_cache_t`
//! ([`SlabCounters`], flattened) plus the magazine geometry and per-CPU fill.
//! It converts losslessly from and to the probes' [`CacheSnapshot`], so the
//! allocator's own report and what the collector read out of a traced process
//! print through the same writer, [`write_proc_slab`], which reproduces
//! `slab_seq_show()` of OpenZFS's `spl-proc.c` byte for byte. The allocator
//! re-exports this module as `slabscope::stats`.

use std::fmt::Write as _;
use std::io;
use std::string::String;
use std::vec::Vec;

use crate::flags::KMC_SLAB;
use crate::{CacheSnapshot, MAX_CPUS, SlabCounters, name_buf};

/// Every counter of one cache at one moment.
///
/// Field meanings are SPL's. `obj_alloc` counts objects handed out of the
/// slabs: objects in use *and* objects held in magazines (`mag_objs` of
/// them). For a `KMC_SLAB` cache only `obj_alloc` is kept; the slab and
/// emergency counters stay zero.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct CacheStats {
    /// Cache id: the address of the cache, as the probes report it.
    pub id: u64,
    /// Cache name, as given at creation.
    pub name: String,
    /// `KMC_*` flags, state bits (DEADLOCKED, GROWING, REAPING) included.
    pub flags: u64,
    /// Object size as requested.
    pub obj_size: u64,
    /// Object alignment in bytes.
    pub obj_align: u64,
    /// Bytes one object occupies in a slab, its object header included.
    pub obj_size_full: u64,
    /// Bytes of one slab (0 for `KMC_SLAB` caches).
    pub slab_size: u64,
    /// Objects per slab (0 for `KMC_SLAB` caches).
    pub slab_objs: u64,
    /// Objects per per-CPU magazine.
    pub mag_size: u32,
    /// Objects moved per magazine refill or flush.
    pub mag_refill: u32,
    /// SPL's counters, flattened: `slab_fail` .. `obj_emergency_max` are
    /// this struct's own keys in JSON and read as its own fields
    /// (`stats.slab_total`) through `Deref`.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub counters: SlabCounters,
    /// Objects held in all magazines: every CPU's and the depot's.
    pub mag_objs: u64,
    /// Objects held in the depot (see the `depot` module).
    pub depot_objs: u64,
    /// Objects held in each CPU's magazine, CPU 0 first.
    pub mag_fill: Vec<u32>,
}

impl CacheStats {
    /// Whether this cache delegates to the system allocator (`KMC_SLAB`).
    pub fn is_slab_backed(&self) -> bool {
        self.flags & KMC_SLAB != 0
    }

    /// The probes' `#[repr(C)]` form. Per-CPU fill beyond
    /// [`MAX_CPUS`] is dropped from `mag_fill` but still counted in `mag_objs`;
    /// names are truncated to [`crate::NAME_MAX`] bytes (cache
    /// creation rejects longer ones).
    pub fn to_snapshot(&self) -> CacheSnapshot {
        let mut mag_fill = [0u32; MAX_CPUS];
        for (dst, src) in mag_fill.iter_mut().zip(&self.mag_fill) {
            *dst = *src;
        }
        CacheSnapshot {
            cache_id: self.id,
            flags: self.flags,
            obj_size: self.obj_size,
            obj_align: self.obj_align,
            obj_size_full: self.obj_size_full,
            slab_size: self.slab_size,
            slab_objs: self.slab_objs,
            mag_size: self.mag_size,
            mag_refill: self.mag_refill,
            ncpus: self.mag_fill.len().min(MAX_CPUS) as u32,
            depot_objs: self.depot_objs.try_into().unwrap_or(u32::MAX),
            counters: self.counters,
            mag_objs: self.mag_objs,
            mag_fill,
            name: name_buf(self.name.as_bytes()),
        }
    }
}

impl From<&CacheSnapshot> for CacheStats {
    fn from(s: &CacheSnapshot) -> Self {
        let ncpus = (s.ncpus as usize).min(MAX_CPUS);
        CacheStats {
            id: s.cache_id,
            name: String::from_utf8_lossy(s.name_bytes()).into_owned(),
            flags: s.flags,
            obj_size: s.obj_size,
            obj_align: s.obj_align,
            obj_size_full: s.obj_size_full,
            slab_size: s.slab_size,
            slab_objs: s.slab_objs,
            mag_size: s.mag_size,
            mag_refill: s.mag_refill,
            counters: s.counters,
            mag_objs: s.mag_objs,
            depot_objs: s.depot_objs.into(),
            mag_fill: s.mag_fill[..ncpus].to_vec(),
        }
    }
}

impl core::ops::Deref for CacheStats {
    type Target = SlabCounters;

    fn deref(&self) -> &SlabCounters {
        &self.counters
    }
}

impl core::ops::DerefMut for CacheStats {
    fn deref_mut(&mut self) -> &mut SlabCounters {
        &mut self.counters
    }
}

/// The two header lines of `/proc/spl/kmem/slab`.
pub const PROC_SLAB_HEADER: &str = "\
--------------------- cache -------------------------------------------------------  ----- slab ------  ---- object -----  --- emergency ---
name                                    flags      size     alloc slabsize  objsize  total alloc   max  total alloc   max  dlock alloc   max
";

/// One cache's row of `/proc/spl/kmem/slab`, newline included
/// (`slab_seq_show()` in OpenZFS `spl-proc.c`).
pub fn proc_slab_row(s: &CacheStats) -> String {
    let mut row = String::with_capacity(160);
    // Writing to a String cannot fail.
    let _ = write!(row, "{:<36}  ", s.name);
    if s.is_slab_backed() {
        let _ = writeln!(
            row,
            "0x{:05x} {:>9} {:>9} {:>8} {:>8}  {:>5} {:>5} {:>5}  {:>5} {:>5} {:>5}  {:>5} {:>5} {:>5}",
            s.flags,
            "-",
            s.obj_size.wrapping_mul(s.obj_alloc),
            "-",
            s.obj_size as u32,
            "-",
            "-",
            "-",
            "-",
            s.obj_alloc,
            "-",
            "-",
            "-",
            "-",
        );
    } else {
        let _ = writeln!(
            row,
            "0x{:05x} {:>9} {:>9} {:>8} {:>8}  {:>5} {:>5} {:>5}  {:>5} {:>5} {:>5}  {:>5} {:>5} {:>5}",
            s.flags,
            s.slab_size.wrapping_mul(s.slab_total),
            s.obj_size.wrapping_mul(s.obj_alloc),
            s.slab_size as u32,
            s.obj_size as u32,
            s.slab_total,
            s.slab_alloc,
            s.slab_max,
            s.obj_total,
            s.obj_alloc,
            s.obj_max,
            s.obj_deadlock,
            s.obj_emergency,
            s.obj_emergency_max,
        );
    }
    row
}

/// The whole `/proc/spl/kmem/slab` text for `caches`, in the order given.
pub fn proc_slab_text(caches: &[CacheStats]) -> String {
    let mut text = String::from(PROC_SLAB_HEADER);
    for c in caches {
        text.push_str(&proc_slab_row(c));
    }
    text
}

/// Writes [`proc_slab_text`] to `w`.
pub fn write_proc_slab(mut w: impl io::Write, caches: &[CacheStats]) -> io::Result<()> {
    w.write_all(proc_slab_text(caches).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::KMC_KVMEM;
    use std::vec;

    fn sample() -> CacheStats {
        CacheStats {
            id: 0x5555_0000_1000,
            name: "zio_cache".into(),
            flags: KMC_KVMEM,
            obj_size: 1104,
            obj_align: 8,
            obj_size_full: 1128,
            slab_size: 16384,
            slab_objs: 14,
            mag_size: 16,
            mag_refill: 8,
            counters: SlabCounters {
                slab_fail: 0,
                slab_create: 5,
                slab_destroy: 1,
                slab_total: 4,
                slab_alloc: 3,
                slab_max: 4,
                obj_total: 56,
                obj_alloc: 40,
                obj_max: 50,
                obj_deadlock: 1,
                obj_emergency: 2,
                obj_emergency_max: 3,
            },
            mag_objs: 12,
            depot_objs: 3,
            mag_fill: vec![4, 5],
        }
    }

    #[test]
    fn header_matches_spl() {
        let lines: Vec<&str> = PROC_SLAB_HEADER.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), lines[1].len());
        assert!(lines[1].starts_with("name "));
        assert!(lines[1].ends_with("dlock alloc   max"));
    }

    #[test]
    fn kvmem_row_has_every_column_aligned_under_the_header() {
        let row = proc_slab_row(&sample());
        assert_eq!(
            row,
            "zio_cache                             0x00080     65536     44160    16384     1104      4     3     4     56    40    50      1     2     3\n"
        );
        let header = PROC_SLAB_HEADER.lines().nth(1).unwrap();
        assert_eq!(row.trim_end().len(), header.len());
    }

    #[test]
    fn slab_backed_row_prints_dashes() {
        let mut s = sample();
        s.flags = KMC_SLAB;
        s.obj_alloc = 7;
        let row = proc_slab_row(&s);
        assert_eq!(
            row,
            "zio_cache                             0x00100         -      7728        -     1104      -     -     -      -     7     -      -     -     -\n"
        );
    }

    #[test]
    fn snapshot_round_trips() {
        let s = sample();
        let snap = s.to_snapshot();
        assert_eq!(snap.ncpus, 2);
        assert_eq!(CacheStats::from(&snap), s);
    }

    #[test]
    fn json_keeps_the_counters_flat_and_in_order() {
        let json = serde_json::to_string(&sample()).unwrap();
        let keys: Vec<&str> = json
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|k| *k != "zio_cache")
            .collect();
        assert_eq!(
            keys,
            [
                "id",
                "name",
                "flags",
                "obj_size",
                "obj_align",
                "obj_size_full",
                "slab_size",
                "slab_objs",
                "mag_size",
                "mag_refill",
                "slab_fail",
                "slab_create",
                "slab_destroy",
                "slab_total",
                "slab_alloc",
                "slab_max",
                "obj_total",
                "obj_alloc",
                "obj_max",
                "obj_deadlock",
                "obj_emergency",
                "obj_emergency_max",
                "mag_objs",
                "depot_objs",
                "mag_fill",
            ]
        );
        let back: CacheStats = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn text_is_header_then_rows_in_order() {
        let mut b = sample();
        b.name = "dnode_t".into();
        let text = proc_slab_text(&[sample(), b]);
        let names: Vec<&str> = text
            .lines()
            .skip(2)
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(names, ["zio_cache", "dnode_t"]);
    }
}
