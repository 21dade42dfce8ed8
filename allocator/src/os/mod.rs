//! The narrow seam to the operating system (mimalloc's `prim` layer): page
//! size, possible CPUs, the current CPU, anonymous page mappings, a coarse
//! clock and the fault-injection dice. Nothing else in the crate calls `libc`
//! for these, so the logic above can be reasoned about (and run under Miri,
//! where the seam falls back to the global allocator and CPU 0) without the OS.
//!
//! Slabs come from `mmap(MAP_PRIVATE | MAP_ANONYMOUS)`, the userspace stand-in
//! for the seed's `kv_alloc()` / `kv_free()` (`spl_vmalloc()` / `vfree()`):
//! page aligned, zero filled, returned to the OS whole by `munmap`. Unlike
//! the seed, small slabs are carved out of larger reservations, those of
//! small objects advised for transparent huge pages from the process's
//! second such reservation on ([`map_slab`], the `reserve` module): one page fault
//! per huge page instead of one `mmap` and one fault per 4 KiB page.
//!
//! # Finding the current CPU
//!
//! [`current_cpu`] is on the allocation fast path. glibc 2.35 and later
//! register a restartable-sequences area for every thread and export its
//! offset from the thread pointer as `__rseq_offset`; the kernel keeps the
//! area's `cpu_id` field current on every migration, so reading it costs one
//! load (≈1 ns) against ≈3 ns for `sched_getcpu()`. The symbols are looked up
//! once with `dlsym` (so the crate still links against older C libraries) and
//! when rseq is unavailable — old glibc, `GLIBC_TUNABLES=glibc.pthread.rseq=0`,
//! an unsupported architecture, or a thread whose area says "unregistered" —
//! `sched_getcpu()` answers. The value is a hint: the thread can migrate right
//! after reading it, which is why magazines carry a lock (see the `magazine`
//! module).

use std::ptr::NonNull;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};

/// The system page size.
pub fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        #[cfg(miri)]
        {
            4096
        }
        #[cfg(not(miri))]
        {
            // SAFETY: sysconf has no preconditions.
            let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            if p > 0 { p as usize } else { 4096 }
        }
    })
}

/// Parses a kernel CPU list ("0-3,6,8-9") into the count of CPU ids it
/// spans (highest id + 1).
pub fn parse_cpu_list(text: &str) -> Option<usize> {
    let mut max: Option<usize> = None;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let hi = match part.split_once('-') {
            Some((lo, hi)) => {
                let lo: usize = lo.trim().parse().ok()?;
                let hi: usize = hi.trim().parse().ok()?;
                if hi < lo {
                    return None;
                }
                hi
            }
            None => part.trim().parse().ok()?,
        };
        max = Some(max.map_or(hi, |m| m.max(hi)));
    }
    max.map(|m| m + 1)
}

/// How many CPU ids this machine may ever report: one magazine per id,
/// as SPL keeps one per possible CPU.
pub fn possible_cpus() -> usize {
    possible().0
}

/// [`possible_cpus`] when the kernel said it (`/sys/devices/system/cpu/possible`),
/// rather than an estimate: the restartable sequences index magazines by CPU
/// id without a bound check, so they run only on an exact count.
pub(crate) fn possible_cpus_exact() -> Option<usize> {
    let (n, exact) = possible();
    exact.then_some(n)
}

fn possible() -> (usize, bool) {
    static N: OnceLock<(usize, bool)> = OnceLock::new();
    *N.get_or_init(|| {
        if cfg!(miri) {
            return (1, false);
        }
        match std::fs::read_to_string("/sys/devices/system/cpu/possible")
            .ok()
            .and_then(|t| parse_cpu_list(&t))
        {
            Some(n) if n >= 1 => (n, true),
            _ => {
                // SAFETY: sysconf has no preconditions.
                let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
                (if n > 0 { n as usize } else { 1 }, false)
            }
        }
    })
}

const RSEQ_UNKNOWN: isize = isize::MIN;
const RSEQ_NONE: isize = isize::MIN + 1;
static RSEQ_OFFSET: AtomicIsize = AtomicIsize::new(RSEQ_UNKNOWN);

