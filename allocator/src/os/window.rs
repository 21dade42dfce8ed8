//! Windows: a range of address space of its own for each headerless size
//! class, from which that class's slabs are carved, so that the class of
//! a pointer is arithmetic on the pointer, [`of`]: a shift and a
//! subtraction, with no load that the pointer's value waits for.
//!
//! A `free` must find the magazine it pushes to from the pointer alone.
//! Through the page map (`super::ranges`) the class is the end of two
//! dependent loads, and the magazine's address, and so every load and
//! store of the push, waits for them; a `malloc` right after the `free`
//! reads the magazine's count back and waits too. The page map is still
//! read, to check that the page is a live slab of the class before
//! anything is written, but as a branch the CPU predicts, not as the
//! address of the push. mimalloc finds a page from a pointer the same
//! way, by aligning its segments; SPL and illumos's `kmem_alloc` take the
//! cache as an argument (`kmem_free(ptr, size)`), which `malloc`'s `free`
//! does not have.
//!
//! The windows are one reservation of [`WINDOWS`] GiB, aligned to a GiB,
//! mapped inaccessible and without reserving swap (`PROT_NONE`,
//! `MAP_NORESERVE`), so they cost address space and no memory: a GiB of
//! slabs per class, 16 million objects of 64 bytes, beyond which a class
//! carves its slabs from the shared reservations as before, found by the
//! page map's byte. A window is made readable and writable a reservation
//! (`slab_reserve_kb`) at a time and advised as the shared reservations
//! are; a slab returned to it gives its page back with `MADV_DONTNEED`
//! (the page stays mapped, reads zero and is no longer resident) and goes
//! on the window's stack of free pages, from which the class's next slab
//! is taken before any page never used. Where the reservation is refused
//! (a low `RLIMIT_AS`), there are no windows and every class carves as
//! before.
//!
//! A returned page advises its 2 MiB range against huge pages, so that
//! `khugepaged` cannot collapse the range into a huge page again and make
//! the memory a reap returned resident (see [`Window::release`];
//! bench/ANALYSIS.md, "Windows for the small classes", measures both).
//! Each window that huge pages back keeps one partly carved huge page for
//! its class's next slabs, where the shared reservations keep one for all
//! classes: up to 2 MiB more per class.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Windows: one per headerless class (`kmem::ladder::HEADERLESS` of them
/// at most).
pub(crate) const WINDOWS: usize = 4;
/// Bits of address one window covers: a GiB.
const WINDOW_SHIFT: u32 = 30;
/// Bytes of one window.
const WINDOW_BYTES: usize = 1 << WINDOW_SHIFT;
/// Bytes of the slabs a window holds: a headerless slab, one 4 KiB page.
pub(crate) const SLAB: usize = 4096;
/// [`WINDOW_GIB`] without windows: above every user address's GiB, so
/// that [`of`] is at least [`WINDOWS`] for every address.
const NO_WINDOW: usize = 1 << 40;

/// The GiB (address >> 30) where window 0 starts; [`NO_WINDOW`] until the
/// windows are reserved, and for good when they cannot be.
static WINDOW_GIB: AtomicUsize = AtomicUsize::new(NO_WINDOW);

/// The window `addr` lies in, when that is less than [`WINDOWS`].
#[inline(always)]
pub(crate) fn of(addr: usize) -> usize {
    (addr >> WINDOW_SHIFT).wrapping_sub(WINDOW_GIB.load(Ordering::Relaxed))
}

/// One window: `[start, start + limit)` reserved inaccessible, of which
/// `[start, start + committed)` is readable and writable. Pages of that
/// from `next` on were never handed out; below `next`, a page is a slab
/// or on the stack of free pages, `free_len` page indices at `stack`
/// (room for one per page of the window).
///
/// `committed == next + SLAB * (free pages) + unused tail`, and
/// `next <= committed <= limit`.
#[derive(Debug)]
pub(super) struct Window {
    start: usize,
    limit: usize,
    committed: usize,
    next: usize,
    stack: usize,
    free_len: usize,
    /// One bit per 2 MiB range: advised against huge pages since a page
    /// there was returned.
    small_pages: [u64; RANGES.div_ceil(64)],
}

/// Bytes of a huge page, the ranges `khugepaged` collapses.
const HUGE: usize = 2 << 20;
/// 2 MiB ranges of a window.
const RANGES: usize = WINDOW_BYTES / HUGE;

