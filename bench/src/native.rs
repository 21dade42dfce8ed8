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

/// `objdump -d` of `lib`, as text.
fn disassemble(lib: &Path) -> Result<String> {
    let out = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(lib)
        .output()
        .context("running objdump (Debian package binutils)")?;
    if !out.status.success() {
        bail!(
            "objdump -d {} failed: {}",
            lib.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The hit paths of `libslabscope.so`'s `kmem_cache_alloc` and
/// `kmem_cache_free`, counted in `objdump -d` of the library: what a C
/// caller runs per operation, where the Rust path inlines the same code
/// into the caller's loop (section 7 of the report).
pub fn c_abi(lib: &Path) -> Result<(HitLoop, HitLoop)> {
    let text = disassemble(lib)?;
    Ok((
        entry_paths(&text, "kmem_cache_alloc")?.1,
        entry_paths(&text, "kmem_cache_free")?.1,
    ))
}

/// The shortest and the longest call-free path of one exported function
/// (see [`entry_paths`]).
#[derive(Clone, Debug)]
pub struct EntryPaths {
    pub shortest: HitLoop,
    pub longest: HitLoop,
}

/// The hit paths of `libslabscope_malloc.so`'s `malloc` and `free`: every
/// path from the entry to a `ret` calls nothing, so each path is a hit;
/// `malloc`'s shortest is a small size's (the class from an add and a
/// shift), its longest a size whose class is computed from its bits, and
/// `free`'s differ in where the slab's page-map byte is read (from the
/// leaf of the block's, or a leaf of its own).
pub fn malloc_abi(lib: &Path) -> Result<(EntryPaths, EntryPaths)> {
    let text = disassemble(lib)?;
    let both = |symbol| {
        entry_paths(&text, symbol).map(|(shortest, longest)| EntryPaths { shortest, longest })
    };
    Ok((both("malloc")?, both("free")?))
}

/// The shortest and the longest paths from `symbol`'s entry to one of its
/// returns that call nothing and stay in the function: its hit paths, when
/// every miss calls a slow path, jumps to one (a tail call) or jumps to
/// another section (the restartable sequences' abort handlers). For
/// `kmem_cache_free`, whose early return (a NULL object) is shorter, the
/// longest is the hit. Counted up to and including the `ret`.
///
/// One kind of path that never runs is left out: a bit test of a register
/// zeroed on the path (`xor %edi,%edi` ... `bt %rax,%rdi`), which is how
/// the compiler reads a map word that does not exist; the branch after
/// it goes one way only.
fn entry_paths(text: &str, symbol: &str) -> Result<(HitLoop, HitLoop)> {
    let insns = function(text, symbol)?;
    let index = |addr: u64| insns.iter().position(|i| i.addr == addr);
    let mut longest: Option<Vec<usize>> = None;
    let mut shortest: Option<Vec<usize>> = None;
    // (instruction, path so far, registers known to be zero there)
    let mut stack = vec![(0usize, Vec::new(), Vec::<String>::new())];
    let mut steps = 0usize;
    while let Some((i, mut path, mut zero)) = stack.pop() {
        steps += 1;
        if steps > 100_000 {
            bail!("{symbol}: too many paths to walk");
        }
        if path.contains(&i) {
            continue;
        }
        path.push(i);
        let ins = &insns[i];
        let m = ins.mnemonic.as_str();
        if m.starts_with("ret") {
            if shortest.as_ref().is_none_or(|b| b.len() > path.len()) {
                shortest = Some(path.clone());
            }
            if longest.as_ref().is_none_or(|b| b.len() < path.len()) {
                longest = Some(path);
            }
            continue;
        }
        if m.starts_with("call") || m.starts_with("ud") || m.starts_with("int3") {
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
                stack.push((t, path, zero));
            }
            continue;
        }
        if m.starts_with('j') {
            // After `bt X, R` with R zero the carry is clear.
            let known = path
                .len()
                .checked_sub(2)
                .map(|p| &insns[path[p]])
                .filter(|prev| prev.mnemonic == "bt")
                .and_then(|prev| operands(&prev.text).last().map(|r| canonical(r)))
                .is_some_and(|r| zero.contains(&r));
            let (taken, fallthrough) = match m {
                "jae" | "jnb" | "jnc" if known => (true, false),
                "jb" | "jc" | "jnae" if known => (false, true),
                _ => (true, true),
            };
            if taken && let Some(t) = target() {
                stack.push((t, path.clone(), zero.clone()));
            }
            if fallthrough && i + 1 < insns.len() {
                stack.push((i + 1, path, zero));
            }
            continue;
        }
        let ops = operands(&ins.text);
        if let Some(dest) = ops.last().map(|d| canonical(d))
            && !matches!(m, "cmp" | "test" | "bt")
        {
            zero.retain(|r| *r != dest);
            if m == "xor" && ops.len() == 2 && canonical(&ops[0]) == dest && dest.starts_with('%') {
                zero.push(dest);
            }
        }
        if i + 1 < insns.len() {
            stack.push((i + 1, path, zero));
        }
    }
    let (Some(shortest), Some(longest)) = (shortest, longest) else {
        bail!("{symbol}: no path from its entry to a return that calls nothing");
    };
    let listing = |path: Vec<usize>| HitLoop {
        instructions: path.len(),
        listing: path
            .iter()
            .map(|&i| format!("{:x}: {}", insns[i].addr, insns[i].text))
            .collect(),
    };
    Ok((listing(shortest), listing(longest)))
}

/// The operands of an instruction in objdump's AT&T text, source first,
/// destination last (commas inside parentheses kept).
fn operands(text: &str) -> Vec<String> {
    let Some((_, rest)) = text.split_once(char::is_whitespace) else {
        return Vec::new();
    };
    let rest = rest.split('#').next().unwrap_or("").trim();
    let mut v = Vec::new();
    let (mut depth, mut cur) = (0, String::new());
    for c in rest.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                v.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        v.push(cur);
    }
    v.into_iter().map(|o| o.trim().to_string()).collect()
}

/// A general register's 64-bit name (`%edi`, `%di`, `%dil` -> `%rdi`;
/// `%r8d` -> `%r8`); anything else as it is.
fn canonical(op: &str) -> String {
    let Some(r) = op.strip_prefix('%') else {
        return op.to_string();
    };
    if let Some(n) = r.strip_prefix('r')
        && let Some(num) = n.trim_end_matches(['d', 'w', 'b']).parse::<u8>().ok()
    {
        return format!("%r{num}");
    }
    let base = match r {
        "rax" | "eax" | "ax" | "al" => "ax",
        "rbx" | "ebx" | "bx" | "bl" => "bx",
        "rcx" | "ecx" | "cx" | "cl" => "cx",
        "rdx" | "edx" | "dx" | "dl" => "dx",
        "rsi" | "esi" | "si" | "sil" => "si",
        "rdi" | "edi" | "di" | "dil" => "di",
        "rbp" | "ebp" | "bp" | "bpl" => "bp",
        "rsp" | "esp" | "sp" | "spl" => "sp",
        _ => return op.to_string(),
    };
    format!("%r{base}")
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

    /// kmem_cache_free's shape: two early returns for NULL arguments, a
    /// miss that calls out, an abort handler in another section, and the
    /// hit path, which jumps to the shared epilogue.
    const ENTRY: &str = "
0000000000003000 <free>:
    3000:\tpush   %rax
    3001:\ttest   %rdi,%rdi
    3004:\tje     3020 <free+0x20>
    3006:\ttest   %rsi,%rsi
    3009:\tje     3020 <free+0x20>
    300b:\tcmp    0x52(%rdi),%ax
    300f:\tjne    3018 <free+0x18>
    3011:\tjae    9000 <_fini+0x10>
    3017:\tjmp    3020 <free+0x20>
    3018:\tcall   *0x1000(%rip)
    301e:\tjmp    3020 <free+0x20>
    3020:\tpop    %rax
    3021:\tret

";

    #[test]
    fn the_longest_call_free_entry_path_is_the_hit_path() {
        let (short, p) = entry_paths(ENTRY, "free").unwrap();
        assert_eq!(
            short.instructions, 5,
            "the NULL return: {:?}",
            short.listing
        );
        assert_eq!(p.instructions, 11, "{:?}", p.listing);
        assert_eq!(p.listing[8], "3017: jmp    3020 <free+0x20>");
        assert_eq!(p.listing[10], "3021: ret");
        assert!(
            entry_paths(TEXT, "other")
                .is_ok_and(|(s, l)| s.instructions == 1 && l.instructions == 1),
            "a bare ret is a path of one"
        );
        let no_ret = "\n0000000000004000 <g>:\n    4000:\tcall   *%rax\n    4002:\tret\n\n";
        assert!(entry_paths(no_ret, "g").is_err(), "every path calls");
    }

    /// malloc's shape: no frame, every miss a jump to another function,
    /// two ways to the class (the longer for larger sizes), one `ret`.
    const MALLOC: &str = "
0000000000005000 <malloc>:
    5000:\tcmp    $0x20000,%rdi
    5007:\tja     4000 <miss>
    500d:\tcmp    $0x109,%rdi
    5014:\tjae    5020 <malloc+0x20>
    5016:\tshr    $0x4,%rdi
    501a:\tjmp    5028 <malloc+0x28>
    5020:\tmovzbl (%rdi),%edi
    5024:\tshr    $0x3,%rdi
    5026:\tadd    $0x1,%rdi
    5028:\tmov    (%rdi),%rax
    502b:\ttest   %rax,%rax
    502e:\tje     4000 <miss>
    5034:\tret

";

    /// free's shape: a bitmap word that is zero when the address is out
    /// of range, tested like a loaded one; that test never passes.
    const ZEROED: &str = "
0000000000006000 <free>:
    6000:\tshr    $0x2f,%rax
    6004:\tjne    6010 <free+0x10>
    6006:\tmov    (%rcx,%rax,8),%rdi
    600a:\tnop
    600b:\tnop
    600c:\tjmp    6014 <free+0x14>
    6010:\txor    %edi,%edi
    6012:\tmov    %edx,%eax
    6014:\tbt     %rax,%rdi
    6018:\tjae    4000 <miss>
    601e:\tret

";

    #[test]
    fn a_bit_test_of_a_zeroed_register_never_reaches_the_hit() {
        let (short, long) = entry_paths(ZEROED, "free").unwrap();
        assert_eq!(short.instructions, 9, "{:?}", short.listing);
        assert_eq!(long.instructions, 9, "{:?}", long.listing);
        assert_eq!(short.listing[2], "6006: mov    (%rcx,%rax,8),%rdi");
        // The same code with the register loaded instead: both paths count.
        let loaded = ZEROED.replace("xor    %edi,%edi", "mov    (%rsi),%rdi");
        let (short, _) = entry_paths(&loaded, "free").unwrap();
        assert_eq!(short.instructions, 7, "{:?}", short.listing);
        assert_eq!(canonical("%r8d"), "%r8");
        assert_eq!(canonical("%dil"), "%rdi");
        assert_eq!(operands("bt     %rax,%rdi"), ["%rax", "%rdi"]);
        assert_eq!(
            operands("mov    0x40(%rdx,%r8,8),%rsi"),
            ["0x40(%rdx,%r8,8)", "%rsi"]
        );
    }

    #[test]
    fn tail_calls_leave_the_hits_shortest_and_longest() {
        let (short, long) = entry_paths(MALLOC, "malloc").unwrap();
        assert_eq!(short.instructions, 10, "{:?}", short.listing);
        assert_eq!(short.listing[4], "5016: shr    $0x4,%rdi");
        assert_eq!(long.instructions, 11, "{:?}", long.listing);
        assert_eq!(long.listing[4], "5020: movzbl (%rdi),%edi");
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
