//! `cargo xtask hot-text`: regenerates `malloc/hot-text.ld`, the linker
//! script that gathers the functions the malloc library runs into one
//! output section at the start of its code.
//!
//! Why: a program maps the library's code from the page cache, and a
//! fault maps a whole window around the page it touched (fault-around,
//! 64 KiB, or the page cache's folio). The functions a program runs on
//! the library (its start, `malloc` and `free`, std's threads and TLS)
//! lie all over the 360 KiB of code as the linker puts them, so every
//! window of it ended up resident, in every process. Gathered, they take
//! about 96 KiB (bench/ANALYSIS.md, "The library's resident code", has
//! the numbers).
//!
//! How: the release library is built, every function in it gets a uprobe
//! (bpftrace), the workloads run on it (`workloads/`: queue, larson,
//! python3 on heap.py, sqlite3 on sqlite.sql, redis-server under
//! redis.sh, and a start and exit), and each function that ran, and each
//! entry point, becomes a pattern of the script: its section's
//! name with the symbol's hash left out (`17h*`, and `Cs*_` for a crate's
//! hash in v0 names), so that the script outlives the hashes, which
//! change with the package's version and the toolchain. Functions are
//! listed by how many processes ran them, then by how often they ran.
//! Needs root and bpftrace (`cargo xtask setup`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::run::{self, header, note};

/// Where the script lives, from the workspace root.
pub const SCRIPT: &str = "malloc/hot-text.ld";

/// The functions the malloc library exports (`malloc/src/lib.rs`).
const ENTRY_POINTS: [&str; 12] = [
    "malloc",
    "free",
    "calloc",
    "realloc",
    "reallocarray",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "malloc_usable_size",
    "malloc_trim",
];

/// Keys of the (process, function) map: a map that fills drops the
/// counts of the workloads that run last.
const MAP_KEYS: usize = 1 << 16;

