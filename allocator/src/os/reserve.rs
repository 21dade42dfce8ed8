//! Slab reservations: small slabs carved out of larger anonymous mappings.
//!
//! The seed gives every slab its own `kv_alloc()`; mapping each 4 KiB slab
//! with its own `mmap` costs a system call per slab and, worse, a 4 KiB page
//! fault for each of its pages. So slabs of at most an eighth of the
//! reservation size (the `slab_reserve_kb` tunable, 2 MiB by default) are
//! carved, one after another, from a process-wide reservation: one
//! anonymous mapping, aligned to its size and (for slabs of small objects,
//! see below) advised `MADV_HUGEPAGE`, so the kernel backs it with a
//! transparent huge page where it can (one fault and one 2 MiB clear
//! instead of 512 faults). A
//! slab that does not fit in what is left of the reservation unmaps that
//! tail (it was never handed out) and starts a new reservation; larger
//! slabs are mapped on their own, as before.
//!
//! # Huge pages cost memory where a slab is not written whole
//!
//! A huge page is resident as a whole from its first touch, so every byte
//! of a reservation that huge pages back counts as resident whether or not
//! a slab there was ever written. Slabs are built lazily (see
//! `crate::slab`): on small pages a slab costs the pages of the objects it
//! has handed out, on a huge page all of it. For slabs of small objects,
//! once a program has grown past its first reservation, that is the price
//! of the cold ramp's speed (one fault per 2 MiB instead of 512), but for
//! slabs of page-sized and larger objects, of which a cache may use one
//! or two, it is the whole slab instead of a page per object. So there
//! are two reservations:
//!
//! - **dense** slabs (objects smaller than a page) carve one that is
//!   advised `MADV_HUGEPAGE`, except the process's first
//!   [`SMALL_PAGE_RESERVATIONS`] (one, 2 MiB by default), advised
//!   `MADV_NOHUGEPAGE`: a small program never fills a huge page's worth
//!   of slabs, and pays only for the pages it writes;
//! - **sparse** slabs (the others) carve one advised `MADV_NOHUGEPAGE`,
//!   always.
//!
//! Measured with the malloc library preloaded (issue 15, 2-vCPU VM,
//! transparent huge pages `madvise`, together with the byte caps of the
//! `kmem` classes): an idle `redis-server` held 13.6 MB against 14.8 MB,
//! `python3 -c pass` 9.6 MB against 12.1 (mimalloc 8.3). With every
//! reservation advised for huge pages redis-server peaked 1.4 MB higher
//! under `workloads/redis.sh`. The price is the cold ramp's 4 KiB page
//! faults in its first reservation: 1M 64-byte objects took 1.31 to
//! 1.34 times mimalloc's time with one small-page reservation, 1.1 to
//! 1.5 with none and 1.2 to 2.1 with two (3 to 4 interleaved runs each on
//! a machine at load 7; `bench/ANALYSIS.md`).
//!
//! Nothing else changes for a slab: it is page aligned and zero filled
//! (fresh memory, never handed out before), counted in
//! [`super::mapped_bytes`] from the moment it is carved, and returned with
//! [`super::unmap_pages`], an `munmap` of exactly its range, whichever
//! reservation it came from. Unmapping a piece of a huge page splits the
//! page; the piece leaves the resident set at once and its memory returns
//! to the OS when the whole huge page is unmapped, or when the kernel splits
//! the page under memory pressure. What the process holds beyond its slabs
//! is the unused tails of the two current reservations, less than one
//! reservation each (see [`super::reserved_bytes`]): resident when a huge
//! page backs it, kept for the next grow of any cache.
//!
//! Measured on the cold ramp of issue 7 (one million 64-byte objects,
//! 4 KiB slabs of 42, growing in the allocating thread; `slabscope-bench
//! ramp`, pinned, 11 interleaved runs on the 2-vCPU reference VM, whose
//! transparent huge pages are `madvise`): a mapping per slab 82 ns per
//! object (median), 256 KiB reservations (too small for a huge page)
//! 50 ns, 2 MiB reservations 15.7 ns; mimalloc, which also gets huge
//! pages, 6.0 ns. A 4 KiB page fault costs about 1.35 µs on that VM and an
//! `mmap` + `munmap` pair about 1.5 µs more; a 2 MiB huge page about 0.2 µs
//! per 4 KiB. The first run of a series, and mimalloc now and then, is
//! 10 to 30 times slower: the VM returns free huge-page-sized blocks to
//! its host, so the first touch of one costs host page faults.

use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Reservations of dense slabs made on small pages before they are advised
/// for huge pages (see the module docs for the measurement).
pub(super) const SMALL_PAGE_RESERVATIONS: usize = 1;

/// One reservation being carved: `[next, end)` is still free.
#[derive(Debug)]
pub(super) struct Reserve {
    next: usize,
    end: usize,
}