impl Window {
    const fn empty() -> Self {
        Window {
            start: 0,
            limit: 0,
            committed: 0,
            next: 0,
            stack: 0,
            free_len: 0,
            small_pages: [0; RANGES.div_ceil(64)],
        }
    }

    /// A window over `[start, start + limit)`, reserved inaccessible and
    /// ours alone, with its stack of free pages at `stack`: room for
    /// `limit / SLAB` `u32`s, writable and ours alone.
    fn new(start: usize, limit: usize, stack: usize) -> Self {
        debug_assert!(start.is_multiple_of(SLAB) && limit.is_multiple_of(SLAB));
        Window {
            start,
            limit,
            stack,
            ..Window::empty()
        }
    }

    /// Whether `addr` lies in this window.
    fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.start) < self.limit
    }

    /// A slab's page: the last one returned, else the next never used,
    /// making the next `reserve` bytes (a multiple of [`SLAB`]) writable
    /// first when none is left, advised for huge pages when `huge`.
    /// Noted as slabscope's in the page map. `None` when the window is
    /// full or the OS refuses.
    fn carve(&mut self, reserve: usize, huge: bool) -> Option<usize> {
        let p = if self.free_len > 0 {
            self.free_len -= 1;
            // SAFETY: the stack holds free_len + 1 entries (the invariant).
            let page = unsafe { self.slot(self.free_len).read() };
            self.start + page as usize * SLAB
        } else {
            if self.next == self.committed {
                let len = reserve.min(self.limit - self.committed);
                if len == 0 {
                    return None;
                }
                commit(self.start + self.committed, len, huge)?;
                self.committed += len;
            }
            self.next += SLAB;
            self.start + self.next - SLAB
        };
        if !super::ranges::note(p, SLAB, true) {
            // SAFETY: p was free a moment ago and still is.
            unsafe { self.release(p) };
            return None;
        }
        Some(p)
    }

    /// Returns the slab page at `addr` to the window: its memory to the OS
    /// (`MADV_DONTNEED`: it reads zero from now on), the page to the
    /// stack, forgotten in the page map. The first page returned in a
    /// 2 MiB range also advises the range against huge pages: otherwise,
    /// still advised for them, `khugepaged` would in time collapse it into
    /// a huge page again, resident whole, and give back to the process the
    /// memory a reap returned (where `max_ptes_none` is its default, 511,
    /// one page in use is enough). The range keeps that advice: its pages
    /// come back one by one as slabs, and neighbouring ranges advised
    /// alike are one mapping, so the windows' mappings stay few.
    ///
    /// # Safety
    /// `addr` is a page [`Window::carve`] handed out, which nothing uses
    /// from now on.
    unsafe fn release(&mut self, addr: usize) {
        debug_assert!(self.contains(addr) && addr - self.start < self.next);
        super::ranges::note(addr, SLAB, false);
        // SAFETY: the page is ours and unused (caller): dropping its
        // contents harms nothing.
        let rc = unsafe { libc::madvise(addr as *mut libc::c_void, SLAB, libc::MADV_DONTNEED) };
        debug_assert_eq!(rc, 0, "madvise(MADV_DONTNEED) of a window's page failed");
        let r = (addr - self.start) / HUGE;
        if self.small_pages[r / 64] >> (r % 64) & 1 == 0 {
            let len = HUGE.min(self.limit - r * HUGE);
            // As in `commit`: where transparent huge pages are off there is
            // nothing to collapse. Where the kernel refuses the advice (no
            // mapping left to split it off, `vm.max_map_count`), the next
            // page returned here tries again.
            if super::advise_huge_pages(self.start + r * HUGE, len, false) {
                self.small_pages[r / 64] |= 1 << (r % 64);
            }
        }
        // SAFETY: fewer pages are free than the window has, the stack's
        // room (each free page was handed out once and returned once).
        unsafe {
            self.slot(self.free_len)
                .write(((addr - self.start) / SLAB) as u32)
        };
        self.free_len += 1;
    }

    /// Entry `k` of the stack of free pages.
    fn slot(&self, k: usize) -> *mut u32 {
        (self.stack as *mut u32).wrapping_add(k)
    }

    /// Bytes made writable and not in a slab: the free pages and the
    /// tail never handed out.
    fn unused(&self) -> usize {
        self.committed - self.next + self.free_len * SLAB
    }
}

/// The windows of the process, kept with the shared reservations under
/// their lock (`super::reserve::CURRENT`).
#[derive(Debug)]
pub(super) struct Windows {
    w: [Window; WINDOWS],
    /// Whether the windows were reserved, or that was tried and failed.
    tried: bool,
}