#[cold]
fn rseq_init() -> isize {
    let mut off = RSEQ_NONE;
    if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) && !cfg!(miri) {
        // SAFETY: dlsym with RTLD_DEFAULT and NUL-terminated names is always
        // safe to call; it returns NULL when the symbol is absent.
        let size = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()) };
        // SAFETY: as above.
        let offp = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()) };
        if !size.is_null() && !offp.is_null() {
            // SAFETY: glibc defines `const unsigned int __rseq_size` and
            // `const ptrdiff_t __rseq_offset`, set before main and never
            // changed afterwards.
            let size = unsafe { *(size as *const u32) };
            // SAFETY: as above.
            let o = unsafe { *(offp as *const isize) };
            if size >= 8 {
                off = o;
            }
        }
    }
    RSEQ_OFFSET.store(off, Ordering::Relaxed);
    off
}

#[inline(always)]
fn thread_pointer() -> *const u8 {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        let tp: *const u8;
        // SAFETY: on x86_64 Linux, fs:0 holds the thread control block's self
        // pointer, which is the thread pointer glibc's __rseq_offset is
        // relative to. Reading it has no side effects.
        unsafe {
            std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp,
                options(nostack, readonly, preserves_flags, pure));
        }
        tp
    }
    #[cfg(all(target_arch = "aarch64", not(miri)))]
    {
        let tp: *const u8;
        // SAFETY: tpidr_el0 is the thread pointer on aarch64 Linux; reading it
        // has no side effects.
        unsafe {
            std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp,
                options(nostack, nomem, preserves_flags, pure));
        }
        tp
    }
    #[cfg(any(miri, not(any(target_arch = "x86_64", target_arch = "aarch64"))))]
    {
        std::ptr::null()
    }
}

#[cold]
fn cpu_slow() -> usize {
    if cfg!(miri) {
        return 0;
    }
    // SAFETY: sched_getcpu has no preconditions.
    let c = unsafe { libc::sched_getcpu() };
    if c < 0 { 0 } else { c as usize }
}

/// The CPU this thread is running on right now (a hint: it may migrate at
/// any moment). Always below [`possible_cpus`] in practice; callers still
/// reduce it modulo their array length.
#[inline(always)]
pub fn current_cpu() -> usize {
    // loom replays each interleaving and needs every run to take the same
    // path; the OS thread's real CPU would differ between runs. All loom
    // threads share CPU 0's magazine, the contended case.
    if cfg!(loom) {
        return 0;
    }
    if let Some(cpu) = rseq_cpu() {
        return cpu;
    }
    cpu_slow()
}

/// The CPU id the kernel keeps in this thread's rseq area: `None` when the
/// process or this thread has no rseq registration (then the restartable
/// sequences of [`crate::magazine::rseq`] do not run on this thread either).
#[inline]
pub(crate) fn rseq_cpu() -> Option<usize> {
    let off = rseq_area_offset()?;
    let tp = thread_pointer();
    if tp.is_null() {
        return None;
    }
    // `struct rseq { u32 cpu_id_start; u32 cpu_id; ... }`.
    let field = tp.wrapping_offset(off + 4) as *mut u32;
    // SAFETY: glibc registered this thread's rseq area at tp +
    // __rseq_offset (rseq_init checked that the symbols exist and the area
    // is registered); it is 4-aligned and lives as long as the thread. The
    // kernel writes cpu_id concurrently, so read it atomically.
    let cpu = unsafe { std::sync::atomic::AtomicU32::from_ptr(field) }.load(Ordering::Relaxed);
    // Negative: -1 (not registered yet) or -2 (registration failed).
    ((cpu as i32) >= 0).then_some(cpu as usize)
}

/// The offset of this process's rseq areas from the thread pointer, when
/// glibc registered them (see [`current_cpu`]).
#[inline(always)]
pub(crate) fn rseq_area_offset() -> Option<isize> {
    let mut off = RSEQ_OFFSET.load(Ordering::Relaxed);
    if off == RSEQ_UNKNOWN {
        off = rseq_init();
    }
    (off != RSEQ_NONE).then_some(off)
}

