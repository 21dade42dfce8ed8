//! Slab reservations: small slabs carved out of larger anonymous mappings.
//!
//! The seed gives every slab its own `kv_alloc()`; mapping each 4 KiB slab
//! with its own `mmap` costs a system call per slab and, worse, a 4 KiB page
//! fault for each of its pages. So slabs of at most an eighth of the
//! reservation size (the `slab_reserve_kb` tunable, 2 MiB by default) are
//! carved, one after another, from a process-wide reservation: one
//! anonymous mapping, aligned to its size and advised
//! `MADV_HUGEPAGE`, so the kernel backs it with a transparent huge page
//! where it can (one fault and one 2 MiB clear instead of 512 faults). A
//! slab that does not fit in what is left of the reservation unmaps that
//! tail (it was never handed out) and starts a new reservation; larger
//! slabs are mapped on their own, as before.
//!
//! Nothing else changes for a slab: it is page aligned and zero filled
//! (fresh memory, never handed out before), counted in
//! [`super::mapped_bytes`] from the moment it is carved, and returned with
//! [`super::unmap_pages`], an `munmap` of exactly its range, whichever
//! reservation it came from. Unmapping a piece of a huge page splits the
//! page; the piece leaves the resident set at once and its memory returns
//! to the OS when the whole huge page is unmapped, or when the kernel splits
//! the page under memory pressure. What the process holds beyond its slabs
//! is the unused tail of the current reservation, less than one
//! reservation (see [`super::reserved_bytes`]): resident when a huge page
//! backs it, kept for the next grow of any cache.
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

/// One reservation being carved: `[next, end)` is still free.
#[derive(Debug)]
pub(super) struct Reserve {
    next: usize,
    end: usize,
}

/// The reservation every cache of the process carves its slabs from.
pub(super) static CURRENT: Mutex<Reserve> = Mutex::new(Reserve::new());

/// Bytes of [`CURRENT`] not handed out (its unused tail).
pub(super) static UNUSED: AtomicUsize = AtomicUsize::new(0);

impl Reserve {
    pub(super) const fn new() -> Self {
        Reserve { next: 0, end: 0 }
    }

    /// Carves `len` bytes (a multiple of the page size, at most
    /// `reserve / 8`) out of this reservation, starting a new one of
    /// `reserve` bytes (a power of two) when the rest is too short. `None`
    /// when the OS refuses a new reservation. `unused` tracks the bytes
    /// left.
    pub(super) fn carve(
        &mut self,
        len: usize,
        reserve: usize,
        unused: &AtomicUsize,
    ) -> Option<NonNull<u8>> {
        debug_assert!(reserve.is_power_of_two() && len <= reserve / 8);
        if self.end - self.next < len {
            let fresh = map_reservation(reserve)?;
            if self.end > self.next {
                // SAFETY: the tail of the old reservation was never handed
                // out and nothing refers to it.
                unsafe { unmap(self.next, self.end - self.next) };
            }
            self.next = fresh;
            self.end = fresh + reserve;
        }
        let p = self.next;
        self.next += len;
        unused.store(self.end - self.next, Ordering::Relaxed);
        NonNull::new(p as *mut u8)
    }
}

/// Maps `len` bytes (a power of two) aligned to `len`, advised for
/// transparent huge pages. Recent kernels align large anonymous mappings
/// themselves; otherwise twice the size is mapped and trimmed.
fn map_reservation(len: usize) -> Option<usize> {
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
    // Advice only: where transparent huge pages are off it fails, harmlessly.
    // SAFETY: madvise on a mapping of ours changes no memory contents.
    unsafe { libc::madvise(p as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
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
        let unused = AtomicUsize::new(0);
        let mut r = Reserve::new();
        let a = r.carve(2 * page, reserve, &unused).expect("reservation");
        assert!((a.as_ptr() as usize).is_multiple_of(reserve));
        assert_eq!(unused.load(Ordering::Relaxed), reserve - 2 * page);
        let b = r.carve(page, reserve, &unused).expect("carve");
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
            last = r.carve(8 * page, reserve, &unused).expect("carve");
        }
        assert_eq!(
            last.as_ptr() as usize,
            b.as_ptr() as usize + (1 + 6 * 8) * page
        );
        let next = r
            .carve(8 * page, reserve, &unused)
            .expect("new reservation");
        assert!((next.as_ptr() as usize).is_multiple_of(reserve));
        assert_ne!(next.as_ptr() as usize, a.as_ptr() as usize);
        assert_eq!(unused.load(Ordering::Relaxed), reserve - 8 * page);
        sb.fill(3);
        // SAFETY: the rest of the first reservation is ours, no longer used.
        unsafe { unmap(b.as_ptr() as usize, reserve - 2 * page - 5 * page) };
        // SAFETY: the second reservation is ours, no longer used.
        unsafe { unmap(next.as_ptr() as usize, reserve) };
    }
}
