//! Tunables: SPL's six module parameters (`man/man4/spl.4`) plus slabscope's
//! own timing and fault-injection knobs.
//!
//! They take effect once, the first time any cache is created (or [`get`] is
//! called), and never change afterwards: slab and magazine geometry is fixed
//! per cache at creation, as in SPL. Before that moment a program may call
//! [`set`]; at that moment every `SLABSCOPE_<UPPERCASE_NAME>` environment
//! variable is applied **on top of** what the program set (an operator can
//! retune a binary without rebuilding it), and the result is validated. A bad
//! value is an [`Error::Tunable`] naming the variable — cache creation returns
//! it — never a silent default. A `SLABSCOPE_*` variable that names no
//! tunable (a misspelling such as `SLABSCOPE_MAGAZIN_SIZE`) is ignored with
//! one warning on stderr naming it and the closest tunable's variable
//! ([`unknown_vars`]).
//!
//! | name | default | meaning |
//! |---|---|---|
//! | `magazine_size` | 0 | objects per per-CPU magazine; 0 = by object size (`spl_magazine_size()`), else 2–256 |
//! | `magazine_rseq` | 1 | 1 = magazines use restartable sequences where the system supports them (x86_64, glibc 2.35+, Linux 5.10+): no atomic operation on the fast path; 0 = always the one-byte lock |
//! | `depot_kb` | 4096 | the depot between the magazines and the slabs holds at most this many KiB of objects (at least one refill's worth; a `kmem_alloc`/`malloc` class at most 128 KiB); 0 = no depot, as SPL (see the `depot` module). 0 to 1048576 |
//! | `reclaim` | 0 | 1 = the background reaper only reclaims empty slabs and leaves magazines and the depot alone (SPL's `KMC_RECLAIM_ONCE`, a less aggressive reclaim) |
//! | `obj_per_slab` | 8 | target objects per slab before rounding the slab up to whole pages |
//! | `max_size` | 32 | largest slab, MB |
//! | `slab_limit` | 0 | objects of at most this many bytes use the system allocator (`KMC_SLAB`); 0 = never |
//! | `kmem_threads` | 4 | worker threads that build slabs (SPL's `spl_kmem_cache` taskq) |
//! | `grow_timeout_ms` | 100 | how long an allocation waits for a grow before the cache is marked DEADLOCKED (SPL: HZ/10) |
//! | `grow_fail_emergency` | 0 | after this many grows in a row failed, a `KM_SLEEP` allocation takes an emergency object instead of waiting for another grow; 0 = retry forever, as SPL (see the `grow` module). 0 to 1000000 |
//! | `grow_in_context` | 1 | 1 = an allocation that must grow first tries to map the slab itself, without sleeping, and hands the grow to a worker only when that fails; 0 = every grow goes to a worker, as in the seed (see the `grow` module) |
//! | `slab_reserve_kb` | 2048 | slabs of at most an eighth of this are carved from shared reservations of this many KiB, those of objects smaller than a page advised for transparent huge pages once their cache holds this much in slabs (see `os::map_slab`); 0 = every slab its own mapping, as SPL's `kv_alloc()`. 0 or a power of two from 64 to 1048576 |
//! | `slab_huge_pages` | 1 | 1 = slabs of objects smaller than a page come from a reservation advised for transparent huge pages once their cache holds `slab_reserve_kb` of slabs; 0 = never (every reservation advised against them), for a machine where a huge page's first touch costs more than it saves (see `os::SlabPages`) |
//! | `slab_windows` | 1 | 1 = the `kmem`/`malloc` size classes of 16 to 64 bytes carve their slabs from windows of address space of their own, 4 GiB reserved inaccessible (no memory), so `free` knows their class from the address (see `os::window`); 0 = no windows: those classes carve from the shared reservations, found through the page map |
//! | `slab_reclaim_delay_ms` | 1000 | a full magazine's flush unmaps only the empty slabs idle this long (looking at most twice per delay); reaps unmap every empty slab. 0 = the seed's behaviour (unmap at once) |
//! | `reap_interval_ms` | 0 | background reaper period; 0 = no reaper |
//! | `stats_interval_ms` | 1000 | period of the `cache_stats` probe (a thread, or the slow paths of a single-threaded process); 0 = off |
//! | `fault_grow_delay_ms` | 0 | each grow sleeps this long before mapping its slab |
//! | `fault_slab_fail_permille` | 0 | this many grows in 1000 fail as if mmap failed |
//!
//! `slab_limit` defaults to 0 where SPL uses 16384: in the kernel, small
//! objects go to the Linux slab, an allocator tuned for them; in userspace the
//! "Linux slab" is just the system `malloc`, and slabscope exists to run and
//! observe SPL's own slab and magazine machinery, so every cache uses it unless
//! the user opts in.
//!
//! With `fault_grow_delay_ms` greater than `grow_timeout_ms` every grow
//! outlives the wait, so the cache goes DEADLOCKED and hands out emergency
//! objects. Any non-zero `fault_grow_delay_ms` also makes the in-context
//! attempt of `grow_in_context` fail at once (a delayed grow stands for
//! memory that only a sleeping allocation gets), so every grow goes to a
//! worker. With `fault_slab_fail_permille` = 1000 every grow fails and a
//! `KM_SLEEP` allocation retries forever, as SPL's would, unless
//! `grow_fail_emergency` bounds it.