/// Whether [`current_cpu`] is served by the rseq area (for docs and tests).
#[cfg(any(test, feature = "testing"))]
pub fn cpu_id_from_rseq() -> bool {
    rseq_area_offset().is_some()
}

/// Bytes currently mapped through [`map_pages`] or [`map_slab`] and not yet
/// returned by [`unmap_pages`], over every cache of the process.
static MAPPED: AtomicUsize = AtomicUsize::new(0);

/// Bytes of slab memory mapped right now, process wide: every slab of every
/// cache (grown and not yet reclaimed), nothing else (not the unused tail of
/// a reservation, see `reserved_bytes`). Updated on the slow
/// path only (grow and reclaim), so it is exact whenever no grow or reclaim
/// is running. Tests use it to prove that destroy returns everything;
/// `malloc_trim` to say whether a reap returned memory.
pub fn mapped_bytes() -> usize {
    MAPPED.load(Ordering::SeqCst)
}

/// Maps `len` bytes (a multiple of the page size) of zeroed, page-aligned
/// anonymous memory. `None` when the OS refuses.
pub fn map_pages(len: usize) -> Option<NonNull<u8>> {
    debug_assert!(len > 0 && len.is_multiple_of(page_size()));
    let p = map_pages_raw(len);
    if p.is_some() {
        MAPPED.fetch_add(len, Ordering::SeqCst);
    }
    p
}

fn map_pages_raw(len: usize) -> Option<NonNull<u8>> {
    #[cfg(miri)]
    {
        let layout = std::alloc::Layout::from_size_align(len, page_size()).ok()?;
        // SAFETY: layout has non-zero size.
        NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })
    }
    #[cfg(not(miri))]
    {
        mmap_anon(len)
    }
}

/// `len` bytes of fresh anonymous memory straight from `mmap`, at an
/// address of the kernel's choosing (page aligned, zero filled), noted in
/// [`ranges`]. Not counted in [`mapped_bytes`]; never called under Miri.
pub(crate) fn mmap_anon(len: usize) -> Option<NonNull<u8>> {
    let p = mmap_fresh(len, libc::PROT_READ | libc::PROT_WRITE, 0)?;
    if !ranges::note(p, len, true) {
        // SAFETY: p is the mapping just made, unused.
        unsafe { libc::munmap(p as *mut libc::c_void, len) };
        return None;
    }
    NonNull::new(p as *mut u8)
}

/// `len` bytes of fresh anonymous private address space with protection
/// `prot` and `MAP_PRIVATE | MAP_ANONYMOUS | flags`, at an address of the
/// kernel's choosing; not noted in [`ranges`].
fn mmap_fresh(len: usize, prot: libc::c_int, flags: libc::c_int) -> Option<usize> {
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing touches no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p as usize)
}

/// Moves or resizes a whole mapping of [`mmap_anon`] to `new_len` bytes
/// (`mremap` with `MREMAP_MAYMOVE`: the kernel moves the pages, nothing is
/// copied), keeping [`ranges`] exact. `None`, the mapping untouched, when
/// the OS refuses. Not counted in [`mapped_bytes`]; never called under
/// Miri.
///
/// # Safety
/// `[ptr, ptr + old_len)` is a whole mapping of ours; on `Some` nothing
/// uses the old range afterwards.
pub(crate) unsafe fn mremap_anon(
    ptr: *mut u8,
    old_len: usize,
    new_len: usize,
) -> Option<NonNull<u8>> {
    // Forgotten first: once moved, the old range may be anyone's.
    ranges::note(ptr as usize, old_len, false);
    // SAFETY: forwarded caller guarantee; MAYMOVE never touches other
    // mappings.
    let p = unsafe { libc::mremap(ptr.cast(), old_len, new_len, libc::MREMAP_MAYMOVE) };
    if p == libc::MAP_FAILED {
        ranges::note(ptr as usize, old_len, true);
        return None;
    }
    if !ranges::note(p as usize, new_len, true) {
        // SAFETY: p is the mapping just moved, unused by anyone yet.
        unsafe { libc::munmap(p, new_len) };
        return None;
    }
    NonNull::new(p.cast())
}

