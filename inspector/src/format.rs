//! Text formatting shared by every view: sizes, flags, counts and event values.
//!
//! Flags are shown the way `slabtop` would if it knew SPL's `KMC_*` bits: one
//! letter per set bit, creation flags in upper case first, then state bits.
//! [`FLAG_LEGEND`] is the key printed under the cache table and in the help
//! overlay; `x` switches the column to the raw hex `/proc/spl/kmem/slab` shows.

use slabscope_probes::flags::{
    KMC_DEADLOCKED, KMC_DESTROY, KMC_GROWING, KMC_KVMEM, KMC_NODEBUG, KMC_REAPING, KMC_RECLAIMABLE,
    KMC_SLAB,
};
use slabscope_probes::{Event, ProbeKind};

/// One flag bit, its letter and its name.
#[derive(Clone, Copy, Debug)]
pub struct FlagDef {
    /// The `KMC_*` bit.
    pub bit: u64,
    /// Its letter in the flags column: upper case for creation flags,
    /// lower case (but `D`) for state bits.
    pub letter: char,
    /// Its name in the legend and the detail view.
    pub name: &'static str,
}

/// Every flag bit slabscope sets, in display order: creation flags, then state.
pub const FLAGS: [FlagDef; 8] = [
    FlagDef {
        bit: KMC_KVMEM,
        letter: 'K',
        name: "kvmem",
    },
    FlagDef {
        bit: KMC_SLAB,
        letter: 'S',
        name: "slab",
    },
    FlagDef {
        bit: KMC_NODEBUG,
        letter: 'N',
        name: "nodebug",
    },
    FlagDef {
        bit: KMC_RECLAIMABLE,
        letter: 'R',
        name: "reclaimable",
    },
    FlagDef {
        bit: KMC_GROWING,
        letter: 'g',
        name: "growing",
    },
    FlagDef {
        bit: KMC_DEADLOCKED,
        letter: 'D',
        name: "DEADLOCKED",
    },
    FlagDef {
        bit: KMC_REAPING,
        letter: 'r',
        name: "reaping",
    },
    FlagDef {
        bit: KMC_DESTROY,
        letter: 'x',
        name: "destroying",
    },
];

/// The key to the letters of [`flag_letters`].
pub const FLAG_LEGEND: &str = "K kvmem  S slab  N nodebug  R reclaimable | g growing  D DEADLOCKED  r reaping  x destroying  ? unknown  Fn failing, n failed";

/// `flags` as letters (`K`, `KgD`, ...); bits slabscope does not define add `?`;
/// no flag at all is `-`.
pub fn flag_letters(flags: u64) -> String {
    let mut out = String::new();
    let mut known = 0;
    for f in FLAGS {
        known |= f.bit;
        if flags & f.bit != 0 {
            out.push(f.letter);
        }
    }
    if flags & !known != 0 {
        out.push('?');
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

/// `flags` as the names of its bits, `|` separated, for the detail view.
pub fn flag_names(flags: u64) -> String {
    let mut names: Vec<String> = FLAGS
        .iter()
        .filter(|f| flags & f.bit != 0)
        .map(|f| f.name.to_string())
        .collect();
    let known: u64 = FLAGS.iter().map(|f| f.bit).fold(0, |a, b| a | b);
    if flags & !known != 0 {
        names.push(format!("0x{:x}", flags & !known));
    }
    if names.is_empty() {
        "none".into()
    } else {
        names.join("|")
    }
}

/// `flags` as `/proc/spl/kmem/slab` prints them.
pub fn flag_hex(flags: u64) -> String {
    format!("0x{flags:05x}")
}

/// A byte count with a binary suffix (`1023`, `1.0K`, `16K`, `1.5M`), like
/// `slabtop`'s and `ls -h`'s: one decimal below 10 units, none above.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if n < 1024 {
        return n.to_string();
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v < 10.0 {
        format!("{v:.1}{}", UNITS[unit])
    } else {
        format!("{:.0}{}", v, UNITS[unit])
    }
}

/// A byte count, human readable or exact.
pub fn bytes(n: u64, human: bool) -> String {
    if human { human_bytes(n) } else { n.to_string() }
}

/// `part / whole` as a percentage with one decimal; `-` when `whole` is 0.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// The probe-specific values of `ev`, each named after its argument in
/// [`slabscope_probes::PROBES`]: `result=-12 slab_total=4`. Pointers are
/// printed in hex, signed arguments as signed.
pub fn event_values(ev: &Event) -> String {
    let Some(kind) = ProbeKind::from_u32(ev.kind) else {
        return format!("unknown kind {}", ev.kind);
    };
    let def = kind.def();
    let mut out = String::new();
    for (arg, value) in def.args[2..2 + def.values()].iter().zip(ev.values) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(arg.name);
        out.push('=');
        if arg.ty.contains('*') {
            out.push_str(&format!("{value:#x}"));
        } else if arg.ty.starts_with("int") {
            out.push_str(&(value as i64).to_string());
        } else {
            out.push_str(&value.to_string());
        }
    }
    out
}

