//! Where slabscope's instructions go: one callgrind run of the churn loop,
//! summed per function by `callgrind_annotate`, divided by the operations.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Instructions per operation by function, for one configuration.
#[derive(Clone, Debug)]
pub struct Profile {
    pub size: usize,
    pub live: usize,
    pub ops: u64,
    /// (function, instructions per op), largest first.
    pub functions: Vec<(String, f64)>,
}

/// Run `exe hit --alloc slabscope` under callgrind and annotate it.
pub fn run(exe: &Path, size: usize, live: usize, rounds: u64, scratch: &Path) -> Result<Profile> {
    let out_file = scratch.join(format!("callgrind.slabscope.{size}.{live}.out"));
    let out = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(exe)
        .args(["hit", "--alloc", "slabscope", "--size", &size.to_string()])
        .args(["--live", &live.to_string(), "--rounds", &rounds.to_string()])
        .output()
        .context("running valgrind --tool=callgrind")?;
    if !out.status.success() {
        bail!(
            "callgrind failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let ann = Command::new("callgrind_annotate")
        .arg("--threshold=99.5")
        .arg(&out_file)
        .output()
        .context("running callgrind_annotate (Debian package valgrind)")?;
    let _ = std::fs::remove_file(&out_file);
    if !ann.status.success() {
        bail!(
            "callgrind_annotate failed: {}",
            String::from_utf8_lossy(&ann.stderr).trim()
        );
    }
    let ops = (rounds + 3) * live as u64 * 2;
    // callgrind_annotate lists a function once per source file its inlined
    // code came from; sum those.
    let mut by_fn: Vec<(String, u64)> = Vec::new();
    for (f, ir) in parse_annotate(&String::from_utf8_lossy(&ann.stdout)) {
        match by_fn.iter_mut().find(|(g, _)| *g == f) {
            Some((_, total)) => *total += ir,
            None => by_fn.push((f, ir)),
        }
    }
    by_fn.sort_by_key(|(_, ir)| std::cmp::Reverse(*ir));
    let functions = by_fn
        .into_iter()
        .map(|(f, ir)| (f, ir as f64 / ops as f64))
        .filter(|(_, per)| *per >= 0.5)
        .take(12)
        .collect();
    Ok(Profile {
        size,
        live,
        ops,
        functions,
    })
}

/// `(function, Ir)` rows of callgrind_annotate's per-function section.
pub fn parse_annotate(text: &str) -> Vec<(String, u64)> {
    let mut rows = Vec::new();
    let mut in_functions = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("Ir") && t.contains("file:function") {
            in_functions = true;
            continue;
        }
        if !in_functions {
            continue;
        }
        if t.is_empty() || t.starts_with("--") {
            // The section ends at the first blank or rule after its rows;
            // auto-annotated source (whose lines also start with counts)
            // follows.
            if rows.is_empty() {
                continue;
            }
            break;
        }
        let Some((count, rest)) = t.split_once(' ') else {
            continue;
        };
        let Ok(ir) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        let rest = rest.trim_start();
        let rest = match rest.strip_prefix('(') {
            Some(r) => r.split_once(')').map_or(r, |(_, after)| after).trim_start(),
            None => rest,
        };
        let func = rest.rsplit_once(" [").map_or(rest, |(f, _)| f).trim();
        let func = func.split_once(':').map_or(func, |(_, f)| f);
        rows.push((func.to_string(), ir));
    }
    rows
}

/// Functions that run only because valgrind cannot register glibc's rseq
/// area: natively slabscope reads the CPU id with one load from it.
pub fn valgrind_only(function: &str) -> bool {
    function.contains("sched_getcpu") || function.contains("cpu_slow")
}

impl Profile {
    /// Instructions per op spent in [`valgrind_only`] functions.
    pub fn valgrind_only_per_op(&self) -> f64 {
        self.functions
            .iter()
            .filter(|(f, _)| valgrind_only(f))
            .map(|(_, per)| per)
            .sum()
    }

    pub fn markdown(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "### Where slabscope's instructions go ({} B, {} live, LIFO)\n\n\
             callgrind, self instructions per operation by function, inlined code counted in the \
             function it was inlined into (start-up included, \
             spread over {} operations):\n\n| function | instructions/op |\n|---|---:|",
            self.size, self.live, self.ops
        );
        for (f, per) in &self.functions {
            let mark = if valgrind_only(f) {
                " (valgrind only, see below)"
            } else {
                ""
            };
            let _ = writeln!(md, "| `{}`{mark} | {per:.2} |", f.replace('|', "\\|"));
        }
        let _ = writeln!(
            md,
            "\nvalgrind does not support the `rseq` system call, so glibc registers no rseq \
             area and slabscope runs its **locked** magazines here, not the restartable \
             sequences it uses natively. Functions marked \"valgrind only\" run because of \
             that: slabscope falls back to `sched_getcpu()` for the CPU id ({:.1} \
             instructions/op here).\n",
            self.valgrind_only_per_op()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_function_rows() {
        let text = "\
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
20,000 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                  file:function
--------------------------------------------------------------------------------
12,000 (60.00%)  src/magazine.rs:slabscope::magazine::pop [/bin/x]
 8,000 (40.00%)  ???:libc_free [/lib/libc.so.6]

--------------------------------------------------------------------------------
-- Auto-annotated source: src/magazine.rs
--------------------------------------------------------------------------------
 2,000 ( 1.00%)  => src/cache.rs:slabscope::cache::release (200,003x)
     .           }
";
        let rows = parse_annotate(text);
        assert_eq!(
            rows,
            vec![
                ("slabscope::magazine::pop".to_string(), 12_000),
                ("libc_free".to_string(), 8_000)
            ]
        );
    }
}