impl Windows {
    pub(super) const fn new() -> Self {
        Windows {
            w: [const { Window::empty() }; WINDOWS],
            tried: false,
        }
    }

    /// A slab of `len` bytes for headerless class `i` from its window,
    /// reserving the windows on first use; `None` (nothing changed) when
    /// the slab is not one page, or the window is full, or missing.
    pub(super) fn carve(
        &mut self,
        i: usize,
        len: usize,
        reserve: usize,
        huge: bool,
    ) -> Option<NonNull<u8>> {
        if len != SLAB || i >= WINDOWS || super::page_size() != SLAB {
            return None;
        }
        if !self.tried {
            self.tried = true;
            self.reserve();
        }
        let p = self.w[i].carve(reserve.max(SLAB), huge)?;
        NonNull::new(p as *mut u8)
    }

    /// Returns a slab to its window when it lies in one (see
    /// [`Window::release`]); false, nothing done, otherwise.
    ///
    /// # Safety
    /// `[addr, addr + len)` is a slab of [`Windows::carve`] when `addr`
    /// lies in a window, and nothing uses it afterwards.
    pub(super) unsafe fn release(&mut self, addr: usize, len: usize) -> bool {
        let Some(w) = self.w.get_mut(of(addr)) else {
            return false;
        };
        debug_assert_eq!(len, SLAB);
        // SAFETY: forwarded caller guarantee.
        unsafe { w.release(addr) };
        true
    }

    /// Bytes of the windows made writable and not in a slab.
    pub(super) fn unused(&self) -> usize {
        self.w.iter().map(Window::unused).sum()
    }

    /// Reserves the windows, each with its stack of free pages, and
    /// publishes [`WINDOW_GIB`]; leaves everything as it was when the OS
    /// refuses.
    fn reserve(&mut self) {
        let stack_bytes = WINDOW_BYTES / SLAB * size_of::<u32>();
        let Some(stacks) = map_none(WINDOWS * stack_bytes, true) else {
            return;
        };
        let Some(p) = map_none((WINDOWS + 1) * WINDOW_BYTES, false) else {
            // SAFETY: the stacks were mapped just above, unused.
            unsafe { unmap_raw(stacks, WINDOWS * stack_bytes) };
            return;
        };
        let len = (WINDOWS + 1) * WINDOW_BYTES;
        // SAFETY: the mapping just made, ours and unused.
        let start = unsafe {
            super::trim_to_aligned(p, len, WINDOWS * WINDOW_BYTES, WINDOW_BYTES, unmap_raw)
        };
        for (i, w) in self.w.iter_mut().enumerate() {
            *w = Window::new(
                start + i * WINDOW_BYTES,
                WINDOW_BYTES,
                stacks + i * stack_bytes,
            );
        }
        WINDOW_GIB.store(start >> WINDOW_SHIFT, Ordering::Relaxed);
    }
}

/// `len` bytes of fresh anonymous address space, inaccessible unless
/// `writable`, reserving no swap: not slabscope's slab memory, so not
/// noted in the page map.
fn map_none(len: usize, writable: bool) -> Option<usize> {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_NONE
    };
    super::mmap_fresh(len, prot, libc::MAP_NORESERVE)
}

/// `munmap` of a piece of a mapping [`map_none`] made (never noted in the
/// page map).
///
/// # Safety
/// The range is ours and unused.
unsafe fn unmap_raw(addr: usize, len: usize) {
    // SAFETY: forwarded caller guarantee.
    unsafe { libc::munmap(addr as *mut libc::c_void, len) };
}