/// The probe name of an event kind, or `kind N` for one this build does not know.
pub fn kind_name(kind: u32) -> String {
    match ProbeKind::from_u32(kind) {
        Some(k) => k.name().to_string(),
        None => format!("kind {kind}"),
    }
}

/// `text` cut to `width` characters, the last one `…` when it was cut, so a
/// long name cannot push the columns after it. For [`crate::escape::escape`]d
/// text, where every character is one column wide.
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    if width > 0 {
        out.push('…');
    }
    out
}

/// Seconds with millisecond precision, right aligned in 10 columns.
pub fn seconds(ns: u64) -> String {
    format!("{:>10.3}", ns as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use slabscope_probes::{EVENT_VALUES, NAME_LEN};

    fn event(kind: ProbeKind, values: [u64; EVENT_VALUES]) -> Event {
        Event {
            ts_ns: 0,
            pid: 1,
            tid: 1,
            cache_id: 1,
            kind: kind as u32,
            _pad: 0,
            values,
            name: [0; NAME_LEN],
        }
    }

    #[test]
    fn letters_follow_the_bits() {
        assert_eq!(flag_letters(0), "-");
        assert_eq!(flag_letters(KMC_KVMEM), "K");
        assert_eq!(
            flag_letters(KMC_KVMEM | KMC_GROWING | KMC_DEADLOCKED),
            "KgD"
        );
        assert_eq!(flag_letters(KMC_SLAB | 1), "S?");
        for f in FLAGS {
            assert!(
                FLAG_LEGEND.contains(&format!("{} {}", f.letter, f.name)),
                "{f:?}"
            );
        }
    }

    #[test]
    fn names_and_hex() {
        assert_eq!(flag_names(KMC_KVMEM | KMC_DEADLOCKED), "kvmem|DEADLOCKED");
        assert_eq!(flag_names(1 << 40), "0x10000000000");
        assert_eq!(flag_hex(KMC_KVMEM), "0x00080");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0");
        assert_eq!(human_bytes(1023), "1023");
        assert_eq!(human_bytes(1024), "1.0K");
        assert_eq!(human_bytes(16384), "16K");
        assert_eq!(human_bytes(3 << 19), "1.5M");
        assert_eq!(human_bytes(5 << 30), "5.0G");
        assert_eq!(bytes(16384, false), "16384");
    }

    #[test]
    fn fit_cuts_with_an_ellipsis() {
        assert_eq!(fit("zio_cache", 22), "zio_cache");
        assert_eq!(fit("abcdef", 6), "abcdef");
        assert_eq!(fit("abcdefg", 6), "abcde…");
        assert_eq!(fit("ab", 0), "");
    }

    #[test]
    fn percentages() {
        assert_eq!(percent(1, 0), "-");
        assert_eq!(percent(1, 3), "33.3%");
    }

    #[test]
    fn values_are_named_after_the_probe_args() {
        let ev = event(ProbeKind::GrowDone, [(-12i64) as u64, 4, 56, 0, 0]);
        assert_eq!(event_values(&ev), "result=-12 slab_total=4 obj_total=56");
        let ev = event(ProbeKind::EmergencyAlloc, [0x7f00_1000, 3, 0, 0, 0]);
        assert_eq!(event_values(&ev), "obj=0x7f001000 obj_emergency=3");
        let ev = event(ProbeKind::CacheStats, [1, 2, 3, 0, 0]);
        assert_eq!(event_values(&ev), "slab_total=1 obj_total=2 obj_alloc=3");
        let mut ev = event(ProbeKind::Reap, [0; EVENT_VALUES]);
        ev.kind = 99;
        assert_eq!(event_values(&ev), "unknown kind 99");
        assert_eq!(kind_name(99), "kind 99");
        assert_eq!(kind_name(ProbeKind::Deadlock as u32), "deadlock");
    }
}