/// `munmap` of `[ptr, ptr + len)`: a whole mapping or a page-aligned piece
/// of one, forgotten in [`ranges`]. Not counted in [`mapped_bytes`]; never
/// called under Miri.
///
/// Unmapping a piece from the middle of a mapping splits it in two, which
/// the kernel refuses (`ENOMEM`) to a process that holds as many mappings
/// as `vm.max_map_count` allows (65,530 by default). The range then stays
/// mapped, address space never used again, but its memory still goes
/// back to the OS (`MADV_DONTNEED`), so that a reap returns what it
/// counts as returned.
///
/// # Safety
/// The range is mapped, ours, and nothing uses it afterwards.
pub(crate) unsafe fn munmap_range(ptr: *mut u8, len: usize) {
    ranges::note(ptr as usize, len, false);
    // SAFETY: forwarded caller guarantee.
    if unsafe { libc::munmap(ptr.cast(), len) } != 0 {
        // SAFETY: as above: the range is ours and unused.
        let rc = unsafe { libc::madvise(ptr.cast(), len, libc::MADV_DONTNEED) };
        debug_assert_eq!(rc, 0, "munmap and madvise of {len} bytes at {ptr:p} failed");
    }
}

/// Keeps the `len` bytes aligned to `align` (a power of two) of the
/// fresh mapping `[wide, wide + wide_len)`, at least `len + align` bytes
/// long, and returns the rest with `unmap` (which forgets it in [`ranges`]
/// when the mapping was noted there); returns the start of what is kept.
///
/// # Safety
/// The mapping is ours and unused, and `unmap` may unmap any piece of it.
unsafe fn trim_to_aligned(
    wide: usize,
    wide_len: usize,
    len: usize,
    align: usize,
    unmap: unsafe fn(usize, usize),
) -> usize {
    let p = wide.next_multiple_of(align);
    if p > wide {
        // SAFETY: the piece before p belongs to the mapping and is not
        // kept (caller).
        unsafe { unmap(wide, p - wide) };
    }
    let (end, wide_end) = (p + len, wide + wide_len);
    if wide_end > end {
        // SAFETY: the piece after the part kept, likewise.
        unsafe { unmap(end, wide_end - end) };
    }
    p
}

/// Advises `[addr, addr + len)`, a mapping of ours, for transparent huge
/// pages when `huge`, against them otherwise; whether the kernel took the
/// advice. Advice only: where transparent huge pages are off it fails,
/// harmlessly.
fn advise_huge_pages(addr: usize, len: usize, huge: bool) -> bool {
    let advice = if huge {
        libc::MADV_HUGEPAGE
    } else {
        libc::MADV_NOHUGEPAGE
    };
    // SAFETY: madvise on a mapping of ours changes no memory contents.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) == 0 }
}

/// How a slab's pages will be used, which decides the reservation it is
/// carved from and whether huge pages back it (see the `reserve` module).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabPages {
    /// Objects smaller than a page, for a cache that already holds a
    /// reservation's worth of slabs: written page after page, and enough
    /// of them to fill huge pages.
    Huge,
    /// Objects smaller than a page, for a cache with fewer slabs: small
    /// pages, so a huge page is not resident for slabs never written.
    Dense,
    /// Objects of a page or more: small pages, always.
    Sparse,
}

impl SlabPages {
    /// The kind for a slab of a cache whose objects take `obj_size_full`
    /// bytes each, which holds `slab_bytes` of slabs already, carved from
    /// reservations of `reserve` bytes; never [`SlabPages::Huge`] unless
    /// `huge` (the `slab_huge_pages` tunable).
    ///
    /// Huge pages make a cold ramp of small objects several times faster
    /// (one fault and one 2 MiB clear instead of 512 faults), where the
    /// first touch of a huge page is cheap. On a virtual machine whose
    /// host takes back the guest's free memory, a huge page's first touch
    /// can cost host faults for all of it; there `sqlite3` ran about 10 %
    /// slower with huge pages than without (see `bench/ANALYSIS.md`), and
    /// `slab_huge_pages = 0` is the remedy.
    pub fn of(obj_size_full: usize, slab_bytes: usize, reserve: usize, huge: bool) -> Self {
        if obj_size_full >= page_size() {
            SlabPages::Sparse
        } else if huge && slab_bytes >= reserve {
            SlabPages::Huge
        } else {
            SlabPages::Dense
        }
    }
}

