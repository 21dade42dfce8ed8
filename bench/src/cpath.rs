//! The C path (issue 15): slabscope and its peers called the way a C program
//! calls them, through shared libraries loaded with `dlopen` and function
//! pointers, by a C harness (`bench/c/cpath.c`) compiled here with gcc.
//!
//! slabscope is called through `libslabscope.so`'s `kmem_cache_alloc` /
//! `kmem_cache_free` and, when `libslabscope_malloc.so` is built, through
//! its `malloc` / `free`; each peer through its library's `malloc` / `free`
//! (glibc's `libc.so.6`, `libjemalloc.so.2`, `libmimalloc.so.2`,
//! `libtcmalloc_minimal.so.4`). All contenders of one workload run in one
//! harness process, pinned, interleaved run by run, so the ratios are
//! measured side by side, as in section 1, whose Rust path calls
//! `Cache::alloc` inline.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::measure::Summary;
use crate::native::{EntryPaths, HitLoop};
use crate::text::{num, size_name};

/// The harness's source, compiled at run time so the binary needs no tree.
const SOURCE: &str = include_str!("../c/cpath.c");
/// The references' source, built once per reference ([`REFERENCES`]).
const STACK_SOURCE: &str = include_str!("../c/stack.c");
/// The macro that selects each reference in [`STACK_SOURCE`].
const REFERENCE_FLAGS: [(&str, &[&str]); 4] = [
    (STACK, &[]),
    (TLS_STACK, &["-DPER_THREAD"]),
    (RSEQ_STACK, &["-DPER_CPU"]),
    (RSEQ_CLASSES, &["-DPER_CPU", "-DCLASSES"]),
];

/// Peers: name in the report and the soname `dlopen` finds.
pub const PEERS: [(&str, &str); 4] = [
    ("glibc", "libc.so.6"),
    ("jemalloc", "libjemalloc.so.2"),
    ("mimalloc", "libmimalloc.so.2"),
    ("tcmalloc", "libtcmalloc_minimal.so.4"),
];

/// slabscope through the cache ABI.
pub const CACHE: &str = "slabscope";
/// slabscope through `libslabscope_malloc.so`.
pub const MALLOC: &str = "slabscope_malloc";
/// A reference, not a peer: `bench/c/stack.c`'s `malloc` pops a pointer
/// off one array and its `free` pushes it back, the least an allocator can
/// do; its column shows what the harness's loop costs around that.
pub const STACK: &str = "stack";
/// A reference: `bench/c/stack.c` with its array in the calling thread's
/// storage, the least a thread-cache allocator (glibc's tcache, jemalloc,
/// mimalloc, tcmalloc) does on a hit.
pub const TLS_STACK: &str = "tls_stack";
/// A reference: `bench/c/stack.c` with one array per CPU reached in a
/// restartable sequence, the least a per-CPU allocator (slabscope's
/// magazines) does on a hit.
pub const RSEQ_STACK: &str = "rseq_stack";
/// A reference: [`RSEQ_STACK`] with one array per CPU and size class, the
/// class found from the size by `malloc` and from the address by `free`,
/// the least a per-CPU allocator of size classes (slabscope's `malloc`)
/// does on a hit; the one reference that minds sizes, so it runs random
/// sizes too.
pub const RSEQ_CLASSES: &str = "rseq_classes";
/// The references, in the report's order: [`REFERENCE_FLAGS`]' names.
pub const REFERENCES: [&str; REFERENCE_FLAGS.len()] = {
    let mut names = [""; REFERENCE_FLAGS.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = REFERENCE_FLAGS[i].0;
        i += 1;
    }
    names
};

/// Whether reference `name` runs a workload of random sizes (only one
/// that keeps its blocks by size class can).
fn runs_mixed(name: &str) -> bool {
    name == RSEQ_CLASSES
}