/// The process's two reservations: one for dense slabs, one for sparse
/// ones (see the module docs), and how many dense ones were made.
#[derive(Debug)]
pub(super) struct Reserves {
    dense: Reserve,
    sparse: Reserve,
    dense_made: usize,
}

/// The reservations every cache of the process carves its slabs from.
pub(super) static CURRENT: Mutex<Reserves> = Mutex::new(Reserves::new());

/// Bytes of [`CURRENT`] not handed out (the unused tails of both).
pub(super) static UNUSED: AtomicUsize = AtomicUsize::new(0);

impl Reserves {
    pub(super) const fn new() -> Self {
        Reserves {
            dense: Reserve::new(),
            sparse: Reserve::new(),
            dense_made: 0,
        }
    }

    /// Carves a slab of `len` bytes (a multiple of the page size, at most
    /// `reserve / 8`): from the dense reservation when `dense` (the slab's
    /// objects are smaller than a page, so using it writes page after page),
    /// else from the sparse one. A new dense reservation is advised for
    /// huge pages once [`SMALL_PAGE_RESERVATIONS`] were made; every other
    /// one is advised against them. `None` when the OS refuses a new
    /// reservation. `unused` is set to both tails.
    pub(super) fn carve(
        &mut self,
        len: usize,
        reserve: usize,
        dense: bool,
        unused: &AtomicUsize,
    ) -> Option<NonNull<u8>> {
        let p = if dense {
            let huge = self.dense_made >= SMALL_PAGE_RESERVATIONS;
            let (p, fresh) = self.dense.carve(len, reserve, huge)?;
            self.dense_made += usize::from(fresh);
            p
        } else {
            self.sparse.carve(len, reserve, false)?.0
        };
        unused.store(self.dense.tail() + self.sparse.tail(), Ordering::Relaxed);
        Some(p)
    }
}

impl Reserve {
    pub(super) const fn new() -> Self {
        Reserve { next: 0, end: 0 }
    }

    /// Bytes not handed out.
    fn tail(&self) -> usize {
        self.end - self.next
    }

    /// Carves `len` bytes (a multiple of the page size, at most
    /// `reserve / 8`) out of this reservation, starting a new one of
    /// `reserve` bytes (a power of two; advised for huge pages when `huge`,
    /// against them otherwise) when the rest is too short. Returns the
    /// carving and whether a new reservation was made; `None` when the OS
    /// refuses one.
    fn carve(&mut self, len: usize, reserve: usize, huge: bool) -> Option<(NonNull<u8>, bool)> {
        debug_assert!(reserve.is_power_of_two() && len <= reserve / 8);
        let fresh = self.tail() < len;
        if fresh {
            let start = map_reservation(reserve, huge)?;
            if self.end > self.next {
                // SAFETY: the tail of the old reservation was never handed
                // out and nothing refers to it.
                unsafe { unmap(self.next, self.end - self.next) };
            }
            self.next = start;
            self.end = start + reserve;
        }
        let p = self.next;
        self.next += len;
        NonNull::new(p as *mut u8).map(|p| (p, fresh))
    }
}

/// Maps `len` bytes (a power of two) aligned to `len`, advised for
/// transparent huge pages when `huge`, against them otherwise. Recent
/// kernels align large anonymous mappings themselves; otherwise twice the
/// size is mapped and trimmed.
fn map_reservation(len: usize, huge: bool) -> Option<usize> {
    let mut p = map(len)?;
    if !p.is_multiple_of(len) {
        // SAFETY: p is the mapping just made, unused.
        unsafe { unmap(p, len) };
        let wide = map(2 * len)?;
        p = wide.next_multiple_of(len);
        if p > wide {
            // SAFETY: the piece before p belongs to the mapping just made
            // and is not part of the reservation.
            unsafe { unmap(wide, p - wide) };
        }
        let (end, wide_end) = (p + len, wide + 2 * len);
        if wide_end > end {
            // SAFETY: the piece after the reservation, likewise.
            unsafe { unmap(end, wide_end - end) };
        }
    }
    let advice = if huge {
        libc::MADV_HUGEPAGE
    } else {
        libc::MADV_NOHUGEPAGE
    };
    // Advice only: where transparent huge pages are off it fails, harmlessly.
    // SAFETY: madvise on a mapping of ours changes no memory contents.
    unsafe { libc::madvise(p as *mut libc::c_void, len, advice) };
    Some(p)
}

fn map(len: usize) -> Option<usize> {
    super::mmap_anon(len).map(|p| p.as_ptr() as usize)
}

