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
//! # Exclusive access from other CPUs
//!
//! Reaps, destroy and validation must work on every CPU's magazine. They
//! take the magazine's lock byte (which every sequence checks and treats as
//! "unavailable"), then issue
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ)`: when it returns, every
//! sequence that had read the lock byte as free has either committed or
//! been aborted, and every later one sees the lock. This is the pattern of
//! the kernel's rseq selftests and of tcmalloc's per-CPU caches. It costs an
//! interprocessor interrupt, which is why only those slow paths use it.
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
//! Every sequence returns a status instead of retrying on abort: the caller
//! takes its slow path, which is always correct.

use crate::magazine::Magazine;

/// `RSEQ_SIG` for x86: the four bytes the kernel checks right before an
/// abort handler.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom)))]
const RSEQ_SIG: u32 = 0x5305_3053;

const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ: libc::c_int = 1 << 7;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ: libc::c_int = 1 << 8;

/// [`pop`] found the magazine empty: refill it.
pub(crate) const EMPTY: usize = 0;
/// [`pop`] could not use the magazine (locked by a flush, aborted, or no
/// rseq area on this thread): take one object from the slabs.
pub(crate) const UNAVAILABLE: usize = 1;

/// What [`push`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Push {
    /// The object is in the magazine.
    Done,
    /// The magazine is full: flush, then push again.
    #[cfg_attr(
        not(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom))),
        allow(dead_code, reason = "returned by the rseq sequence only")
    )]
    Full,
    /// Locked by a flush, aborted, or no rseq area: free to the slab.
    Unavailable,
}

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
        if !cfg!(all(
            target_arch = "x86_64",
            target_os = "linux",
            not(miri),
            not(loom)
        )) {
            return None;
        }
        let off = crate::os::rseq_area_offset()?;
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

/// `log2(size_of::<Magazine>())`: magazines are one cache line each.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom)))]
const MAG_SHIFT: u32 = {
    assert!(size_of::<Magazine>().is_power_of_two());
    size_of::<Magazine>().trailing_zeros()
};

/// One restartable sequence on the current CPU's magazine in `mags[..n]`.
/// `$body` runs with `{c}` pointing at the magazine (lock byte seen clear)
/// and must end with the commit store; `$fail` is the instruction that
/// loads the failure status into the result register. The abort handler
/// runs `$fail` and leaves.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom)))]
macro_rules! rseq_asm {
    ($fail:literal, [$($body:literal),* $(,)?], $($operands:tt)*) => {
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
            $fail,
            // c = rseq->cpu_id; a negative id (unregistered) is huge unsigned.
            "mov {c:e}, dword ptr fs:[{off} + 4]",
            "cmp {c}, {n}",
            "jae 82f",
            "shl {c}, {shift}",
            "add {c}, {base}",
            "cmp byte ptr [{c} + {lock}], 0",
            "jne 82f",
            $($body,)*
            "82:",
            sig = const RSEQ_SIG,
            shift = const MAG_SHIFT,
            lock = const Magazine::LOCK_OFFSET,
            $($operands)*
            options(nostack),
        )
    };
}

/// Pops the top object of the current CPU's magazine: the object, or a
/// pointer whose address is [`EMPTY`] or [`UNAVAILABLE`].
///
/// # Safety
/// `mags` points at `n` live magazines; `off` is [`available`]'s offset.
#[inline(always)]
pub(crate) unsafe fn pop(mags: *const Magazine, n: usize, off: isize) -> *mut u8 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom)))]
    {
        let r: *mut u8;
        // SAFETY: the sequence reads and writes only the magazine of the
        // current CPU (index checked against n) and its slot array, which
        // live as long as the cache (caller); the rseq area at fs:off is this
        // thread's (available()). The commit store is the last instruction
        // before the post-commit label.
        unsafe {
            rseq_asm!(
                "mov {r:e}, 1",
                [
                    "mov {a:e}, dword ptr [{c} + {avail}]",
                    "xor {r:e}, {r:e}",
                    "test {a:e}, {a:e}",
                    "jz 82f",
                    "mov {t}, qword ptr [{c} + {slots}]",
                    "mov {r}, qword ptr [{t} + {a} * 8 - 8]",
                    "dec {a:e}",
                    "mov byte ptr [{c} + {active}], 1",
                    "mov dword ptr [{c} + {avail}], {a:e}",
                ],
                avail = const Magazine::AVAIL_OFFSET,
                slots = const Magazine::SLOTS_OFFSET,
                active = const Magazine::ACTIVE_OFFSET,
                off = in(reg) off,
                n = in(reg) n,
                base = in(reg) mags,
                c = out(reg) _,
                a = out(reg) _,
                t = out(reg) _,
                r = out(reg) r,
            );
        }
        r
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom))))]
    {
        let _ = (mags, n, off);
        std::ptr::without_provenance_mut(UNAVAILABLE)
    }
}

/// Pushes `obj` onto the current CPU's magazine.
///
/// # Safety
/// As [`pop`]; `obj` is a slab object of the magazines' cache that no
/// magazine holds.
#[inline(always)]
pub(crate) unsafe fn push(mags: *const Magazine, n: usize, off: isize, obj: *mut u8) -> Push {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom)))]
    {
        let r: usize;
        // SAFETY: as in pop; the slot written (index avail < size) is above
        // the fill count, so no one reads it until the commit.
        unsafe {
            rseq_asm!(
                "mov {r:e}, 2",
                [
                    "mov {a:e}, dword ptr [{c} + {avail}]",
                    "mov {r:e}, 1",
                    "cmp {a:e}, dword ptr [{c} + {size}]",
                    "jae 82f",
                    "mov {t}, qword ptr [{c} + {slots}]",
                    "mov qword ptr [{t} + {a} * 8], {obj}",
                    "inc {a:e}",
                    "mov byte ptr [{c} + {active}], 1",
                    "xor {r:e}, {r:e}",
                    "mov dword ptr [{c} + {avail}], {a:e}",
                ],
                avail = const Magazine::AVAIL_OFFSET,
                size = const Magazine::SIZE_OFFSET,
                slots = const Magazine::SLOTS_OFFSET,
                active = const Magazine::ACTIVE_OFFSET,
                off = in(reg) off,
                n = in(reg) n,
                base = in(reg) mags,
                obj = in(reg) obj,
                c = out(reg) _,
                a = out(reg) _,
                t = out(reg) _,
                r = out(reg) r,
            );
        }
        match r {
            0 => Push::Done,
            1 => Push::Full,
            _ => Push::Unavailable,
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom))))]
    {
        let _ = (mags, n, off, obj);
        Push::Unavailable
    }
}

/// Pushes as many of `objs` as fit onto the current CPU's magazine, from
/// the front; returns how many (0 when unavailable).
///
/// # Safety
/// As [`push`], for every object of `objs`.
pub(crate) unsafe fn push_batch(
    mags: *const Magazine,
    n: usize,
    off: isize,
    objs: &[*mut u8],
) -> usize {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom)))]
    {
        let k: usize;
        // SAFETY: as in push; the slots written, [avail, avail + k) with
        // avail + k <= size, are above the fill count until the commit.
        unsafe {
            rseq_asm!(
                "xor {k:e}, {k:e}",
                [
                    "mov {a:e}, dword ptr [{c} + {avail}]",
                    "mov {k:e}, dword ptr [{c} + {size}]",
                    "sub {k:e}, {a:e}",
                    "cmp {k}, {cnt}",
                    "cmova {k}, {cnt}",
                    "test {k}, {k}",
                    "jz 82f",
                    "mov {t}, qword ptr [{c} + {slots}]",
                    "lea {t}, [{t} + {a} * 8]",
                    "xor {i:e}, {i:e}",
                    "86:",
                    "mov {x}, qword ptr [{src} + {i} * 8]",
                    "mov qword ptr [{t} + {i} * 8], {x}",
                    "inc {i}",
                    "cmp {i}, {k}",
                    "jb 86b",
                    "add {a:e}, {k:e}",
                    "mov byte ptr [{c} + {active}], 1",
                    "mov dword ptr [{c} + {avail}], {a:e}",
                ],
                avail = const Magazine::AVAIL_OFFSET,
                size = const Magazine::SIZE_OFFSET,
                slots = const Magazine::SLOTS_OFFSET,
                active = const Magazine::ACTIVE_OFFSET,
                off = in(reg) off,
                n = in(reg) n,
                base = in(reg) mags,
                src = in(reg) objs.as_ptr(),
                cnt = in(reg) objs.len(),
                c = out(reg) _,
                a = out(reg) _,
                t = out(reg) _,
                i = out(reg) _,
                x = out(reg) _,
                k = out(reg) k,
            );
        }
        k
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom))))]
    {
        let _ = (mags, n, off, objs);
        0
    }
}

/// Pops up to `out.len()` objects off the top of the current CPU's
/// magazine into `out`; returns how many (0 when empty or unavailable).
///
/// # Safety
/// As [`pop`].
pub(crate) unsafe fn pop_batch(
    mags: *const Magazine,
    n: usize,
    off: isize,
    out: &mut [*mut u8],
) -> usize {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom)))]
    {
        let k: usize;
        // SAFETY: as in pop; the sequence writes only `out` before the
        // commit, and an aborted sequence reports 0 so `out` is ignored.
        unsafe {
            rseq_asm!(
                "xor {k:e}, {k:e}",
                [
                    "mov {a:e}, dword ptr [{c} + {avail}]",
                    "mov {k}, {cnt}",
                    "cmp {k}, {a}",
                    "cmova {k}, {a}",
                    "test {k}, {k}",
                    "jz 82f",
                    "sub {a:e}, {k:e}",
                    "mov {t}, qword ptr [{c} + {slots}]",
                    "lea {t}, [{t} + {a} * 8]",
                    "xor {i:e}, {i:e}",
                    "86:",
                    "mov {x}, qword ptr [{t} + {i} * 8]",
                    "mov qword ptr [{dst} + {i} * 8], {x}",
                    "inc {i}",
                    "cmp {i}, {k}",
                    "jb 86b",
                    "mov byte ptr [{c} + {active}], 1",
                    "mov dword ptr [{c} + {avail}], {a:e}",
                ],
                avail = const Magazine::AVAIL_OFFSET,
                slots = const Magazine::SLOTS_OFFSET,
                active = const Magazine::ACTIVE_OFFSET,
                off = in(reg) off,
                n = in(reg) n,
                base = in(reg) mags,
                dst = in(reg) out.as_mut_ptr(),
                cnt = in(reg) out.len(),
                c = out(reg) _,
                a = out(reg) _,
                t = out(reg) _,
                i = out(reg) _,
                x = out(reg) _,
                k = out(reg) k,
            );
        }
        k
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom))))]
    {
        let _ = (mags, n, off, out);
        0
    }
}

#[cfg(all(
    test,
    target_arch = "x86_64",
    target_os = "linux",
    not(miri),
    not(loom)
))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    fn mags(size: u32) -> Vec<Magazine> {
        (0..crate::os::possible_cpus() as u32)
            .map(|cpu| Magazine::new(cpu, size, size.div_ceil(2)))
            .collect()
    }

    fn addr(i: usize) -> *mut u8 {
        std::ptr::without_provenance_mut(i * 64)
    }

    /// Objects held by all the magazines: a preemption between two steps
    /// can abort one or move the thread to another CPU's magazine, so the
    /// tests look at totals over all magazines.
    fn total(m: &[Magazine]) -> u32 {
        m.iter().map(Magazine::fill).sum()
    }

    #[test]
    fn push_pop_and_batches_conserve_objects_and_respect_bounds() {
        let Some(off) = available() else {
            eprintln!("NOTE: restartable sequences unavailable here; nothing to test");
            return;
        };
        let m = mags(4);
        let (p, n) = (m.as_ptr(), m.len());
        let mut pushed = Vec::new();
        for i in 1..=64 {
            // SAFETY: p/n describe the live magazines; off from available().
            match unsafe { push(p, n, off, addr(i)) } {
                Push::Done => pushed.push(i),
                Push::Full | Push::Unavailable => {}
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
            let r = unsafe { pop(p, n, off) };
            if r.addr() > UNAVAILABLE {
                popped.push(r.addr() / 64);
            }
        }
        popped.sort_unstable();
        assert_eq!(popped, pushed, "every pushed object popped exactly once");
        assert_eq!(total(&m), 0);
        // SAFETY: as above.
        assert_eq!(unsafe { pop(p, n, off) }.addr(), EMPTY);

        let batch: Vec<*mut u8> = (100..110).map(addr).collect();
        // SAFETY: as above.
        let k = unsafe { push_batch(p, n, off, &batch) };
        assert!(k <= 4 && total(&m) as usize == k, "pushed {k}");
        let mut out = [std::ptr::null_mut(); 8];
        // SAFETY: as above.
        let j = unsafe { pop_batch(p, n, off, &mut out) };
        assert!(j <= k);
        // Top of the stack first in memory order: the last pushed are out.
        let want: Vec<usize> = (100 + k - j..100 + k).map(|i| i * 64).collect();
        if j == k {
            assert_eq!(out[..j].iter().map(|p| p.addr()).collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn a_locked_magazine_is_unavailable() {
        let Some(off) = available() else {
            return;
        };
        let m = mags(4);
        let guards: Vec<_> = m.iter().map(Magazine::lock).collect();
        let (p, n) = (m.as_ptr(), m.len());
        // SAFETY: p/n describe the live magazines; off from available().
        assert_eq!(unsafe { push(p, n, off, addr(1)) }, Push::Unavailable);
        // SAFETY: as above.
        assert_eq!(unsafe { pop(p, n, off) }.addr(), UNAVAILABLE);
        // SAFETY: as above.
        assert_eq!(unsafe { push_batch(p, n, off, &[addr(2)]) }, 0);
        assert_eq!(total(&m), 0);
        drop(guards);
        // With no magazine for any CPU id, everything is unavailable too.
        // SAFETY: n = 0 magazines: nothing is dereferenced.
        let none = unsafe { push(m.as_ptr(), 0, off, addr(1)) };
        assert_eq!(none, Push::Unavailable);
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
        let Some(off) = available() else {
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