/// The (smallest size, largest size, objects live per round) workloads,
/// LIFO frees: the issue's 1-live and 64 B 1000-live rows of section 1,
/// the 4 KiB 1000-live row, and random sizes from 16 to 256 bytes (one
/// seeded size per slot, so the size class changes from call to call, as
/// in a program; `malloc` only, as a cache has one size).
pub const SHAPES: [(usize, usize, usize); 4] = [
    (64, 64, 1),
    (64, 64, 1000),
    (4096, 4096, 1000),
    (16, 256, 1000),
];

/// jemalloc's and mimalloc's libraries use initial-exec TLS, which `dlopen`
/// can only place in glibc's static TLS surplus; the default 512 bytes is too
/// small for jemalloc ("cannot allocate memory in static TLS block").
const TUNABLES: &str = "glibc.rtld.optional_static_tls=65536";

/// Where the shared libraries under test are, or why one is absent.
#[derive(Clone, Debug)]
pub struct Libraries {
    /// `libslabscope.so` (the cache ABI).
    pub slabscope: Result<PathBuf, String>,
    /// `libslabscope_malloc.so`.
    pub malloc: Result<PathBuf, String>,
    /// The references' libraries ([`compile_references`]), in
    /// [`REFERENCES`]' order.
    pub references: Vec<(&'static str, Result<PathBuf, String>)>,
}

/// One workload's cells: contender name → ns/op.
#[derive(Clone, Debug)]
pub struct CRow {
    /// The object size, or the smallest of random sizes up to `max_size`.
    pub size: usize,
    pub max_size: usize,
    pub live: usize,
    pub cells: BTreeMap<String, Summary>,
}

impl CRow {
    /// The workload as the report names it.
    pub fn label(&self) -> String {
        if self.max_size > self.size {
            format!(
                "random {}–{}, {} live",
                size_name(self.size),
                size_name(self.max_size),
                self.live
            )
        } else {
            format!("{}, {} live", size_name(self.size), self.live)
        }
    }