use std::sync::{Mutex, OnceLock};

use crate::error::Error;

/// Every tunable. `Tunables::default()` holds the documented defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Tunables {
    /// Objects per magazine, 0 = automatic; else 2..=256.
    pub magazine_size: u32,
    /// 1 = restartable-sequence magazines where supported, 0 = locked.
    pub magazine_rseq: u32,
    /// KiB of objects the depot may hold; 0 = no depot.
    pub depot_kb: u32,
    /// 0 or 1 (`KMC_RECLAIM_ONCE`).
    pub reclaim: u32,
    /// Target objects per slab, >= 1.
    pub obj_per_slab: u32,
    /// Largest slab in MB, 1..=4096.
    pub max_size: u32,
    /// Objects of at most this size go to the system allocator; 0 = never.
    pub slab_limit: u32,
    /// Grow worker threads, 1..=256.
    pub kmem_threads: u32,
    /// Grow wait before DEADLOCKED, 1..=600000 ms.
    pub grow_timeout_ms: u64,
    /// Failed grows in a row after which `KM_SLEEP` takes an emergency
    /// object, 0 = never (SPL), 0..=1000000.
    pub grow_fail_emergency: u32,
    /// 1 = try each grow in the allocating thread first; 0 = always on a
    /// worker (the seed's behaviour).
    pub grow_in_context: u32,
    /// KiB of the reservations small slabs are carved from; 0 = none.
    pub slab_reserve_kb: u32,
    /// 1 = huge pages for the slabs of large caches of small objects,
    /// 0 = never.
    pub slab_huge_pages: u32,
    /// 1 = the small size classes carve their slabs from windows of their
    /// own, 0 = no windows.
    pub slab_windows: u32,
    /// Empty slabs younger than this survive a magazine flush's reclaim.
    pub slab_reclaim_delay_ms: u64,
    /// Background reaper period, 0 = off.
    pub reap_interval_ms: u64,
    /// Background `cache_stats` period, 0 = off.
    pub stats_interval_ms: u64,
    /// Fault injection: delay of every grow.
    pub fault_grow_delay_ms: u64,
    /// Fault injection: failed grows per 1000, 0..=1000.
    pub fault_slab_fail_permille: u32,
}

impl Default for Tunables {
    fn default() -> Self {
        Tunables {
            magazine_size: 0,
            magazine_rseq: 1,
            depot_kb: 4096,
            reclaim: 0,
            obj_per_slab: 8,
            max_size: 32,
            slab_limit: 0,
            kmem_threads: 4,
            grow_timeout_ms: 100,
            grow_fail_emergency: 0,
            grow_in_context: 1,
            slab_reserve_kb: 2048,
            slab_huge_pages: 1,
            slab_windows: 1,
            slab_reclaim_delay_ms: 1000,
            reap_interval_ms: 0,
            stats_interval_ms: 1000,
            fault_grow_delay_ms: 0,
            fault_slab_fail_permille: 0,
        }
    }
}