/// Makes `[addr, addr + len)`, in a window and inaccessible, readable and
/// writable, zero filled, advised for transparent huge pages when `huge`
/// and against them otherwise ([`super::advise_huge_pages`], as
/// `super::reserve` advises its reservations). `None`, nothing changed,
/// when the OS refuses.
fn commit(addr: usize, len: usize, huge: bool) -> Option<()> {
    // SAFETY: the range lies in a window reserved by us and never handed
    // out: replacing its mapping touches nothing anyone uses.
    let p = unsafe {
        libc::mprotect(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    };
    if p != 0 {
        return None;
    }
    super::advise_huge_pages(addr, len, huge);
    Some(())
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    /// A window of `pages` pages over address space of the test's own,
    /// returned (and forgotten in the page map) when dropped.
    struct Scratch {
        w: Window,
        start: usize,
        len: usize,
        _stack: Vec<u32>,
    }

    impl Scratch {
        fn new(pages: usize) -> Self {
            let len = pages * SLAB;
            let start = map_none(len, false).expect("address space");
            let mut stack = vec![0u32; pages];
            let w = Window::new(start, len, stack.as_mut_ptr() as usize);
            Scratch {
                w,
                start,
                len,
                _stack: stack,
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            super::super::ranges::note(self.start, self.len, false);
            // SAFETY: the test's own mapping, unused now.
            unsafe { unmap_raw(self.start, self.len) };
        }
    }

    #[test]
    fn a_window_reuses_returned_pages_zeroed_and_refuses_when_full() {
        let (pages, reserve) = (12, 4 * SLAB);
        let mut scratch = Scratch::new(pages);
        let (start, w) = (scratch.start, &mut scratch.w);
        let mut got: Vec<usize> = (0..pages)
            .map(|_| w.carve(reserve, false).expect("room"))
            .collect();
        assert_eq!(
            got,
            (0..pages).map(|k| start + k * SLAB).collect::<Vec<_>>()
        );
        assert_eq!(w.carve(reserve, false), None, "full");
        assert_eq!(w.unused(), 0);
        for &p in &got {
            assert_eq!(super::super::ranges::byte(p), super::super::ranges::OURS);
            // SAFETY: a page of the window, writable, ours.
            unsafe { (p as *mut u8).write_bytes(7, SLAB) };
        }
        let (a, b) = (got[3], got[8]);
        // SAFETY: pages carved above, unused from now on.
        unsafe { w.release(a) };
        // SAFETY: as above.
        unsafe { w.release(b) };
        assert_eq!(super::super::ranges::byte(a), 0, "forgotten");
        assert_eq!(w.unused(), 2 * SLAB);
        assert_eq!(w.carve(reserve, false), Some(b), "the last returned first");
        assert_eq!(w.carve(reserve, false), Some(a));
        assert_eq!(w.carve(reserve, false), None);
        for p in [a, b] {
            // SAFETY: a page of the window, writable, ours.
            let s = unsafe { std::slice::from_raw_parts(p as *const u8, SLAB) };
            assert!(s.iter().all(|&x| x == 0), "a returned page reads zero");
        }
        got.retain(|&p| p != a && p != b);
        // SAFETY: got[0] is untouched by the releases.
        assert_eq!(unsafe { *(got[0] as *const u8) }, 7);
    }

    /// A returned page takes its 2 MiB range out of the huge-page advice,
    /// so that `khugepaged` cannot make the range resident again.
    #[test]
    fn a_returned_page_advises_its_range_against_huge_pages() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            eprintln!(
                "SKIPPED a_returned_page_advises_its_range_against_huge_pages: this kernel \
                 has no transparent huge pages, so madvise leaves no flag to check"
            );
            return;
        }
        let pages = 8;
        let mut scratch = Scratch::new(pages);
        let w = &mut scratch.w;
        let got: Vec<usize> = (0..3)
            .map(|_| w.carve(pages * SLAB, true).expect("room"))
            .collect();
        let flags = |p: usize| super::super::vm_flags(p);
        assert!(flags(got[1]).contains(" hg"), "{}", flags(got[1]));
        // SAFETY: a page carved above, unused from now on.
        unsafe { w.release(got[1]) };
        for p in &got {
            let f = flags(*p);
            assert!(f.contains(" nh") && !f.contains(" hg"), "{f}");
        }
        assert_eq!(w.small_pages[0], 1, "the range is marked");
        assert_eq!(w.carve(pages * SLAB, true), Some(got[1]), "reused as it is");
    }

    #[test]
    fn a_window_commits_a_reservation_at_a_time() {
        let (pages, reserve) = (10, 4 * SLAB);
        let mut scratch = Scratch::new(pages);
        let w = &mut scratch.w;
        w.carve(reserve, false).expect("room");
        assert_eq!((w.committed, w.unused()), (reserve, reserve - SLAB));
        for _ in 1..4 {
            w.carve(reserve, false).expect("room");
        }
        assert_eq!(w.committed, reserve);
        w.carve(reserve, false).expect("room");
        assert_eq!(w.committed, 2 * reserve);
        for _ in 5..10 {
            w.carve(reserve, false).expect("room");
        }
        assert_eq!(
            w.committed,
            pages * SLAB,
            "the last commit is the window's rest"
        );
    }
}
