//! Instructions on slabscope's *native* magazine-hit path, counted in this
//! binary's own machine code.
//!
//! valgrind cannot run restartable sequences (workload 6 counts the locked
//! magazines there) and this kind of VM has no hardware counters, so the
//! count is static: [`hit_pair`] is workload 1's 1-live loop (allocate,
//! write one byte, free), and its hit path is the one loop in it that calls
//! nothing and never leaves the function. Every miss calls a slow path, and
//! the sequences' abort handlers live in another section, so those paths
//! are excluded by construction. [`harness_pair`] is the same loop with a
//! fixed buffer; the difference, halved, is slabscope's instructions per
//! operation, as workload 6 computes them under valgrind. The walk reads
//! `objdump -d` of this executable.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::contenders::Baseline;
use crate::slab::Slabscope;
use crate::workloads::one_live;

/// Workload 1's 1-live loop ([`one_live`]) on slabscope, out of line: the
/// body the count walks.
#[inline(never)]
pub fn hit_pair(c: &Slabscope, rounds: u64) {
    one_live(c, rounds);
}

/// [`hit_pair`] with an "allocator" that returns one fixed buffer.
#[inline(never)]
pub fn harness_pair(c: &Baseline, rounds: u64) {
    one_live(c, rounds);
}

/// The counted path of one function.
#[derive(Clone, Debug)]
pub struct HitLoop {
    /// Instructions in one turn of the call-free loop.
    pub instructions: usize,
    /// The loop, one `address: instruction` per line, in address order.
    pub listing: Vec<String>,
}

/// What [`count`] found.
#[derive(Clone, Debug)]
pub struct NativeCount {
    pub hit: HitLoop,
    pub harness: HitLoop,
}

impl NativeCount {
    /// slabscope's instructions per allocation or free.
    pub fn per_op(&self) -> f64 {
        (self.hit.instructions as f64 - self.harness.instructions as f64) / 2.0
    }
}

/// Runs both functions once (so the code is what ran) and counts their
/// hit paths in `exe`'s disassembly.
pub fn count(exe: &Path) -> Result<NativeCount> {
    let s = Slabscope::new(64)?;
    hit_pair(&s, std::hint::black_box(3));
    let b = Baseline::new(64);
    harness_pair(&b, std::hint::black_box(3));
    let out = Command::new("objdump")
        .args(["-d", "-C", "--no-show-raw-insn"])
        .arg(exe)
        .output()
        .context("running objdump (Debian package binutils)")?;
    if !out.status.success() {
        bail!(
            "objdump -d {} failed: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(NativeCount {
        hit: walk(&text, "slabscope_bench::native::hit_pair")?,
        harness: walk(&text, "slabscope_bench::native::harness_pair")?,
    })
}

/// One decoded instruction.
#[derive(Debug)]
struct Insn {
    addr: u64,
    mnemonic: String,
    text: String,
}

/// The instructions of `symbol` in objdump's output.
fn function(text: &str, symbol: &str) -> Result<Vec<Insn>> {
    let head = format!("<{symbol}>:");
    let mut lines = text.lines().skip_while(|l| !l.ends_with(&head));
    if lines.next().is_none() {
        bail!("no function {symbol} in the disassembly");
    }
    let mut v = Vec::new();
    for l in lines.take_while(|l| !l.trim().is_empty()) {
        let Some((a, rest)) = l.split_once(':') else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(a.trim(), 16) else {
            continue;
        };
        let text = rest.trim().to_string();
        let mnemonic = text.split_whitespace().next().unwrap_or("").to_string();
        v.push(Insn {
            addr,
            mnemonic,
            text,
        });
    }
    if v.is_empty() {
        bail!("function {symbol} has no instructions in the disassembly");
    }
    Ok(v)
}

/// The single call-free loop of `symbol`: the cycle of instructions that
/// the loop body runs when no operation misses.
fn walk(text: &str, symbol: &str) -> Result<HitLoop> {
    let insns = function(text, symbol)?;
    let index = |addr: u64| insns.iter().position(|i| i.addr == addr);
    let mut cycles: Vec<Vec<usize>> = Vec::new();
    // Depth-first over (instruction, path so far); an edge back into the
    // path closes a cycle. Calls, traps, returns and jumps out of the
    // function end a path.
    let mut stack = vec![(0usize, Vec::new())];
    let mut steps = 0usize;
    while let Some((i, mut path)) = stack.pop() {
        steps += 1;
        if steps > 100_000 {
            bail!("{symbol}: too many paths to walk");
        }
        if let Some(pos) = path.iter().position(|&p| p == i) {
            let mut c = path[pos..].to_vec();
            c.sort_unstable();
            if !cycles.contains(&c) {
                cycles.push(c);
            }
            continue;
        }
        path.push(i);
        let ins = &insns[i];
        let m = ins.mnemonic.as_str();
        if m.starts_with("ret") || m.starts_with("call") || m == "ud2" || m.starts_with("int3") {
            continue;
        }
        let target = || {
            ins.text
                .split_whitespace()
                .nth(1)
                .and_then(|t| u64::from_str_radix(t, 16).ok())
                .and_then(index)
        };
        if m == "jmp" {
            if let Some(t) = target() {
                stack.push((t, path));
            }
            continue;
        }
        if m.starts_with('j')
            && let Some(t) = target()
        {
            stack.push((t, path.clone()));
        }
        if i + 1 < insns.len() {
            stack.push((i + 1, path));
        }
    }
    match cycles.as_slice() {
        [one] => Ok(HitLoop {
            instructions: one.len(),
            listing: one
                .iter()
                .map(|&i| format!("{:x}: {}", insns[i].addr, insns[i].text))
                .collect(),
        }),
        [] => bail!("{symbol}: no loop without a call"),
        many => bail!(
            "{symbol}: {} loops without a call, not one: the hit path is ambiguous",
            many.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// objdump's shape: a loop whose hit path is four instructions, a miss
    /// that calls out and comes back, and a jump to another section.
    const TEXT: &str = "
0000000000001000 <other>:
    1000:\tret

0000000000002000 <f>:
    2000:\ttest   %rsi,%rsi
    2003:\tje     2030 <f+0x30>
    2005:\tmov    (%rdi),%rax
    2008:\ttest   %rax,%rax
    200b:\tje     2020 <f+0x20>
    200d:\tjae    9000 <_fini+0x10>
    2013:\tdec    %rsi
    2016:\tjne    2005 <f+0x5>
    2018:\tret
    2020:\tcall   *%r12
    2023:\tjmp    2013 <f+0x13>
    2030:\tret

";

    #[test]
    fn the_call_free_loop_is_found_and_counted() {
        let p = walk(TEXT, "f").unwrap();
        assert_eq!(p.instructions, 6, "{:?}", p.listing);
        assert_eq!(p.listing[0], "2005: mov    (%rdi),%rax");
    }

    #[test]
    fn no_loop_or_a_missing_function_is_an_error() {
        assert!(
            walk(TEXT, "other")
                .unwrap_err()
                .to_string()
                .contains("no loop")
        );
        assert!(
            walk(TEXT, "g")
                .unwrap_err()
                .to_string()
                .contains("no function g")
        );
    }
}