/// The tunable names, as fields and (uppercased, prefixed) as env variables.
pub const NAMES: [&str; 19] = [
    "magazine_size",
    "magazine_rseq",
    "depot_kb",
    "reclaim",
    "obj_per_slab",
    "max_size",
    "slab_limit",
    "kmem_threads",
    "grow_timeout_ms",
    "grow_fail_emergency",
    "grow_in_context",
    "slab_reserve_kb",
    "slab_huge_pages",
    "slab_windows",
    "slab_reclaim_delay_ms",
    "reap_interval_ms",
    "stats_interval_ms",
    "fault_grow_delay_ms",
    "fault_slab_fail_permille",
];

/// The environment variable of tunable `name`: `SLABSCOPE_<NAME>`.
pub fn env_var(name: &str) -> String {
    format!("SLABSCOPE_{}", name.to_ascii_uppercase())
}

fn bad(setting: &str, value: impl ToString, reason: &str) -> Error {
    Error::Tunable {
        setting: setting.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn check(setting: &str, v: u64, lo: u64, hi: u64, what: &str) -> Result<(), Error> {
    if v < lo || v > hi {
        return Err(bad(
            setting,
            v,
            &format!("{what}: use a value from {lo} to {hi}"),
        ));
    }
    Ok(())
}

impl Tunables {
    /// Checks every field; `prefix` is prepended to field names in errors.
    pub fn validate(&self) -> Result<(), Error> {
        self.validate_named(|n| n.to_string())
    }

    fn validate_named(&self, label: impl Fn(&str) -> String) -> Result<(), Error> {
        if self.magazine_size == 1 || self.magazine_size > 256 {
            return Err(bad(
                &label("magazine_size"),
                self.magazine_size,
                "objects per magazine: use 0 (automatic) or 2 to 256",
            ));
        }
        check(
            &label("magazine_rseq"),
            self.magazine_rseq.into(),
            0,
            1,
            "0 (locked magazines) or 1 (restartable sequences where supported)",
        )?;
        check(
            &label("reclaim"),
            self.reclaim.into(),
            0,
            1,
            "0 or 1 (single reclaim pass)",
        )?;
        check(
            &label("obj_per_slab"),
            self.obj_per_slab.into(),
            1,
            1 << 20,
            "objects per slab",
        )?;
        check(
            &label("max_size"),
            self.max_size.into(),
            1,
            4096,
            "largest slab in MB",
        )?;
        check(
            &label("kmem_threads"),
            self.kmem_threads.into(),
            1,
            256,
            "grow threads",
        )?;
        check(
            &label("grow_timeout_ms"),
            self.grow_timeout_ms,
            1,
            600_000,
            "milliseconds",
        )?;
        check(
            &label("grow_fail_emergency"),
            self.grow_fail_emergency.into(),
            0,
            1_000_000,
            "failed grows in a row (0 = never)",
        )?;
        check(
            &label("depot_kb"),
            self.depot_kb.into(),
            0,
            1 << 20,
            "KiB of objects in the depot (0 = no depot, as SPL)",
        )?;
        check(
            &label("grow_in_context"),
            self.grow_in_context.into(),
            0,
            1,
            "0 (every grow on a worker, as SPL) or 1 (try in the allocating thread first)",
        )?;
        let kb = self.slab_reserve_kb;
        if kb != 0 && !(kb.is_power_of_two() && (64..=1 << 20).contains(&kb)) {
            return Err(bad(
                &label("slab_reserve_kb"),
                kb,
                "KiB per slab reservation: use 0 (a mapping per slab) or a power of two \
                 from 64 to 1048576",
            ));
        }
        check(
            &label("slab_huge_pages"),
            self.slab_huge_pages.into(),
            0,
            1,
            "0 (never advise huge pages) or 1 (for large caches of small objects)",
        )?;
        check(
            &label("slab_windows"),
            self.slab_windows.into(),
            0,
            1,
            "0 (no windows) or 1 (the small size classes in windows of their own)",
        )?;
        check(
            &label("slab_reclaim_delay_ms"),
            self.slab_reclaim_delay_ms,
            0,
            86_400_000,
            "milliseconds (0 = unmap empty slabs at once, as SPL)",
        )?;
        check(
            &label("reap_interval_ms"),
            self.reap_interval_ms,
            0,
            86_400_000,
            "milliseconds (0 = off)",
        )?;
        check(
            &label("stats_interval_ms"),
            self.stats_interval_ms,
            0,
            86_400_000,
            "milliseconds (0 = off)",
        )?;
        check(
            &label("fault_grow_delay_ms"),
            self.fault_grow_delay_ms,
            0,
            600_000,
            "milliseconds",
        )?;
        check(
            &label("fault_slab_fail_permille"),
            self.fault_slab_fail_permille.into(),
            0,
            1000,
            "failures per 1000 grows",
        )?;
        Ok(())
    }

    fn field_mut(&mut self, name: &str) -> Option<FieldMut<'_>> {
        Some(match name {
            "magazine_size" => FieldMut::U32(&mut self.magazine_size),
            "magazine_rseq" => FieldMut::U32(&mut self.magazine_rseq),
            "depot_kb" => FieldMut::U32(&mut self.depot_kb),
            "reclaim" => FieldMut::U32(&mut self.reclaim),
            "obj_per_slab" => FieldMut::U32(&mut self.obj_per_slab),
            "max_size" => FieldMut::U32(&mut self.max_size),
            "slab_limit" => FieldMut::U32(&mut self.slab_limit),
            "kmem_threads" => FieldMut::U32(&mut self.kmem_threads),
            "grow_timeout_ms" => FieldMut::U64(&mut self.grow_timeout_ms),
            "grow_fail_emergency" => FieldMut::U32(&mut self.grow_fail_emergency),
            "grow_in_context" => FieldMut::U32(&mut self.grow_in_context),
            "slab_reserve_kb" => FieldMut::U32(&mut self.slab_reserve_kb),
            "slab_huge_pages" => FieldMut::U32(&mut self.slab_huge_pages),
            "slab_windows" => FieldMut::U32(&mut self.slab_windows),
            "slab_reclaim_delay_ms" => FieldMut::U64(&mut self.slab_reclaim_delay_ms),
            "reap_interval_ms" => FieldMut::U64(&mut self.reap_interval_ms),
            "stats_interval_ms" => FieldMut::U64(&mut self.stats_interval_ms),
            "fault_grow_delay_ms" => FieldMut::U64(&mut self.fault_grow_delay_ms),
            "fault_slab_fail_permille" => FieldMut::U32(&mut self.fault_slab_fail_permille),
            _ => return None,
        })
    }

    /// `self` with every variable `lookup` knows applied, then validated.
    /// [`get`] calls it with the process environment.
    pub fn with_env(mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<Tunables, Error> {
        for name in NAMES {
            let var = env_var(name);
            let Some(raw) = lookup(&var) else { continue };
            let text = raw.trim();
            let field = self.field_mut(name).expect("NAMES lists only fields");
            let parsed = text.parse::<u64>().map_err(|_| {
                bad(
                    &var,
                    &raw,
                    "expected a non-negative integer: fix or unset the variable",
                )
            })?;
            match field {
                FieldMut::U32(f) => {
                    *f = u32::try_from(parsed)
                        .map_err(|_| bad(&var, &raw, "too large: fix or unset the variable"))?
                }
                FieldMut::U64(f) => *f = parsed,
            }
        }
        self.validate_named(|n| {
            if lookup(&env_var(n)).is_some() {
                env_var(n)
            } else {
                format!("Tunables::{n}")
            }
        })?;
        Ok(self)
    }
}

enum FieldMut<'a> {
    U32(&'a mut u32),
    U64(&'a mut u64),
}

/// `SLABSCOPE_*` variables of this project that are not tunables: the test
/// and demo knobs. They draw no warning.
pub const OTHER_VARS: [&str; 6] = [
    "SLABSCOPE_BAD_INPUT",
    "SLABSCOPE_DEMO",
    "SLABSCOPE_LONG",
    "SLABSCOPE_MODEL_OPS",
    "SLABSCOPE_MODEL_SEED",
    "SLABSCOPE_THREADS_SEED",
];

/// Edit distance (insertions, deletions, substitutions) of `a` and `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The `SLABSCOPE_*` names among `vars` that are neither a tunable's
/// variable nor in [`OTHER_VARS`], each with the closest tunable variable
/// (by edit distance, ignoring case).
///
/// # Examples
///
/// ```
/// use slabscope::tunables::unknown_vars;
///
/// let vars = ["SLABSCOPE_MAGAZIN_SIZE", "SLABSCOPE_DEPOT_KB", "HOME"];
/// assert_eq!(
///     unknown_vars(vars.iter().map(|v| v.to_string())),
///     [("SLABSCOPE_MAGAZIN_SIZE".to_string(), "SLABSCOPE_MAGAZINE_SIZE".to_string())]
/// );
/// ```
pub fn unknown_vars(vars: impl Iterator<Item = String>) -> Vec<(String, String)> {
    let known: Vec<String> = NAMES.iter().map(|n| env_var(n)).collect();
    vars.filter(|v| v.starts_with("SLABSCOPE_"))
        .filter(|v| !known.contains(v) && !OTHER_VARS.contains(&v.as_str()))
        .map(|v| {
            let closest = known
                .iter()
                .min_by_key(|k| edit_distance(&v.to_ascii_uppercase(), k))
                .expect("there are tunables")
                .clone();
            (v, closest)
        })
        .collect()
}

/// The warning for an unknown variable `var` whose closest tunable variable
/// is `closest`.
pub fn unknown_var_warning(var: &str, closest: &str) -> String {
    format!(
        "slabscope: warning: {var} is not a slabscope tunable and is ignored; \
         did you mean {closest}?"
    )
}

static PENDING: Mutex<Option<Tunables>> = Mutex::new(None);
static ACTIVE: OnceLock<Result<Tunables, Error>> = OnceLock::new();

/// Sets the tunables the first cache will use. Fails when they are invalid or
/// already in effect.
pub fn set(t: Tunables) -> Result<(), Error> {
    t.validate()?;
    let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    if ACTIVE.get().is_some() {
        return Err(Error::TunablesFrozen);
    }
    *pending = Some(t);
    Ok(())
}

/// The tunables in effect, fixing them on the first call: what [`set`] gave
/// (or the defaults), with `SLABSCOPE_*` variables applied on top. The fault
/// injection tunables seed `fault`, which may change them later.
pub fn get() -> Result<Tunables, Error> {
    ACTIVE
        .get_or_init(|| {
            let pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
            // Once, when the tunables take effect: a misspelt variable
            // would otherwise be ignored without a word.
            let names = std::env::vars_os().filter_map(|(k, _)| k.into_string().ok());
            for (var, closest) in unknown_vars(names) {
                eprintln!("{}", unknown_var_warning(&var, &closest));
            }
            let t = pending
                .unwrap_or_default()
                .with_env(|v| std::env::var(v).ok())?;
            fault::seed(t.fault_grow_delay_ms, t.fault_slab_fail_permille);
            Ok(t)
        })
        .clone()
}

// Fault injection: public for tests and examples (feature `testing`),
// crate-internal otherwise.
#[cfg(feature = "testing")]
pub mod fault;
#[cfg(not(feature = "testing"))]
pub(crate) mod fault;

/// The tunables in effect, for code that runs only after a cache exists.
pub(crate) fn current() -> Tunables {
    match ACTIVE.get() {
        Some(Ok(t)) => *t,
        _ => unreachable!("tunables are fixed before the first cache is created"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_are_valid_and_match_the_docs() {
        let t = Tunables::default();
        t.validate().expect("defaults validate");
        assert_eq!(t.obj_per_slab, 8);
        assert_eq!(t.max_size, 32);
        assert_eq!(t.kmem_threads, 4);
        assert_eq!(t.grow_timeout_ms, 100);
        assert_eq!(t.slab_limit, 0);
        assert_eq!(t.grow_in_context, 1);
        assert_eq!(t.slab_reserve_kb, 2048);
        assert_eq!(t.slab_huge_pages, 1);
        assert_eq!(t.slab_windows, 1);
    }

    #[test]
    fn env_overrides_apply_on_top() {
        let t = Tunables::default()
            .with_env(env(&[
                ("SLABSCOPE_MAGAZINE_SIZE", "4"),
                ("SLABSCOPE_GROW_TIMEOUT_MS", " 20 "),
                ("SLABSCOPE_GROW_IN_CONTEXT", "0"),
            ]))
            .unwrap();
        assert_eq!(t.magazine_size, 4);
        assert_eq!(t.grow_timeout_ms, 20);
        assert_eq!(t.grow_in_context, 0);
        assert_eq!(t.kmem_threads, 4);
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let e = Tunables::default()
            .with_env(env(&[("SLABSCOPE_KMEM_THREADS", "four")]))
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("SLABSCOPE_KMEM_THREADS"), "{msg}");
        assert!(msg.contains("four"), "{msg}");

        // The message of the error one variable set to one value makes.
        let refused = |var: &str, value: &str| {
            Tunables::default()
                .with_env(env(&[(var, value)]))
                .unwrap_err()
                .to_string()
        };
        for (var, bad) in [
            ("SLABSCOPE_MAGAZINE_SIZE", "1"),
            ("SLABSCOPE_GROW_IN_CONTEXT", "2"),
            ("SLABSCOPE_SLAB_HUGE_PAGES", "2"),
            ("SLABSCOPE_SLAB_RESERVE_KB", "3000"),
            ("SLABSCOPE_SLAB_RESERVE_KB", "32"),
            ("SLABSCOPE_SLAB_RESERVE_KB", "2097152"),
            ("SLABSCOPE_RECLAIM", "99999999999"),
        ] {
            let e = refused(var, bad);
            assert!(e.contains(var), "{var}={bad}: {e}");
        }
        let e = refused("SLABSCOPE_FAULT_SLAB_FAIL_PERMILLE", "1001");
        assert!(e.contains("1001"), "{e}");
        for good_kb in ["0", "64", "2048", "1048576"] {
            Tunables::default()
                .with_env(env(&[("SLABSCOPE_SLAB_RESERVE_KB", good_kb)]))
                .unwrap_or_else(|e| panic!("{good_kb}: {e}"));
        }

        let t = Tunables::default()
            .with_env(env(&[("SLABSCOPE_SLAB_HUGE_PAGES", "0")]))
            .unwrap();
        assert_eq!(t.slab_huge_pages, 0);
    }

    #[test]
    fn unknown_variables_are_named_with_the_closest_tunable() {
        let vars = [
            "SLABSCOPE_MAGAZIN_SIZE",
            "SLABSCOPE_GROW_TIMEOUT",
            "SLABSCOPE_kmem_threads",
            "SLABSCOPE_DEPOT_KB",
            "SLABSCOPE_LONG",
            "PATH",
        ];
        let found = unknown_vars(vars.iter().map(|v| v.to_string()));
        let pairs: Vec<(&str, &str)> = found
            .iter()
            .map(|(v, c)| (v.as_str(), c.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("SLABSCOPE_MAGAZIN_SIZE", "SLABSCOPE_MAGAZINE_SIZE"),
                ("SLABSCOPE_GROW_TIMEOUT", "SLABSCOPE_GROW_TIMEOUT_MS"),
                ("SLABSCOPE_kmem_threads", "SLABSCOPE_KMEM_THREADS"),
            ]
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(
            unknown_var_warning("SLABSCOPE_X", "SLABSCOPE_Y"),
            "slabscope: warning: SLABSCOPE_X is not a slabscope tunable and is ignored; \
             did you mean SLABSCOPE_Y?"
        );
    }

    #[test]
    fn bad_code_value_names_the_field() {
        let t = Tunables {
            kmem_threads: 0,
            ..Tunables::default()
        };
        let e = t.validate().unwrap_err();
        assert!(e.to_string().contains("kmem_threads"), "{e}");
        let e = Tunables {
            max_size: 0,
            ..Tunables::default()
        }
        .with_env(env(&[]))
        .unwrap_err();
        assert!(e.to_string().contains("Tunables::max_size"), "{e}");
    }

    #[test]
    fn every_name_is_a_field() {
        let mut t = Tunables::default();
        for n in NAMES {
            assert!(t.field_mut(n).is_some(), "{n}");
        }
    }

    /// Every tunable has a row in this module's table, in the crate's
    /// README and, with its variable, in the workspace README.
    #[test]
    fn every_tunable_is_documented() {
        let docs = [
            ("allocator/src/tunables/mod.rs", include_str!("mod.rs")),
            ("allocator/README.md", include_str!("../../README.md")),
            ("README.md", include_str!("../../../README.md")),
        ];
        for n in NAMES {
            for (file, text) in docs {
                assert!(
                    text.contains(&format!("| `{n}` |")),
                    "{file} has no row for {n}"
                );
            }
            let var = format!("| `{}` |", env_var(n));
            assert!(docs[2].1.contains(&var), "README.md does not name {var}");
        }
    }
}