/// Regenerates [`SCRIPT`].
pub fn run() -> Result<()> {
    if !run::is_root() {
        bail!(
            "tracing the library's functions needs root (uprobes): run `sudo cargo xtask hot-text`"
        );
    }
    for tool in ["bpftrace", "nm", "gcc", "python3", "sqlite3"] {
        if !run::on_path(tool) {
            bail!("{tool} is not installed: run `cargo xtask setup`");
        }
    }
    header("building the malloc library (release)");
    run::run(run::cargo().args(["build", "--release", "-p", "slabscope-malloc"]))?;
    let dir = std::env::temp_dir().join(format!("slabscope-hot-text-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = trace_and_write(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn trace_and_write(dir: &Path) -> Result<()> {
    // A copy, so that a build during the trace cannot change the file the
    // uprobes are planted in.
    let lib = dir.join("libslabscope_malloc.so");
    let built = run::target_dir().join("release/libslabscope_malloc.so");
    std::fs::copy(&built, &lib).with_context(|| format!("copying {}", built.display()))?;
    let functions = functions(&lib)?;
    note(format!(
        "{} functions in {}",
        functions.len(),
        built.display()
    ));

    let root = run::workspace_root();
    let w = root.join("workloads");
    let mut script = String::from("set -e\n");
    let done = dir.join("workloads.done");
    let lib_s = lib.display().to_string();
    for name in ["queue", "larson"] {
        let bin = dir.join(name);
        run::run(
            Command::new("gcc")
                .args(["-O2", "-pthread", "-o"])
                .arg(&bin)
                .arg(w.join(format!("{name}.c"))),
        )?;
        // Each a few seconds under the uprobes, long enough for the
        // statistics thread's turns (`stats_interval_ms`, 1 s).
        let args = if name == "queue" {
            "1000000 100"
        } else {
            "2 10 20000"
        };
        writeln!(
            script,
            "LD_PRELOAD={lib_s} {} {args} >/dev/null",
            bin.display()
        )?;
    }
    writeln!(
        script,
        "LD_PRELOAD={lib_s} PYTHONMALLOC=malloc python3 {} 1 >/dev/null",
        w.join("heap.py").display()
    )?;
    writeln!(
        script,
        "LD_PRELOAD={lib_s} sqlite3 :memory: < {} >/dev/null",
        w.join("sqlite.sql").display()
    )?;
    writeln!(script, "LD_PRELOAD={lib_s} python3 -c pass")?;
    if run::on_path("redis-server") {
        writeln!(
            script,
            "SERVER_PRELOAD={lib_s} sh {} 20000 >/dev/null",
            w.join("redis.sh").display()
        )?;
    } else {
        note("redis-server is not installed: traced without it (`cargo xtask setup` installs it)");
    }
    writeln!(script, "touch {}", done.display())?;
    let sh = dir.join("workloads.sh");
    std::fs::write(&sh, script)?;

    let mut bt = String::new();
    for (i, f) in functions.iter().enumerate() {
        let sep = if i == 0 { "" } else { ",\n" };
        write!(bt, "{sep}uprobe:{lib_s}:\"{f}\"")?;
    }
    bt.push_str(" { @[pid, probe] = count(); }\n");
    let bt_file = dir.join("functions.bt");
    std::fs::write(&bt_file, bt)?;

    header("running the workloads with a uprobe on every function (a minute or two)");
    let n = (functions.len() + 64).to_string();
    let out = Command::new("bpftrace")
        .env("BPFTRACE_MAX_PROBES", &n)
        .env("BPFTRACE_MAX_BPF_PROGS", &n)
        .env("BPFTRACE_MAP_KEYS_MAX", MAP_KEYS.to_string())
        .arg(&bt_file)
        .arg("-c")
        .arg(format!("/bin/sh {}", sh.display()))
        .output()
        .context("running bpftrace")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "bpftrace failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if !done.exists() {
        bail!(
            "a workload failed under the trace; its and bpftrace's messages: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let counts = parse_counts(&text);
    if counts.len() >= MAP_KEYS {
        bail!(
            "bpftrace's map of (process, function) filled up: raise MAP_KEYS in {}",
            file!()
        );
    }
    if counts.len() < 20 {
        bail!(
            "bpftrace counted only {} functions: the workloads did not run on the library?\n{text}",
            counts.len()
        );
    }
    // Per pattern: the processes that ran it, and how often it ran.
    let mut patterns: BTreeMap<String, (BTreeSet<u32>, u64)> = BTreeMap::new();
    for (pid, sym, c) in counts {
        let e = patterns.entry(pattern(&sym)).or_default();
        e.0.insert(pid);
        e.1 += c;
    }
    // Every entry point of the library, whether the workloads called it or
    // not: a program's first call of one would fault a page of its own.
    for f in ENTRY_POINTS {
        patterns.entry(pattern(f)).or_default();
    }
    // What every process runs first (its start, `malloc` and `free`), then
    // what fewer processes run, each group by how often it ran: the code
    // a program runs then lies in as few pages as the workloads allow.
    let mut order: Vec<(String, usize, u64)> = patterns
        .into_iter()
        .map(|(p, (pids, n))| (p, pids.len(), n))
        .collect();
    order.sort_by(|a, b| (b.1, b.2).cmp(&(a.1, a.2)).then_with(|| a.0.cmp(&b.0)));
    let path = root.join(SCRIPT);
    std::fs::write(&path, script_text(&order))
        .with_context(|| format!("writing {}", path.display()))?;
    note(format!("{} patterns written to {SCRIPT}", order.len()));
    Ok(())
}

/// The library's functions: `nm`'s text symbols of non-zero size.
fn functions(lib: &Path) -> Result<Vec<String>> {
    let out = Command::new("nm")
        .args(["-S", "--defined-only"])
        .arg(lib)
        .output()
        .context("running nm")?;
    if !out.status.success() {
        bail!(
            "nm {}: {}",
            lib.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let sized = f.len() == 4 && u64::from_str_radix(f[1], 16).is_ok_and(|s| s > 0);
            (sized && matches!(f[2], "t" | "T")).then(|| f[3].to_string())
        })
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// `@[PID, uprobe:LIB:"SYM"]: N` lines of bpftrace's map print, as
/// (PID, SYM, N).
fn parse_counts(text: &str) -> Vec<(u32, String, u64)> {
    text.lines()
        .filter_map(|l| {
            let (pid, rest) = l.strip_prefix("@[")?.split_once(", uprobe:")?;
            let (probe, n) = rest.rsplit_once("]: ")?;
            let sym = probe.rsplit_once(':')?.1.trim_matches('"');
            Some((pid.parse().ok()?, sym.to_string(), n.trim().parse().ok()?))
        })
        .collect()
}

/// The section pattern of function `sym`: `.text*.SYM` (`.text.SYM`, or
/// `.text.unlikely.SYM` for a cold one) with the hashes that change
/// between builds left as `*`: a legacy name's trailing `17h<16 hex>E`,
/// and a v0 name's crate hashes (`Cs<base62>_`).
fn pattern(sym: &str) -> String {
    let mut s = sym.to_string();
    if let Some(i) = s.rfind("17h")
        && s.len() == i + 3 + 16 + 1
        && s.ends_with('E')
        && s[i + 3..i + 19].bytes().all(|b| b.is_ascii_hexdigit())
    {
        s.truncate(i + 3);
        s.push('*');
    }
    if s.starts_with("_R") {
        let mut out = String::new();
        let mut rest = s.as_str();
        while let Some(i) = rest.find("Cs") {
            out.push_str(&rest[..i + 2]);
            let after = &rest[i + 2..];
            match after.find('_') {
                Some(j) if j > 0 && after[..j].bytes().all(|b| b.is_ascii_alphanumeric()) => {
                    out.push_str("*_");
                    rest = &after[j + 1..];
                }
                _ => rest = after,
            }
        }
        out.push_str(rest);
        s = out;
    }
    format!(".text*.{s}")
}

/// std's paths of a wait: a lock another thread holds, a condition
/// variable, the clock a timed wait reads. A trace sees them only when
/// threads happen to wait, which the uprobes' slowness changes (a
/// producer and a consumer on one cache contend in `workloads/queue`'s
/// runs, and an allocation that waits for a grow reads the clock in
/// larson's), and the first wait would otherwise fault a page of its own.
const WAITS: [&str; 7] = [
    ".text*.*5Mutex14lock_contended",
    ".text*.*6RwLock14read_contended",
    ".text*.*6RwLock15write_contended",
    ".text*.*6RwLock22wake_writer_or_readers",
    ".text*.*7Condvar*",
    ".text*.*8Timespec3now",
    ".text*.*8Timespec12sub_timespec",
];

/// The comment that opens [`SCRIPT`].
const HEADER: &str = "/* Generated by `sudo cargo xtask hot-text`: do not edit by hand.
 *
 * The functions the malloc library ran under the workloads, those most
 * processes ran first, gathered at the start of its code with the rseq abort handlers,
 * the PLT and the C start-up code they call, so that a program keeps
 * those pages resident and not the whole library (xtask/src/hot_text.rs
 * says why and how). A function missing here still links, among the
 * others.
 */
";

fn script_text(order: &[(String, usize, u64)]) -> String {
    let mut t = String::from(HEADER);
    // First what every process runs and no uprobe sees: the C start-up
    // code (`frame_dummy`), `pthread_atfork` from libc_nonshared.a, the
    // PLT, and the rseq abort handlers.
    t.push_str(
        "SECTIONS {\n  .text.hot : {\n    *crtbegin*.o(.text .text.*)\n    \
         *libc_nonshared.a:*(.text .text.*)\n    *(.plt)\n    *(__rseq_failure)\n",
    );
    for p in WAITS {
        let _ = writeln!(t, "    *({p})");
    }
    for (p, _, _) in order {
        let _ = writeln!(t, "    *({p})");
    }
    t.push_str("  }\n} INSERT BEFORE .text;\n");
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_leave_out_the_hashes_and_nothing_else() {
        assert_eq!(pattern("malloc"), ".text*.malloc");
        assert_eq!(
            pattern("_ZN9slabscope4kmem5build17hc4d1bdc9b76eeca1E"),
            ".text*._ZN9slabscope4kmem5build17h*"
        );
        // Not a hash: kept whole.
        assert_eq!(pattern("_ZN3foo17hbarE"), ".text*._ZN3foo17hbarE");
        assert_eq!(
            pattern("_RNvNtNtCsjrHSEGnQ3l9_3std6thread9spawnhook15run_spawn_hooks"),
            ".text*._RNvNtNtCs*_3std6thread9spawnhook15run_spawn_hooks"
        );
    }

    #[test]
    fn bpftrace_counts_are_read_back() {
        let text = "Attaching 3 probes...\n\n@[41, uprobe:/tmp/x.so:\"_ZN1a1b17h0123456789abcdefE\"]: 7\n@[42, uprobe:/tmp/x.so:malloc]: 12\n";
        assert_eq!(
            parse_counts(text),
            [
                (41, "_ZN1a1b17h0123456789abcdefE".to_string(), 7),
                (42, "malloc".to_string(), 12)
            ]
        );
    }
}