/// # Safety
/// `[addr, addr + len)` is mapped, ours, and unused from now on.
unsafe fn unmap(addr: usize, len: usize) {
    // SAFETY: forwarded caller guarantee.
    unsafe { super::munmap_range(addr as *mut u8, len) };
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::os::page_size;

    #[test]
    fn slabs_are_carved_in_order_aligned_zeroed_and_unmapped_one_by_one() {
        let (page, reserve) = (page_size(), 64 * page_size());
        let mut r = Reserve::new();
        let (a, fresh) = r.carve(2 * page, reserve, true).expect("reservation");
        assert!(fresh && (a.as_ptr() as usize).is_multiple_of(reserve));
        assert_eq!(r.tail(), reserve - 2 * page);
        let (b, fresh) = r.carve(page, reserve, true).expect("carve");
        assert!(!fresh);
        assert_eq!(b.as_ptr() as usize, a.as_ptr() as usize + 2 * page);
        // SAFETY: a is a fresh, writable carving of 2 pages, ours alone.
        let sa = unsafe { std::slice::from_raw_parts_mut(a.as_ptr(), 2 * page) };
        // SAFETY: b is a fresh, writable carving of 1 page, disjoint from a.
        let sb = unsafe { std::slice::from_raw_parts_mut(b.as_ptr(), page) };
        assert!(sa.iter().chain(sb.iter()).all(|&x| x == 0));
        sa.fill(1);
        sb.fill(2);
        // SAFETY: a is a carving of 2 pages, unused now.
        unsafe { unmap(a.as_ptr() as usize, 2 * page) };
        assert!(sb.iter().all(|&x| x == 2), "b survives a's unmapping");
        // Fill the rest (61 pages) with carvings of 8 pages: the last does
        // not fit, so a new reservation starts and the 5-page tail goes.
        let mut last = b;
        for _ in 0..7 {
            last = r.carve(8 * page, reserve, true).expect("carve").0;
        }
        assert_eq!(
            last.as_ptr() as usize,
            b.as_ptr() as usize + (1 + 6 * 8) * page
        );
        let (next, fresh) = r.carve(8 * page, reserve, false).expect("new reservation");
        assert!(fresh && (next.as_ptr() as usize).is_multiple_of(reserve));
        assert_ne!(next.as_ptr() as usize, a.as_ptr() as usize);
        assert_eq!(r.tail(), reserve - 8 * page);
        sb.fill(3);
        // SAFETY: the rest of the first reservation is ours, no longer used.
        unsafe { unmap(b.as_ptr() as usize, reserve - 2 * page - 5 * page) };
        // SAFETY: the second reservation is ours, no longer used.
        unsafe { unmap(next.as_ptr() as usize, reserve) };
    }

    /// Reads the `VmFlags` line of the mapping holding `addr` in
    /// /proc/self/smaps.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("reading /proc/self/smaps");
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.to_string();
            }
        }
        panic!("no mapping holds {addr:#x} in /proc/self/smaps");
    }

    #[test]
    fn dense_slabs_get_huge_pages_after_the_first_reservations_and_sparse_ones_never() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            eprintln!(
                "SKIPPED dense_slabs_get_huge_pages...: this kernel has no transparent \
                 huge pages, so madvise leaves no flag to check"
            );
            return;
        }
        let (page, reserve) = (page_size(), 64 * page_size());
        let unused = AtomicUsize::new(0);
        let mut r = Reserves::new();
        let mut dense = Vec::new();
        // Each carving takes an eighth of a reservation: 8 per reservation.
        for _ in 0..8 * (SMALL_PAGE_RESERVATIONS + 1) {
            dense.push(r.carve(8 * page, reserve, true, &unused).expect("dense"));
        }
        assert_eq!(r.dense_made, SMALL_PAGE_RESERVATIONS + 1);
        let sparse = r.carve(8 * page, reserve, false, &unused).expect("sparse");
        assert_eq!(unused.load(Ordering::Relaxed), reserve - 8 * page);
        assert_eq!(r.dense_made, SMALL_PAGE_RESERVATIONS + 1, "sparse is apart");
        for (i, p) in dense.iter().enumerate() {
            let flags = vm_flags(p.as_ptr() as usize);
            let huge = i / 8 >= SMALL_PAGE_RESERVATIONS;
            assert_eq!(flags.contains(" hg"), huge, "dense carving {i}: {flags}");
            assert_eq!(flags.contains(" nh"), !huge, "dense carving {i}: {flags}");
        }
        let flags = vm_flags(sparse.as_ptr() as usize);
        assert!(
            flags.contains(" nh") && !flags.contains(" hg"),
            "sparse: {flags}"
        );
        for p in dense.iter().chain([&sparse]) {
            // SAFETY: every carving is ours and unused; the reservations
            // were used up exactly, so no tail is left but the sparse one's.
            unsafe { unmap(p.as_ptr() as usize, 8 * page) };
        }
        // SAFETY: the sparse reservation's tail, never handed out.
        unsafe { unmap(sparse.as_ptr() as usize + 8 * page, reserve - 8 * page) };
    }
}