/// Maps a slab of `len` bytes (a multiple of the page size): zeroed and
/// page aligned like [`map_pages`], and carved out of one of the
/// process-wide reservations of `reserve` bytes (a power of two, the
/// `slab_reserve_kb` tunable) when it is at most an eighth of that, the
/// one for `pages`. Otherwise, or with `reserve` 0, a mapping of its own.
/// See the `reserve` module. A slab of headerless size class `window`
/// comes from that class's window while it has room, whatever `reserve`
/// is (see the `window` module). `None` when the OS refuses. Return it
/// with [`unmap_pages`].
pub fn map_slab(
    len: usize,
    reserve: usize,
    pages: SlabPages,
    window: Option<usize>,
) -> Option<NonNull<u8>> {
    debug_assert!(len > 0 && len.is_multiple_of(page_size()));
    if cfg!(miri) {
        return map_pages(len);
    }
    let mut r = reserve::CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = window
        && let Some(p) = r.windows.carve(i, len, reserve, pages == SlabPages::Huge)
    {
        r.count_unused(&reserve::UNUSED);
        MAPPED.fetch_add(len, Ordering::SeqCst);
        return Some(p);
    }
    if reserve == 0 || len > reserve / 8 {
        drop(r);
        return map_pages(len);
    }
    let carved = r.carve(len, reserve, pages, &reserve::UNUSED);
    drop(r);
    // A new reservation may fail where a mapping of the slab's own size
    // would not.
    let p = carved.or_else(|| map_pages_raw(len));
    if p.is_some() {
        MAPPED.fetch_add(len, Ordering::SeqCst);
    }
    p
}

/// Bytes mapped for slab reservations and not handed out: the unused
/// tails of the three current reservations, less than one reservation
/// each, kept for the next grow of any cache, and the pages of the
/// headerless classes' windows made writable and not in a slab (see the
/// `window` module). Not part of [`mapped_bytes`].
#[cfg(any(test, feature = "testing"))]
pub fn reserved_bytes() -> usize {
    reserve::UNUSED.load(Ordering::Relaxed)
}

/// The process-wide slab reservations, locked: while they are held no slab
/// is carved (for the `fork` handlers of `crate::registry`).
#[cfg(not(loom))]
pub(crate) struct ReserveLock(
    #[allow(dead_code, reason = "held for its Drop")]
    std::sync::MutexGuard<'static, reserve::Reserves>,
);

/// Locks the slab reservations (the last lock the `fork` handlers of `crate::registry` take).
#[cfg(not(loom))]
pub(crate) fn lock_reserve() -> ReserveLock {
    ReserveLock(reserve::CURRENT.lock().unwrap_or_else(|e| e.into_inner()))
}

mod reserve;

pub(crate) mod ranges;

pub(crate) mod window;

/// Returns a mapping to the OS.
///
/// # Safety
///
/// `ptr` and `len` must be exactly a mapping returned by [`map_pages`] or
/// [`map_slab`], not yet unmapped, and nothing may use the memory
/// afterwards.
pub unsafe fn unmap_pages(ptr: NonNull<u8>, len: usize) {
    let before = MAPPED.fetch_sub(len, Ordering::SeqCst);
    debug_assert!(before >= len, "unmapping more than was mapped");
    #[cfg(miri)]
    {
        let layout = std::alloc::Layout::from_size_align(len, page_size()).expect("mapped layout");
        // SAFETY: the caller passes back what map_pages allocated with this layout.
        unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
    }
    #[cfg(not(miri))]
    {
        let addr = ptr.as_ptr() as usize;
        if window::of(addr) < window::WINDOWS {
            let mut r = reserve::CURRENT.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: a slab of ours in a window came from the window
            // (map_slab), and nothing uses it afterwards (caller).
            if unsafe { r.windows.release(addr, len) } {
                r.count_unused(&reserve::UNUSED);
                return;
            }
        }
        // SAFETY: the caller guarantees this is a whole live mapping of ours
        // (a slab carved from a reservation is a range munmap unmaps alone).
        unsafe { munmap_range(ptr.as_ptr(), len) };
    }
}