    /// The fastest peer's median and its name.
    pub fn best_peer(&self) -> Option<(&str, f64)> {
        PEERS
            .iter()
            .filter_map(|(p, _)| self.cells.get(*p).map(|s| (*p, s.median)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// `who`'s median over the best peer's.
    pub fn ratio(&self, who: &str) -> Option<f64> {
        Some(self.cells.get(who)?.median / self.best_peer()?.1)
    }
}

/// What the C path measured.
#[derive(Clone, Debug)]
pub struct CPath {
    pub libs: Libraries,
    pub rows: Vec<CRow>,
    /// Contenders the harness could not load, and why.
    pub missing: BTreeMap<String, String>,
    /// Set when nothing could be measured (gcc missing, the harness failed).
    pub failed: Option<String>,
    /// The hit paths of `kmem_cache_alloc` and `kmem_cache_free` in the
    /// library's machine code (`None`: no library).
    pub abi: Option<Result<(HitLoop, HitLoop), String>>,
    /// The hit paths of `malloc` and `free` in `libslabscope_malloc.so`'s
    /// machine code (`None`: no library).
    pub malloc_abi: Option<Result<(EntryPaths, EntryPaths), String>>,
}

/// Write the harness's source to `dir` and compile it with gcc.
pub fn compile(dir: &Path) -> Result<PathBuf> {
    gcc(dir, "cpath", "", SOURCE, &["-ldl"], "the C harness")
}

/// Write the references' source ([`REFERENCES`]) to `dir` and compile it
/// with gcc into one shared library per reference; a reference that does
/// not build is left out of the run with why (the per-CPU one needs
/// x86-64 and glibc 2.35's rseq registration).
pub fn compile_references(dir: &Path) -> Vec<(&'static str, Result<PathBuf, String>)> {
    REFERENCE_FLAGS
        .iter()
        .map(|&(name, flags)| {
            let what = format!("the reference {name}");
            let flags = [&["-shared", "-fPIC"], flags].concat();
            let lib = gcc(dir, name, ".so", STACK_SOURCE, &flags, &what);
            (name, lib.map_err(|e| format!("{e:#}")))
        })
        .collect()
}

/// Deletes the libraries [`compile_references`] built.
pub fn remove_references(references: &[(&str, Result<PathBuf, String>)]) {
    for lib in references.iter().filter_map(|(_, lib)| lib.as_ref().ok()) {
        let _ = std::fs::remove_file(lib);
    }
}

/// Writes `source` to `dir` and compiles it with `gcc -O2 -Wall` and
/// `flags` into `slabscope-NAME-PID` + `ext` there; `what` names it in
/// errors.
fn gcc(
    dir: &Path,
    name: &str,
    ext: &str,
    source: &str,
    flags: &[&str],
    what: &str,
) -> Result<PathBuf> {
    let pid = std::process::id();
    let src = dir.join(format!("slabscope-{name}-{pid}.c"));
    let out_file = dir.join(format!("slabscope-{name}-{pid}{ext}"));
    std::fs::write(&src, source).with_context(|| format!("writing {}", src.display()))?;
    let out = Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&out_file)
        .arg(&src)
        .args(flags)
        .output()
        .with_context(|| {
            format!("running gcc to build {what}: install gcc (`cargo xtask setup`)")
        })?;
    let _ = std::fs::remove_file(&src);
    if !out.status.success() {
        bail!(
            "gcc could not build {what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out_file)
}

/// The harness's `NAME=API:LIBRARY` arguments; for random sizes
/// (`mixed`) neither the cache API (one size per cache) nor the
/// reference (whose blocks are reused whatever their size).
fn contenders(libs: &Libraries, mixed: bool) -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(p) = &libs.slabscope
        && !mixed
    {
        v.push(format!("{CACHE}=cache:{}", p.display()));
    }
    if let Ok(p) = &libs.malloc {
        v.push(format!("{MALLOC}=malloc:{}", p.display()));
    }
    for (name, soname) in PEERS {
        v.push(format!("{name}=malloc:{soname}"));
    }
    for (name, lib) in &libs.references {
        if let Ok(p) = lib
            && (!mixed || runs_mixed(name))
        {
            v.push(format!("{name}=malloc:{}", p.display()));
        }
    }
    v
}

/// Samples per contender, and the contenders that did not load with why.
type Parsed = (BTreeMap<String, Vec<f64>>, BTreeMap<String, String>);

/// Parse the harness's output.
fn parse(stdout: &str) -> Result<Parsed, String> {
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut missing = BTreeMap::new();
    for line in stdout.lines() {
        let mut f = line.splitn(3, ' ');
        match (f.next(), f.next(), f.next()) {
            (Some("sample"), Some(name), Some(ns)) => {
                let ns: f64 = ns
                    .parse()
                    .map_err(|_| format!("the C harness printed a bad sample: {line:?}"))?;
                samples.entry(name.to_string()).or_default().push(ns);
            }
            (Some("missing"), Some(name), Some(why)) => {
                missing.insert(name.to_string(), why.to_string());
            }
            _ => return Err(format!("the C harness printed an unknown line: {line:?}")),
        }
    }
    Ok((samples, missing))
}

/// Run every shape of [`SHAPES`] through the harness at `bin`.
pub fn run(bin: &Path, libs: Libraries, cpu: usize, runs: usize, target_ns: u64) -> CPath {
    let abi = libs
        .slabscope
        .as_ref()
        .ok()
        .map(|lib| crate::native::c_abi(lib).map_err(|e| format!("{e:#}")));
    let malloc_abi = libs
        .malloc
        .as_ref()
        .ok()
        .map(|lib| crate::native::malloc_abi(lib).map_err(|e| format!("{e:#}")));
    let mut c = CPath {
        libs,
        rows: Vec::new(),
        missing: BTreeMap::new(),
        failed: None,
        abi,
        malloc_abi,
    };
    for (size, max_size, live) in SHAPES {
        let mixed = max_size > size;
        let row = CRow {
            size,
            max_size,
            live,
            cells: BTreeMap::new(),
        };
        let out = Command::new(bin)
            .env("GLIBC_TUNABLES", TUNABLES)
            .args([
                cpu.to_string(),
                if mixed {
                    format!("{size}-{max_size}")
                } else {
                    size.to_string()
                },
                live.to_string(),
                "lifo".into(),
                runs.to_string(),
                target_ns.to_string(),
            ])
            .args(contenders(&c.libs, mixed))
            .output();
        let out = match out {
            Ok(o) if o.status.success() => o,
            Ok(o) => {
                c.failed = Some(format!(
                    "the C harness failed on {} ({}): {}",
                    row.label(),
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
                return c;
            }
            Err(e) => {
                c.failed = Some(format!("starting the C harness {}: {e}", bin.display()));
                return c;
            }
        };
        match parse(&String::from_utf8_lossy(&out.stdout)) {
            Ok((samples, missing)) => {
                c.missing.extend(missing);
                let cells = samples
                    .into_iter()
                    .filter_map(|(k, s)| Summary::of(&s).map(|s| (k, s)))
                    .collect();
                c.rows.push(CRow { cells, ..row });
            }
            Err(e) => {
                c.failed = Some(e);
                return c;
            }
        }
        eprintln!("  C path {}: done", c.rows[c.rows.len() - 1].label());
    }
    c
}

impl CPath {
    /// The report's section; `rust_ratio(size, live)` is section 1's
    /// slabscope / best peer for the same workload, `rust_per_op` section
    /// 6's instructions per operation on the Rust path.
    pub fn markdown(
        &self,
        md: &mut String,
        rust_ratio: impl Fn(usize, usize) -> Option<f64>,
        rust_per_op: Option<f64>,
    ) {
        let _ = writeln!(
            md,
            "Each allocator as a C program calls it: a C harness (`bench/c/cpath.c`, gcc -O2) \
             loads every library with `dlopen` and calls it through function pointers, all in \
             one process, pinned, interleaved, median of the runs (min in parentheses), ns per \
             allocate-or-free operation, LIFO frees. slabscope's cache API is \
             `libslabscope.so`'s `kmem_cache_alloc(cache, KM_SLEEP)` / `kmem_cache_free`; \
             malloc is each library's `malloc` / `free`. The last column is section 1's ratio \
             for the same workload, where the bench calls `Cache::alloc` inline (the Rust \
             path). The contenders after the peers are references, not peers: \
             `bench/c/stack.c` built once for each, each a `malloc` that pops a pointer off an \
             array and a `free` that pushes it back, with nothing else. `{STACK}` has one array: its column is \
             what the harness's loop costs around one count and one slot in memory that the \
             next operation reads back. `{TLS_STACK}` keeps the array in the calling thread's \
             own storage, the least a thread-cache allocator does on a hit (glibc's, \
             jemalloc's, mimalloc's, tcmalloc's design). `{RSEQ_STACK}` has one array per CPU, \
             reached in a restartable sequence, the least a per-CPU allocator does on a hit \
             (SPL's magazines, slabscope's design). `{RSEQ_CLASSES}` has one array per CPU and \
             size class, the class found from the size by `malloc` and from the address by \
             `free`, the least a per-CPU allocator of size classes does (slabscope's \
             `malloc`). A `random` row gives each of its \
             slots a size of its own (one seeded sequence), so the size class changes from \
             call to call as in a program; it runs `malloc` only (a cache has one size), and \
             of the references only `{RSEQ_CLASSES}` (the others reuse blocks whatever their \
             size).\n"
        );
        if let Some(f) = &self.failed {
            let _ = writeln!(md, "Not measured: {f}.\n");
            return;
        }
        let mut names: Vec<&str> = vec![CACHE, MALLOC];
        names.extend(PEERS.iter().map(|(p, _)| *p));
        names.extend(REFERENCES);
        let _ = write!(md, "| workload |");
        for n in &names {
            let _ = write!(md, " {n} |");
        }
        let _ = writeln!(
            md,
            " best peer | slabscope / best | slabscope_malloc / best | Rust path: slabscope / best |"
        );
        let _ = write!(md, "|---|");
        for _ in &names {
            let _ = write!(md, "---:|");
        }
        let _ = writeln!(md, "---|---:|---:|---:|");
        let ratio = |r: Option<f64>| r.map_or("—".to_string(), |r| format!("**{r:.2}×**"));
        for r in &self.rows {
            let _ = write!(md, "| {} |", r.label());
            for n in &names {
                match r.cells.get(*n) {
                    Some(s) => {
                        let _ = write!(md, " {} ({}) |", num(s.median), num(s.min));
                    }
                    None => {
                        let _ = write!(md, " — |");
                    }
                }
            }
            let _ = writeln!(
                md,
                " {} | {} | {} | {} |",
                r.best_peer().map_or("—", |(p, _)| p),
                ratio(r.ratio(CACHE)),
                ratio(r.ratio(MALLOC)),
                (r.max_size == r.size)
                    .then(|| rust_ratio(r.size, r.live))
                    .flatten()
                    .map_or("—".to_string(), |x| format!("{x:.2}×"))
            );
        }
        let _ = writeln!(md);
        let references = self.libs.references.iter().map(|(n, l)| (*n, l));
        for (name, lib) in [(CACHE, &self.libs.slabscope), (MALLOC, &self.libs.malloc)]
            .into_iter()
            .chain(references)
        {
            if let Err(why) = lib {
                let _ = writeln!(md, "- {name}: not measured: {why}.");
            }
        }
        for (name, why) in &self.missing {
            let _ = writeln!(md, "- {name}: not loaded: {why}.");
        }
        let _ = writeln!(md);
        match &self.abi {
            Some(Ok((alloc, free))) => {
                let _ = writeln!(
                    md,
                    "Instructions a C caller runs on a magazine hit, counted in `objdump -d` of \
                     `libslabscope.so` from each entry to its `ret` (the longest path that calls \
                     nothing): `kmem_cache_alloc` {}, `kmem_cache_free` {}, {:.1} per operation; \
                     the Rust path, inlined into its caller's loop, runs {} (section 6). The \
                     difference is the call boundary: the calls and returns, the argument checks, \
                     and the cache's fast-path fields loaded on every call.\n",
                    alloc.instructions,
                    free.instructions,
                    (alloc.instructions + free.instructions) as f64 / 2.0,
                    rust_per_op.map_or("— (not counted in this run)".to_string(), |x| format!(
                        "{x:.1}"
                    ))
                );
                for (name, p) in [("kmem_cache_alloc", alloc), ("kmem_cache_free", free)] {
                    let _ = writeln!(
                        md,
                        "<details><summary>{name}'s hit path</summary>\n\n```text"
                    );
                    for l in &p.listing {
                        let _ = writeln!(md, "{l}");
                    }
                    let _ = writeln!(md, "```\n\n</details>\n");
                }
            }
            Some(Err(e)) => {
                let _ = writeln!(md, "The C ABI's hit paths were not counted: {e}.\n");
            }
            None => {}
        }
        match &self.malloc_abi {
            Some(Ok((malloc, free))) => {
                let _ = writeln!(
                    md,
                    "Instructions of a magazine hit through `libslabscope_malloc.so`, counted the \
                     same way (every path from the entry to a `ret` that calls nothing; each miss \
                     jumps to its slow path): `malloc` {} (a size up to 264 bytes) to {} (above \
                     2056, the class from the size's bits), `free` {} to {} (the longer when the \
                     slab lies in another GiB than the block, so its page-map byte is in another \
                     leaf).\n",
                    malloc.shortest.instructions,
                    malloc.longest.instructions,
                    free.shortest.instructions,
                    free.longest.instructions,
                );
                for (name, p) in [("malloc", &malloc.shortest), ("free", &free.shortest)] {
                    let _ = writeln!(
                        md,
                        "<details><summary>{name}'s shortest hit path</summary>\n\n```text"
                    );
                    for l in &p.listing {
                        let _ = writeln!(md, "{l}");
                    }
                    let _ = writeln!(md, "```\n\n</details>\n");
                }
            }
            Some(Err(e)) => {
                let _ = writeln!(
                    md,
                    "The malloc library's hit paths were not counted: {e}.\n"
                );
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harness_output_parses_and_rejects_garbage() {
        let (s, m) = parse(
            "missing tcmalloc dlopen: libtcmalloc_minimal.so.4: cannot open shared object file\n\
             sample glibc 3.5\nsample slabscope 1.25\nsample glibc 4.5\n",
        )
        .expect("well-formed output");
        assert_eq!(s["glibc"], vec![3.5, 4.5]);
        assert_eq!(s["slabscope"], vec![1.25]);
        assert!(m["tcmalloc"].contains("cannot open"), "{m:?}");
        assert!(
            parse("sample glibc fast\n").is_err(),
            "a sample must be a number"
        );
        assert!(parse("hello\n").is_err(), "unknown lines are errors");
    }

    #[test]
    fn ratios_are_against_the_fastest_peer_only() {
        let s = |median| Summary {
            min: median,
            median,
            n: 1,
        };
        let row = CRow {
            size: 64,
            max_size: 64,
            live: 1,
            cells: BTreeMap::from([
                (CACHE.to_string(), s(1.0)),
                (MALLOC.to_string(), s(0.5)),
                ("glibc".to_string(), s(4.0)),
                ("mimalloc".to_string(), s(2.0)),
            ]),
        };
        assert_eq!(
            row.best_peer(),
            Some(("mimalloc", 2.0)),
            "slabscope is no peer"
        );
        assert_eq!(row.ratio(CACHE), Some(0.5));
        assert_eq!(row.ratio(MALLOC), Some(0.25));
        assert_eq!(row.ratio("tcmalloc"), None, "no cell, no ratio");
    }

    /// The harness compiles and measures glibc's malloc through dlopen.
    #[test]
    fn harness_runs_glibc() {
        assert!(
            Command::new("gcc").arg("--version").output().is_ok(),
            "gcc is not installed: run `cargo xtask setup`"
        );
        let dir = std::env::temp_dir();
        let bin = compile(&dir).expect("the harness compiles");
        let references = compile_references(&dir);
        for (name, lib) in &references {
            assert!(lib.is_ok(), "the reference {name} compiles: {lib:?}");
        }
        let libs = Libraries {
            slabscope: Err("not built for this test".into()),
            malloc: Err("not built for this test".into()),
            references: references.clone(),
        };
        let c = run(&bin, libs, 0, 2, 100_000);
        let _ = std::fs::remove_file(&bin);
        remove_references(&references);
        assert!(c.failed.is_none(), "{:?}", c.failed);
        assert_eq!(c.rows.len(), SHAPES.len());
        for r in &c.rows {
            let mixed = r.max_size > r.size;
            let runs = |name: &str| !mixed || runs_mixed(name);
            for name in REFERENCES {
                assert_eq!(
                    r.cells.contains_key(name),
                    runs(name),
                    "the reference {name} runs random sizes only if it keeps blocks by class: {}",
                    r.label()
                );
            }
            let measured =
                std::iter::once("glibc").chain(REFERENCES.into_iter().filter(|n| runs(n)));
            for name in measured {
                let g = r
                    .cells
                    .get(name)
                    .unwrap_or_else(|| panic!("{name} is measured on {}", r.label()));
                assert_eq!(g.n, 2, "one sample per run");
                assert!(g.median > 0.0 && g.median < 10_000.0, "{g:?}");
            }
            let best = r.best_peer().map(|(p, _)| p);
            assert!(
                best.is_some_and(|b| !REFERENCES.contains(&b)),
                "a reference is no peer: {best:?}"
            );
        }
        let mut md = String::new();
        c.markdown(&mut md, |_, _| Some(0.5), Some(18.0));
        assert!(md.contains("| 64 B, 1000 live |"), "{md}");
        assert!(md.contains("| 4 KiB, 1000 live |"), "{md}");
        assert!(md.contains("| random 16 B–256 B, 1000 live |"), "{md}");
        assert!(
            md.contains("slabscope: not measured: not built for this test"),
            "{md}"
        );
    }
}
