//! Restartable sequences: the lock-free form of the per-CPU magazine fast
//! path (x86_64 Linux with glibc 2.35 or later).
//!
//! The seed makes a magazine private to its CPU with `local_irq_save()`.
//! The userspace equivalent is a restartable sequence (`rseq(2)`): a short
//! run of instructions that reads the CPU id the kernel keeps in the
//! thread's rseq area, works on that CPU's magazine, and ends in a single
//! *commit* store to the magazine's fill count. If the thread is preempted,
//! migrated or signalled before the commit, the kernel moves it to an abort
//! handler instead of resuming it, so the magazine is never seen half
//! updated and never touched from the wrong CPU. The fast path then costs a
//! few plain loads and stores — no atomic read-modify-write, no lock.
//!
//! Each operation below is one such sequence. They only *read* the magazine
//! before the commit (pushes also write the free slot above the fill count,
//! which no one reads until the commit makes it part of the stack), so an
//! abort leaves nothing to undo.
//!
//! A pop is nine instructions: publish the sequence descriptor (two), find
//! the CPU's magazine (two: load the CPU id, load the magazine's address
//! from the cache's table — one entry per possible CPU, so no bound is
//! checked), load the fill count, decrement it and branch on the borrow
//! (empty), load the object, commit. A push is ten: load the fill count,
//! compare it with `cap` (which rejects a full magazine and a closed one
//! at once) and branch, store to the slot, increment, commit. Nothing else
//! is written: no timestamp, no "active" mark (the background reaper
//! compares fill counts instead).
//!
//! # Exclusive access from other CPUs
//!
//! Reaps, destroy and validation must work on every CPU's magazine. They
//! take the magazine's lock byte and *close* the magazine: its entry in
//! the table points at a guard magazine, which is empty and, with a `cap`
//! of 0, full, so every sequence fails on it; the magazine's own `cap`
//! goes to 0 too, for the slow paths. Then they issue
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ)`: when it returns,
//! every sequence that had read the old entry has either committed or been
//! aborted, and every later one finds the guard. Unlocking restores both.
//! This is the pattern of the kernel's rseq selftests and of tcmalloc's
//! per-CPU caches, which also fold the "stopped" state into what the fast
//! path reads anyway. It costs an interprocessor interrupt, which is why
//! only those slow paths use it.
//!
//! # When it is not used
//!
//! [`available`] is false — and magazines fall back to the one-byte lock of
//! [`crate::magazine`] — when glibc registered no rseq area (glibc before
//! 2.35, `GLIBC_TUNABLES=glibc.pthread.rseq=0`, valgrind, which does not
//! implement `rseq`), when the kernel lacks the membarrier command (before
//! Linux 5.10), on other architectures, and under Miri and loom. A thread
//! whose own rseq registration failed reads a negative CPU id, which every
//! sequence treats as "unavailable", so it is still correct, just slower.
//!
//! Every sequence reports failure (null or 0) instead of retrying on abort:
//! the caller takes its slow path, which looks at the magazine to tell an
//! empty or full one from a closed one or an abort, and is always correct.

#[cfg(rseq_native)]
use super::Magazine;

/// `RSEQ_SIG` for x86: the four bytes the kernel checks right before an
/// abort handler.
#[cfg(rseq_native)]
const RSEQ_SIG: u32 = 0x5305_3053;

const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ: libc::c_int = 1 << 7;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ: libc::c_int = 1 << 8;

fn membarrier(cmd: libc::c_int) -> Result<libc::c_long, std::io::Error> {
    // SAFETY: membarrier takes integers only and has no memory effects on
    // this process beyond ordering.
    let r = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            cmd,
            0 as libc::c_uint,
            0 as libc::c_int,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The rseq area's offset from the thread pointer, when restartable
/// sequences can serve the magazines in this process (see the module docs).
/// Decided once.
pub(crate) fn available() -> Option<isize> {
    static AVAILABLE: std::sync::OnceLock<Option<isize>> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if !cfg!(rseq_native) {
            return None;
        }
        let off = crate::os::rseq_area_offset()?;
        // The sequences index magazines by CPU id unchecked (see pop).
        crate::os::possible_cpus_exact()?;
        let cmds = membarrier(MEMBARRIER_CMD_QUERY).ok()?;
        let need =
            MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ;
        if cmds & libc::c_long::from(need) != libc::c_long::from(need) {
            return None;
        }
        membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ).ok()?;
        Some(off)
    })
}

/// The CPU id in this thread's rseq area at `fs:off` (its `cpu_id`): a
/// hint, stale as soon as it is read, for choosing among objects, never
/// for touching per-CPU state (the sequences read it again inside
/// themselves). A thread without registration reads -1 or -2, here
/// `u32::MAX` or `u32::MAX - 1`; `u32::MAX` where sequences are not
/// built.
#[inline(always)]
pub(crate) fn cpu_id(off: isize) -> u32 {
    #[cfg(rseq_native)]
    {
        let r: u32;
        // SAFETY: `off` is [`available`]'s offset (callers pass the one
        // their sequences use): this thread's rseq area, inside its thread
        // control block, readable for the thread's life; the load has no
        // other effect.
        unsafe {
            std::arch::asm!(
                "mov {r:e}, dword ptr fs:[{off} + 4]",
                r = out(reg) r,
                off = in(reg) off,
                options(nostack, readonly, preserves_flags),
            );
        }
        r
    }
    #[cfg(not(rseq_native))]
    {
        let _ = off;
        u32::MAX
    }
}

/// Waits until no restartable sequence of this process that started before
/// the call is still running uncommitted: each has committed or will abort.
/// Callers hold the lock byte of the magazines they are about to touch.
///
/// # Panics
/// Never in practice; if the kernel refuses the command after accepting its
/// registration, the magazines cannot be flushed safely and the process
/// aborts with the reason rather than risk handing one object out twice.
pub(crate) fn fence() {
    match membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ) {
        Ok(_) => return,
        // A child of fork() may not inherit the registration: register again.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
        Err(e) => fence_failed(e),
    }
    if let Err(e) = membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ)
        .and_then(|_| membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ))
    {
        fence_failed(e);
    }
}

#[cold]
#[inline(never)]
fn fence_failed(e: std::io::Error) -> ! {
    eprintln!(
        "slabscope: membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ) failed ({e}); the per-CPU \
         magazines cannot be flushed safely. Set SLABSCOPE_MAGAZINE_RSEQ=0 to use locked magazines."
    );
    std::process::abort()
}

/// One restartable sequence on the current CPU's magazine of the table at
/// `$base`, through the rseq area at `fs:$off`. `$body` runs with `{c}`
/// pointing at the magazine and `{a}` free to use, and must end with the
/// commit store; it leaves through `84b` when it cannot complete. `$fail`
/// is the instruction that loads the failure result; the abort handler
/// (label 84) runs it and leaves. `$operands` are the body's own.
///
/// The magazine is found in the table at `{base}` without a bound check:
/// the CPU id is below the possible CPUs the table was made for (the
/// kernel's guarantee; [`available`] insists on an exact count), or
/// negative — -1 or -2 for a thread without rseq registration — which,
/// sign-extended, reads one of the two entries below CPU 0's: the guard
/// magazines, whose `cap` is 0.
#[cfg(rseq_native)]
macro_rules! rseq_asm {
    ($base:expr, $off:expr, $fail:literal, [$($body:literal),* $(,)?], $($operands:tt)*) => {
        std::arch::asm!(
            // The abort handler: the signature, then the handler itself.
            ".pushsection __rseq_failure, \"ax\"",
            ".byte 0x0f, 0xb9, 0x3d",
            ".long {sig}",
            "84:",
            $fail,
            "jmp 82f",
            ".popsection",
            // struct rseq_cs { u32 version, flags; u64 start_ip,
            // post_commit_offset, abort_ip; }, 32-byte aligned.
            ".pushsection __rseq_cs, \"aw\"",
            ".balign 32",
            "80:",
            ".long 0, 0",
            ".quad 81f, 82f - 81f, 84b",
            ".popsection",
            // rseq->rseq_cs = &descriptor: the kernel now watches [81, 82).
            "lea {c}, [rip + 80b]",
            "mov qword ptr fs:[{off} + 8], {c}",
            "81:",
            // c = table[rseq->cpu_id].
            "movsxd {c}, dword ptr fs:[{off} + 4]",
            "mov {c}, qword ptr [{base} + {c} * 8]",
            $($body,)*
            "82:",
            sig = const RSEQ_SIG,
            avail = const Magazine::AVAIL_OFFSET,
            slots = const Magazine::SLOTS_OFFSET,
            off = in(reg) $off,
            base = in(reg) $base,
            c = out(reg) _,
            a = out(reg) _,
            $($operands)*
            options(nostack),
        )
    };
}

/// Pops the top object of the current CPU's magazine; null when it is
/// empty, closed (locked by another CPU's flush, or a guard) or the
/// sequence was aborted.
///
/// # Safety
/// `base` is CPU 0's magazine of a live [`crate::magazine::Mags`]; `off` is
/// [`available`]'s offset.
#[inline(always)]
pub(crate) unsafe fn pop(base: usize, off: isize) -> *mut u8 {
    #[cfg(rseq_native)]
    {
        let r: *mut u8;
        // SAFETY: the sequence reads and writes only the magazine its CPU's
        // table entry names (its own, or an empty guard when unregistered
        // or closed) and its slots, which live as long as the cache
        // (caller); the rseq area at fs:off is this thread's (available()).
        // The commit store is the last instruction before the post-commit
        // label; an empty magazine fails the borrow test.
        unsafe {
            rseq_asm!(
                base,
                off,
                "xor {r:e}, {r:e}",
                [
                    "mov {a:e}, dword ptr [{c} + {avail}]",
                    "sub {a:e}, 1",
                    "jb 84b",
                    "mov {r}, qword ptr [{c} + {a} * 8 + {slots}]",
                    "mov dword ptr [{c} + {avail}], {a:e}",
                ],
                r = out(reg) r,
            );
        }
        r
    }
    #[cfg(not(rseq_native))]
    {
        let _ = (base, off);
        std::ptr::null_mut()
    }
}

/// Pushes `obj` onto the current CPU's magazine; false when it is full,
/// closed or the sequence was aborted.
///
/// # Safety
/// As [`pop`]; `obj` is a slab object of the magazines' cache that no
/// magazine holds.
#[inline(always)]
pub(crate) unsafe fn push(base: usize, off: isize, obj: *mut u8) -> bool {
    #[cfg(rseq_native)]
    {
        // SAFETY: as in pop; the slot written (index avail < cap <= size)
        // is above the fill count, so no one reads it until the commit.
        // The failures (and the abort handler) jump straight to the
        // caller's "false", so success costs no test after the sequence.
        unsafe {
            rseq_asm!(
                base,
                off,
                "jmp {miss}",
                [
                    "mov {a:e}, dword ptr [{c} + {avail}]",
                    "cmp {a:e}, dword ptr [{c} + {cap}]",
                    "jae 84b",
                    "mov qword ptr [{c} + {a} * 8 + {slots}], {obj}",
                    "inc {a:e}",
                    "mov dword ptr [{c} + {avail}], {a:e}",
                ],
                cap = const Magazine::CAP_OFFSET,
                obj = in(reg) obj,
                miss = label {
                    return false;
                },
            );
        }
        true
    }
    #[cfg(not(rseq_native))]
    {
        let _ = (base, off, obj);
        false
    }
}

/// Pushes as many of `objs` as fit onto the current CPU's magazine, from
/// the front; returns how many (0 when closed or aborted).
///
/// # Safety
/// As [`push`], for every object of `objs`.
pub(crate) unsafe fn push_batch(base: usize, off: isize, objs: &[*mut u8]) -> usize {
    #[cfg(rseq_native)]
    {
        let k: usize;
        // SAFETY: as in push; the slots written, [avail, avail + k) with
        // avail + k <= cap, are above the fill count until the commit.
        unsafe {
            rseq_asm!(
                base,
                off,
                "xor {k:e}, {k:e}",
                [
                    "mov {a:e}, dword ptr [{c} + {avail}]",
                    "mov {k:e}, dword ptr [{c} + {cap}]",
                    // room = cap - avail; none (or closed: cap 0) fails.
                    "sub {k:e}, {a:e}",
                    "jbe 84b",
                    "cmp {k}, {cnt}",
                    "cmova {k}, {cnt}",
                    "test {k}, {k}",
                    "jz 84b",
                    // The copy: a string move, interruptible like the rest.
                    "lea rdi, [{c} + {a} * 8 + {slots}]",
                    "mov rsi, {src}",
                    "mov rcx, {k}",
                    "rep movsq",
                    "add {a:e}, {k:e}",
                    "mov dword ptr [{c} + {avail}], {a:e}",
                ],
                cap = const Magazine::CAP_OFFSET,
                src = in(reg) objs.as_ptr(),
                cnt = in(reg) objs.len(),
                k = out(reg) k,
                out("rdi") _,
                out("rsi") _,
                out("rcx") _,
            );
        }
        k
    }
    #[cfg(not(rseq_native))]
    {
        let _ = (base, off, objs);
        0
    }
}

/// Pops up to `out.len()` objects off the top of the current CPU's
/// magazine into `out`; returns how many, `k`: `out[..k]` is initialised
/// (0 when empty, closed or aborted).
///
/// # Safety
/// As [`pop`].
pub(crate) unsafe fn pop_batch(
    base: usize,
    off: isize,
    out: &mut [std::mem::MaybeUninit<*mut u8>],
) -> usize {
    #[cfg(rseq_native)]
    {
        let k: usize;
        // SAFETY: as in pop; the sequence writes only `out` before the
        // commit, and an aborted sequence reports 0 so `out` is ignored.
        unsafe {
            rseq_asm!(
                base,
                off,
                "xor {k:e}, {k:e}",
                [
                    "mov {a:e}, dword ptr [{c} + {avail}]",
                    "mov {k}, {cnt}",
                    "cmp {k}, {a}",
                    "cmova {k}, {a}",
                    "test {k}, {k}",
                    "jz 84b",
                    "sub {a:e}, {k:e}",
                    "lea rsi, [{c} + {a} * 8 + {slots}]",
                    "mov rdi, {dst}",
                    "mov rcx, {k}",
                    "rep movsq",
                    "mov dword ptr [{c} + {avail}], {a:e}",
                ],
                dst = in(reg) out.as_mut_ptr().cast::<*mut u8>(),
                cnt = in(reg) out.len(),
                k = out(reg) k,
                out("rdi") _,
                out("rsi") _,
                out("rcx") _,
            );
        }
        k
    }
    #[cfg(not(rseq_native))]
    {
        let _ = (base, off, out);
        0
    }
}

#[cfg(all(test, rseq_native))]
mod tests {
    use super::*;
    use crate::magazine::Mags;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    /// Magazines of `size`, every CPU's opened (as its first use does).
    fn mags(size: u32) -> Mags {
        let m = Mags::new(crate::os::possible_cpus(), size, size.div_ceil(2));
        for i in 0..m.len() {
            m.lock(i).open();
        }
        m
    }

    fn addr(i: usize) -> *mut u8 {
        std::ptr::without_provenance_mut(i * 64)
    }

    /// Objects held by all the magazines: a preemption between two steps
    /// can abort one or move the thread to another CPU's magazine, so the
    /// tests look at totals over all magazines.
    fn total(m: &Mags) -> u32 {
        m.iter().map(Magazine::fill).sum()
    }

    /// The rseq offset, or `None` after saying loudly that `test` is skipped.
    fn available_or_skip(test: &str) -> Option<isize> {
        let off = available();
        if off.is_none() {
            eprintln!(
                "SKIPPED: {test}: restartable sequences are unavailable here (they need \
                 x86_64 Linux 5.10+ with glibc 2.35+, outside Miri and loom); nothing was checked"
            );
        }
        off
    }

    #[test]
    fn push_pop_and_batches_conserve_objects_and_respect_bounds() {
        let Some(off) =
            available_or_skip("push_pop_and_batches_conserve_objects_and_respect_bounds")
        else {
            return;
        };
        let m = mags(4);
        let base = m.rseq_base();
        let mut pushed = Vec::new();
        for i in 1..=64 {
            // SAFETY: base is the live magazines' base; off from available().
            if unsafe { push(base, off, addr(i)) } {
                pushed.push(i);
            }
        }
        assert!(
            total(&m) as usize == pushed.len() && pushed.len() >= 4,
            "{pushed:?}"
        );
        assert!(m.iter().all(|g| g.fill() <= 4));
        let mut popped = Vec::new();
        for _ in 0..64 {
            // SAFETY: as above.
            let r = unsafe { pop(base, off) };
            if !r.is_null() {
                popped.push(r.addr() / 64);
            }
        }
        popped.sort_unstable();
        assert_eq!(popped, pushed, "every pushed object popped exactly once");
        assert_eq!(total(&m), 0);
        // SAFETY: as above.
        assert!(unsafe { pop(base, off) }.is_null());

        let batch: Vec<*mut u8> = (100..110).map(addr).collect();
        // SAFETY: as above.
        let k = unsafe { push_batch(base, off, &batch) };
        assert!(k <= 4 && total(&m) as usize == k, "pushed {k}");
        let mut out = [std::mem::MaybeUninit::uninit(); 8];
        // SAFETY: as above.
        let j = unsafe { pop_batch(base, off, &mut out) };
        assert!(j <= k);
        // SAFETY: pop_batch initialised the first j.
        let out: Vec<*mut u8> = out[..j]
            .iter()
            .map(|p| unsafe { p.assume_init() })
            .collect();
        // Top of the stack first in memory order: the last pushed are out.
        let want: Vec<usize> = (100 + k - j..100 + k).map(|i| i * 64).collect();
        if j == k {
            assert_eq!(out[..j].iter().map(|p| p.addr()).collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn a_closed_magazine_refuses_every_sequence() {
        let Some(off) = available_or_skip("a_closed_magazine_refuses_every_sequence") else {
            return;
        };
        let m = mags(4);
        let base = m.rseq_base();
        for i in 0..3 {
            // SAFETY: as in the test above.
            unsafe { push(base, off, addr(i + 1)) };
        }
        let held = total(&m);
        assert!(held > 0);
        let guards: Vec<_> = (0..m.len())
            .map(|i| {
                let mut g = m.lock(i);
                g.close();
                g
            })
            .collect();
        fence();
        // SAFETY: base is the live magazines' base; off from available().
        assert!(!unsafe { push(base, off, addr(9)) });
        // SAFETY: as above.
        assert!(unsafe { pop(base, off) }.is_null());
        // SAFETY: as above.
        assert_eq!(unsafe { push_batch(base, off, &[addr(10)]) }, 0);
        let mut out = [std::mem::MaybeUninit::uninit(); 4];
        // SAFETY: as above.
        assert_eq!(unsafe { pop_batch(base, off, &mut out) }, 0);
        assert_eq!(total(&m), held, "nothing moved while closed");
        drop(guards);
        // Reopened on unlock.
        // SAFETY: as above.
        let back = (0..8)
            .filter(|_| !unsafe { pop(base, off) }.is_null())
            .count();
        assert!(back > 0, "the magazine reopened");
    }

    /// A thread whose rseq area reads a negative CPU id (not registered)
    /// lands on a guard: every sequence fails, nothing is touched.
    #[test]
    fn the_guards_refuse_unregistered_threads() {
        let m = mags(4);
        for i in 1..=2 {
            let entry = (m.rseq_base() as *const usize).wrapping_sub(i);
            // SAFETY: the table has the guards' entries right below the base.
            let e = unsafe { *entry };
            // SAFETY: table entries point at the live magazines.
            let g = unsafe { &*(e as *const Magazine) };
            assert!(!g.open() && g.fill() == 0, "guard {i}");
        }
    }

    /// `fence` must abort a critical section running on another CPU: a
    /// thread spins inside one until told to stop; the fence comes first,
    /// so the sequence must end through its abort handler, at once. The
    /// spinner runs SCHED_FIFO when allowed (root) so no time slice ends it
    /// instead; kernel threads still interrupt it now and then (every ~80 ms
    /// here), so five rounds must each end within 20 ms of the fence, which
    /// a working fence does in microseconds.
    #[test]
    fn fence_aborts_a_critical_section_running_elsewhere() {
        let Some(off) = available_or_skip("fence_aborts_a_critical_section_running_elsewhere")
        else {
            return;
        };
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            eprintln!("NOTE: one CPU: the fence test needs the spinner on another CPU; skipped");
            return;
        }
        static STOP: AtomicBool = AtomicBool::new(false);
        static STATE: AtomicU32 = AtomicU32::new(0); // 1 = inside, 2 = out
        static FIFO: AtomicBool = AtomicBool::new(false);
        for _round in 0..5 {
            STOP.store(false, Ordering::SeqCst);
            STATE.store(0, Ordering::SeqCst);
            let spinner = std::thread::spawn(move || {
                let p = libc::sched_param { sched_priority: 1 };
                // SAFETY: pthread_self has no preconditions.
                let me = unsafe { libc::pthread_self() };
                // SAFETY: the call only changes this thread's policy (it
                // fails harmlessly without the privilege).
                let fifo = unsafe { libc::pthread_setschedparam(me, libc::SCHED_FIFO, &p) } == 0;
                FIFO.store(fifo, Ordering::SeqCst);
                let committed: u32;
                // SAFETY: the sequence only writes STATE and reads STOP
                // (statics); the rseq area at fs:off is this thread's.
                unsafe {
                    std::arch::asm!(
                        ".pushsection __rseq_failure, \"ax\"",
                        ".byte 0x0f, 0xb9, 0x3d",
                        ".long {sig}",
                        "84:",
                        "xor {r:e}, {r:e}",
                        "jmp 82f",
                        ".popsection",
                        ".pushsection __rseq_cs, \"aw\"",
                        ".balign 32",
                        "80:",
                        ".long 0, 0",
                        ".quad 81f, 82f - 81f, 84b",
                        ".popsection",
                        "lea {t}, [rip + 80b]",
                        "mov qword ptr fs:[{off} + 8], {t}",
                        "81:",
                        "mov {r:e}, 1",
                        "mov dword ptr [{state}], 1",
                        "86:",
                        "pause",
                        "cmp byte ptr [{stop}], 0",
                        "je 86b",
                        "82:",
                        sig = const RSEQ_SIG,
                        off = in(reg) off,
                        state = in(reg) STATE.as_ptr(),
                        stop = in(reg) STOP.as_ptr(),
                        t = out(reg) _,
                        r = out(reg) committed,
                        options(nostack),
                    );
                }
                STATE.store(2, Ordering::SeqCst);
                committed
            });
            while STATE.load(Ordering::SeqCst) == 0 {
                std::hint::spin_loop();
            }
            fence();
            // Without SCHED_FIFO (no privilege) a busy machine may keep the
            // aborted spinner off the CPU for a while: a wide window, which
            // catches a fence that does nothing, not a slow one.
            let window = if FIFO.load(Ordering::SeqCst) {
                std::time::Duration::from_millis(20)
            } else {
                std::time::Duration::from_secs(2)
            };
            let t0 = std::time::Instant::now();
            while STATE.load(Ordering::SeqCst) != 2 && t0.elapsed() < window {
                std::hint::spin_loop();
            }
            let left_by_itself = STATE.load(Ordering::SeqCst) == 2;
            STOP.store(true, Ordering::SeqCst);
            let committed = spinner.join().unwrap();
            assert!(left_by_itself, "the fence did not abort the sequence");
            assert_eq!(
                committed, 0,
                "the sequence ran to its end instead of aborting"
            );
        }
    }
}