/// Milliseconds of a coarse monotonic clock (a few ns through the vDSO); used
/// for slab ages, never on the per-object fast path.
pub fn coarse_ms() -> u64 {
    if cfg!(miri) {
        return 0;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Fault injection: true `permille` times in 1000 (xorshift dice shared by
/// all threads; quality is irrelevant, only the rate matters).
pub fn fault_roll(permille: u32) -> bool {
    static STATE: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    match permille {
        0 => false,
        1000.. => true,
        p => {
            let mut x = STATE.load(Ordering::Relaxed);
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            STATE.store(x, Ordering::Relaxed);
            (x % 1000) < u64::from(p)
        }
    }
}

/// The `VmFlags` line of the mapping holding `addr` in /proc/self/smaps
/// (`" rd wr mr mw me ac nh"`...), for tests of how slabs are advised.
///
/// # Panics
/// When /proc/self/smaps cannot be read or no mapping holds `addr`.
#[cfg(any(test, feature = "testing"))]
pub fn vm_flags(addr: usize) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("reading /proc/self/smaps");
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ')
            && let Some((lo, hi)) = range.split_once('-')
            && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        {
            inside = (lo..hi).contains(&addr);
        } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
            return flags.to_string();
        }
    }
    panic!("no mapping holds {addr:#x} in /proc/self/smaps");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_kinds_follow_object_size_cache_size_and_the_tunable() {
        let (page, reserve) = (page_size(), 2 << 20);
        assert_eq!(SlabPages::of(64, 0, reserve, true), SlabPages::Dense);
        assert_eq!(
            SlabPages::of(64, reserve - page, reserve, true),
            SlabPages::Dense
        );
        assert_eq!(SlabPages::of(64, reserve, reserve, true), SlabPages::Huge);
        assert_eq!(
            SlabPages::of(64, 8 * reserve, reserve, false),
            SlabPages::Dense,
            "slab_huge_pages = 0"
        );
        assert_eq!(
            SlabPages::of(page, 8 * reserve, reserve, true),
            SlabPages::Sparse
        );
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-3\n"), Some(4));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-1,4,6-7"), Some(8));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn current_cpu_is_possible_and_matches_sched_getcpu_mostly() {
        let n = possible_cpus();
        assert!(n >= 1);
        let mut agree = 0;
        for _ in 0..1000 {
            let a = current_cpu();
            assert!(a < n, "cpu {a} >= possible {n}");
            if a == cpu_slow() {
                agree += 1;
            }
        }
        // Migration between the two reads is possible but rare.
        assert!(
            agree > 900,
            "rseq cpu_id disagrees with sched_getcpu: {agree}/1000"
        );
    }

    #[test]
    fn pages_map_zeroed_and_aligned() {
        let len = 3 * page_size();
        let p = map_pages(len).expect("mmap");
        assert!((p.as_ptr() as usize).is_multiple_of(page_size()));
        // SAFETY: the mapping is len bytes long and ours.
        let s = unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), len) };
        assert!(s.iter().all(|&b| b == 0));
        s[len - 1] = 7;
        // SAFETY: p/len is the mapping made above, no longer used.
        unsafe { unmap_pages(p, len) };
    }

    #[test]
    fn fault_dice_respects_extremes_and_rate() {
        assert!(!(0..1000).any(|_| fault_roll(0)));
        assert!((0..1000).all(|_| fault_roll(1000)));
        let hits = (0..10_000).filter(|_| fault_roll(500)).count();
        assert!((4000..6000).contains(&hits), "{hits}");
    }
}
