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
//! has handed out, on a huge page all of it. A huge page pays for itself
//! only where slabs are written page after page and there are enough of
//! them to fill it: a cache of small objects that has grown large, as on
//! a cold ramp (one fault per 2 MiB instead of 512). So there are three
//! reservations, and [`SlabPages`] says which one a slab comes from:
//!
//! - [`SlabPages::Huge`]: slabs of objects smaller than a page, of a cache
//!   that already holds a reservation's worth of slabs (`slab_reserve_kb`,
//!   2 MiB by default), carved from a reservation advised `MADV_HUGEPAGE`;
//! - [`SlabPages::Dense`]: slabs of objects smaller than a page of a cache
//!   smaller than that, from one advised `MADV_NOHUGEPAGE`;
//! - [`SlabPages::Sparse`]: slabs of page-sized and larger objects, of
//!   which a cache may use one or two and write a page per object, from
//!   one advised `MADV_NOHUGEPAGE`, always.
//!
//! Before this rule the choice was the process's, not the cache's: its
//! first dense reservation on small pages, every later one on huge pages. A
//! program with many middling caches (a `malloc` with 89 size classes) then
//! put the slabs of its second 2 MiB on a huge page that its caches never
//! filled. Measured with the malloc library preloaded into `redis-server`
//! under `workloads/redis.sh`'s load (500,000 requests; 2-vCPU VM,
//! transparent huge pages `madvise`), three alternating rounds of `VmHWM`:
//! the process-wide rule 17,456–17,620 KiB, 2 MiB of it a huge page under
//! about 1.1 MiB of slabs; the per-cache rule 16,648–16,696 KiB; mimalloc
//! 15,276–15,392 (1.14× and 1.09×). In the same session `heap.py` peaked at
//! 46,828–48,264 KiB against 47,572–47,600 (mimalloc 44,096–44,204), and
//! the cold ramp's best of 5 runs read 9.65 and 9.08 ns per object against
//! 9.57 and 9.03: unchanged, as its one cache gets huge pages after its
//! first 2 MiB either way. The process-wide rule's earlier measurements: an
//! idle `redis-server` held 13.6 MB against 14.8 MB with every reservation
//! on huge pages, `python3 -c pass` 9.6 MB against 12.1 (mimalloc 8.3); the
//! cold ramp's first reservation on 4 KiB pages cost it 1.31 to 1.34 times
//! mimalloc's time, against 1.1 to 1.5 with none and 1.2 to 2.1 with two (3
//! to 4 interleaved runs each on a machine at load 7).
//!
//! Nothing else changes for a slab: it is page aligned and zero filled
//! (fresh memory, never handed out before), counted in
//! [`super::mapped_bytes`] from the moment it is carved, and returned with
//! [`super::unmap_pages`], an `munmap` of exactly its range, whichever
//! reservation it came from. Unmapping a piece of a huge page splits the
//! page; the piece leaves the resident set at once and its memory returns
//! to the OS when the whole huge page is unmapped, or when the kernel splits
//! the page under memory pressure. What the process holds beyond its slabs
//! is the unused tails of the three current reservations, less than one
//! reservation each (see `super::reserved_bytes`, built for tests): resident when a huge
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

use super::SlabPages;

/// One reservation being carved: `[next, end)` is still free.
#[derive(Debug)]
pub(super) struct Reserve {
    next: usize,
    end: usize,
}

/// The process's three reservations, one for each kind of [`SlabPages`]
/// (see the module docs).
#[derive(Debug)]
pub(super) struct Reserves {
    huge: Reserve,
    dense: Reserve,
    sparse: Reserve,
    /// The headerless classes' own address space (see [`super::window`]).
    pub(super) windows: super::window::Windows,
}

/// The reservations every cache of the process carves its slabs from.
pub(super) static CURRENT: Mutex<Reserves> = Mutex::new(Reserves::new());

/// Bytes of [`CURRENT`] not handed out (the unused tails of all three).
pub(super) static UNUSED: AtomicUsize = AtomicUsize::new(0);

impl Reserves {
    pub(super) const fn new() -> Self {
        Reserves {
            huge: Reserve::new(),
            dense: Reserve::new(),
            sparse: Reserve::new(),
            windows: super::window::Windows::new(),
        }
    }

    /// Sets `unused` to the three tails and the windows' pages not in a
    /// slab.
    pub(super) fn count_unused(&self, unused: &AtomicUsize) {
        unused.store(
            self.huge.tail() + self.dense.tail() + self.sparse.tail() + self.windows.unused(),
            Ordering::Relaxed,
        );
    }

    /// Carves a slab of `len` bytes (a multiple of the page size, at most
    /// `reserve / 8`) from the reservation for `pages`: only the one for
    /// [`SlabPages::Huge`] is advised for huge pages, the others against
    /// them. `None` when the OS refuses a new reservation. `unused` is
    /// counted anew ([`Reserves::count_unused`]).
    pub(super) fn carve(
        &mut self,
        len: usize,
        reserve: usize,
        pages: SlabPages,
        unused: &AtomicUsize,
    ) -> Option<NonNull<u8>> {
        let (r, huge) = match pages {
            SlabPages::Huge => (&mut self.huge, true),
            SlabPages::Dense => (&mut self.dense, false),
            SlabPages::Sparse => (&mut self.sparse, false),
        };
        let p = r.carve(len, reserve, huge)?.0;
        self.count_unused(unused);
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
        // SAFETY: a fresh mapping of 2 len bytes, ours and unused.
        p = unsafe { super::trim_to_aligned(map(2 * len)?, 2 * len, len, len, unmap) };
    }
    super::advise_huge_pages(p, len, huge);
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

    #[test]
    fn only_slabs_of_large_dense_caches_get_huge_pages() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            eprintln!(
                "SKIPPED only_slabs_of_large_dense_caches_get_huge_pages: this kernel has \
                 no transparent huge pages, so madvise leaves no flag to check"
            );
            return;
        }
        let (page, reserve) = (page_size(), 64 * page_size());
        let unused = AtomicUsize::new(0);
        let mut r = Reserves::new();
        let kinds = [SlabPages::Huge, SlabPages::Dense, SlabPages::Sparse];
        // Two reservations of each kind: the second of each starts where
        // the first is used up (8 carvings of an eighth each).
        let mut carved = Vec::new();
        for kind in kinds {
            for _ in 0..9 {
                carved.push((
                    kind,
                    r.carve(8 * page, reserve, kind, &unused).expect("carve"),
                ));
            }
        }
        assert_eq!(unused.load(Ordering::Relaxed), 3 * (reserve - 8 * page));
        for (i, (kind, p)) in carved.iter().enumerate() {
            let flags = crate::os::vm_flags(p.as_ptr() as usize);
            let huge = *kind == SlabPages::Huge;
            assert_eq!(
                flags.contains(" hg"),
                huge,
                "carving {i}, {kind:?}: {flags}"
            );
            assert_eq!(
                flags.contains(" nh"),
                !huge,
                "carving {i}, {kind:?}: {flags}"
            );
        }
        for (i, (_, p)) in carved.iter().enumerate() {
            let a = p.as_ptr() as usize;
            // The last carving of each kind starts a reservation whose
            // tail goes with it.
            let len = if i % 9 == 8 { reserve } else { 8 * page };
            // SAFETY: every carving is ours and unused; the first
            // reservation of each kind was used up exactly.
            unsafe { unmap(a, len) };
        }
    }
}
