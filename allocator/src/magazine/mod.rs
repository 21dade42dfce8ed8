//! The per-CPU magazines themselves (`spl_kmem_magazine_t`): a magazine's
//! header and slots, its one-byte lock and the guard that holds it, and
//! [`Mags`], a cache's magazines in one allocation with the table the
//! restartable sequences index by CPU id. What the magazine layer does with
//! them (refill, flush, the fast paths) is in [`crate::magazine`].

use std::ptr::NonNull;
use std::sync::atomic::Ordering;

pub(crate) mod rseq;

use crate::flags::SKM_MAGIC;
use crate::sizing::MAX_MAGAZINE;
use crate::sync::{AtomicBool, AtomicU32, UnsafeCell, spin_wait};

/// One CPU's magazine header (`spl_kmem_magazine_t`), on a cache line of
/// its own, its slots right behind it (as SPL's `skm_objs[]` follows
/// `spl_kmem_magazine_t`), both inside the one allocation of [`Mags`]; its
/// lock byte, size and CPU are kept by [`Mags`].
///
/// All zero bytes are a valid header: a magazine never used, which the
/// restartable sequences find empty and, with a `cap` of 0, full, and
/// which its first user opens ([`MagGuard::open`]). So a cache's magazines
/// are written, and their pages made resident, only on the CPUs that use
/// them: an idle `malloc` size class costs no magazine memory, however
/// many CPUs the machine may have.
///
/// `repr(C)`: the restartable sequences of [`crate::magazine::rseq`] find
/// CPU *n*'s magazine in the table of [`Mags`] and address its fields and
/// slots by offset from there.
#[repr(C, align(64))]
pub(crate) struct Magazine {
    /// [`SKM_MAGIC`] once opened; 0 before.
    magic: AtomicU32,
    avail: AtomicU32,
    /// How far the restartable sequences may fill the magazine: its size
    /// once opened, or 0 — before it is opened, while a lock holder works
    /// on it from another CPU (see [`MagGuard::close`]), and in the
    /// guards — when pushes find it full.
    cap: AtomicU32,
    /// The fill count the background reaper saw on its last pass: one that
    /// finds the same count twice in a row takes the magazine for idle, so
    /// the fast path writes nothing for the reaper (which the seed does
    /// not have: the kernel's shrinker drives its reclaim).
    seen: AtomicU32,
}

#[cfg_attr(
    not(rseq_native),
    allow(dead_code, reason = "used by the rseq sequences only")
)]
impl Magazine {
    pub(crate) const AVAIL_OFFSET: usize = std::mem::offset_of!(Magazine, avail);
    pub(crate) const CAP_OFFSET: usize = std::mem::offset_of!(Magazine, cap);
    pub(crate) const SLOTS_OFFSET: usize = size_of::<Magazine>();
}

impl std::fmt::Debug for Magazine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Magazine")
            .field("opened", &self.opened())
            .field("avail", &self.fill())
            .field("cap", &self.cap.load(Ordering::Relaxed))
            .finish()
    }
}

impl Magazine {
    /// A magazine never used (what zero bytes are, written out for loom,
    /// whose atomics are not plain memory); the guards below CPU 0's
    /// magazine, where a sequence run by a thread without an rseq
    /// registration lands (its CPU id reads -1 or -2) and where a closed
    /// magazine's table entry points, stay so for good.
    fn unused() -> Self {
        Magazine {
            magic: AtomicU32::new(0),
            avail: AtomicU32::new(0),
            cap: AtomicU32::new(0),
            seen: AtomicU32::new(0),
        }
    }

    /// Whether restartable sequences may use the magazine now (racy; for
    /// the slow paths, to tell "locked" or "never opened" from "empty" or
    /// "full").
    pub(crate) fn open(&self) -> bool {
        self.cap.load(Ordering::Relaxed) != 0
    }

    /// Whether the magazine was ever opened (racy until its lock is held).
    /// One that was not holds nothing, and nothing writes it but its
    /// opener.
    pub(crate) fn opened(&self) -> bool {
        self.magic.load(Ordering::Relaxed) == SKM_MAGIC
    }

    /// Objects held now (racy).
    pub(crate) fn fill(&self) -> u32 {
        self.avail.load(Ordering::Relaxed)
    }

    /// Whether the fill count is the one the previous call saw (the
    /// background reaper's idea of "idle for a whole interval": a busy
    /// magazine that happens to show the same count twice is flushed too,
    /// which costs it one refill). Callers skip magazines never opened,
    /// which this would write.
    pub(crate) fn unchanged_since_last_look(&self) -> bool {
        let fill = self.fill();
        self.seen.swap(fill, Ordering::Relaxed) == fill
    }
}

/// A magazine, locked.
pub(crate) struct MagGuard<'a> {
    mags: &'a Mags,
    cpu: usize,
    /// Whether [`Self::close`] pointed the table entry at a guard and set
    /// `cap` to 0 (see `CacheInner::lock_mag`): both restored on unlock.
    closed: bool,
}

impl<'a> MagGuard<'a> {
    /// The magazine's header.
    #[inline(always)]
    fn mag(&self) -> &'a Magazine {
        // SAFETY: cpu < ncpus (checked when the guard was made).
        unsafe { self.mags.get_unchecked(self.cpu) }
    }

    /// Slot `i` (bounds checked in debug builds only; callers pass
    /// `i < avail <= size` or `i < size`).
    #[inline(always)]
    fn cell(&self, i: usize) -> &UnsafeCell<*mut u8> {
        debug_assert!(i < self.mags.size as usize);
        // SAFETY: i < size (callers' contract): inside the magazine's slots.
        let cell = unsafe { self.mags.slots(self.cpu).add(i) };
        // SAFETY: the slots, zero-filled (null) by Mags::new, live as long
        // as the magazines.
        unsafe { cell.as_ref() }
    }

    #[inline(always)]
    fn read(&self, i: usize) -> *mut u8 {
        // SAFETY: we hold the lock, so the slot is not accessed concurrently.
        self.cell(i).with(|p| unsafe { *p })
    }

    #[inline(always)]
    fn write(&mut self, i: usize, v: *mut u8) {
        // SAFETY: we hold the lock, so the slot is not accessed concurrently.
        self.cell(i).with_mut(|p| unsafe { *p = v })
    }

    /// Opens the magazine if it was never opened (its first user's duty,
    /// before it holds anything): the restartable sequences may use it from
    /// now on, up to its size.
    pub(crate) fn open(&mut self) {
        let m = self.mag();
        if !m.opened() {
            // Never closed: `close` leaves an unopened magazine alone.
            debug_assert!(m.fill() == 0 && !self.closed);
            m.magic.store(SKM_MAGIC, Ordering::Relaxed);
            m.cap.store(self.mags.size, Ordering::Relaxed);
        }
    }

    /// Whether the magazine was ever opened.
    pub(crate) fn opened(&self) -> bool {
        self.mag().opened()
    }

    #[inline(always)]
    pub(crate) fn avail(&self) -> u32 {
        self.mag().avail.load(Ordering::Relaxed)
    }

    #[inline(always)]
    pub(crate) fn pop(&mut self) -> Option<NonNull<u8>> {
        let a = self.avail();
        if a == 0 {
            return None;
        }
        let p = self.read(a as usize - 1);
        self.mag().avail.store(a - 1, Ordering::Relaxed);
        // SAFETY: only non-null object pointers are pushed.
        Some(unsafe { NonNull::new_unchecked(p) })
    }

    /// Pushes `p`; false when full. The magazine is open (callers open it
    /// first).
    #[inline(always)]
    pub(crate) fn push(&mut self, p: *mut u8) -> bool {
        debug_assert!(self.opened(), "a push into a magazine never opened");
        let a = self.avail();
        if a >= self.mags.size {
            return false;
        }
        self.write(a as usize, p);
        self.mag().avail.store(a + 1, Ordering::Relaxed);
        true
    }

    /// Removes the `n` oldest objects (the bottom of the stack, as
    /// `spl_cache_flush()` does) and hands each to `f`.
    pub(crate) fn drain_oldest(&mut self, n: u32, mut f: impl FnMut(*mut u8)) -> u32 {
        let a = self.avail();
        let n = n.min(a);
        for i in 0..n as usize {
            f(self.read(i));
        }
        for i in n as usize..a as usize {
            let p = self.read(i);
            self.write(i - n as usize, p);
        }
        self.mag().avail.store(a - n, Ordering::Relaxed);
        n
    }

    /// Copies the held objects out (validation).
    pub(crate) fn objects(&self) -> Vec<*mut u8> {
        (0..self.avail() as usize).map(|i| self.read(i)).collect()
    }

    pub(crate) fn magic(&self) -> u32 {
        self.mag().magic.load(Ordering::Relaxed)
    }

    /// Closes the magazine to the restartable sequences until unlock: its
    /// entry in the table points at a guard (empty, and full with its
    /// `cap` of 0), and its own `cap` is 0 too (for the slow paths'
    /// [`Magazine::open`]). The caller then fences, so no sequence still
    /// runs on the magazine itself. A magazine never opened is closed
    /// already, and is left unwritten.
    pub(crate) fn close(&mut self) {
        if !self.opened() {
            return;
        }
        self.mag().cap.store(0, Ordering::Relaxed);
        self.mags
            .entry(self.cpu)
            .store(self.mags.closed_addr(), Ordering::Relaxed);
        self.closed = true;
    }
}

impl Drop for MagGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.closed {
            let m = self.mag();
            m.cap.store(self.mags.size, Ordering::Relaxed);
            self.mags
                .entry(self.cpu)
                .store(std::ptr::from_ref(m).addr(), Ordering::Relaxed);
        }
        self.mags.locks[self.cpu].store(false, Ordering::Release);
    }
}

/// A cache's magazines: one per possible CPU, their lock bytes, two
/// [`Magazine::unused`] guards, and a table of their addresses (the
/// guards', then each CPU's), which the restartable sequences index by
/// CPU id.
///
/// One allocation holds the magazines: each CPU's header and its `size`
/// slots, rounded up to whole cache lines. A magazine takes `64 + 8·size`
/// bytes, so a 128 KiB cache's 16-slot magazines take 192 bytes a CPU and
/// a 64-byte cache's 256-slot ones 2112 (SPL's `spl_magazine_alloc()`
/// sizes each to its cache the same way). It is zero-filled and nothing
/// writes a CPU's part until that CPU's magazine is opened; the lock
/// bytes, which every CPU's slow paths, reaps and `fork` take, are packed
/// apart from it.
pub(crate) struct Mags {
    /// The allocation, or dangling (and `layout` of size 0) without
    /// magazines.
    mem: NonNull<u8>,
    layout: std::alloc::Layout,
    /// Bytes from one CPU's magazine to the next.
    stride: usize,
    ncpus: usize,
    /// Objects per magazine.
    size: u32,
    /// Objects per refill or flush.
    refill: u32,
    /// Whether `mem` is a mapping of its own ([`MAP_MIN`]) rather than a
    /// block of the global allocator.
    mapped: bool,
    locks: Box<[AtomicBool]>,
    guards: Box<[Magazine]>,
    table: Box<[std::sync::atomic::AtomicUsize]>,
}

/// Magazines of this many bytes or more (those of machines with many CPUs)
/// are a mapping of their own, whose pages the kernel zero-fills on first
/// touch: a global allocator might write a block it hands out, or hand out
/// one already written, and then every CPU's part would be resident.
const MAP_MIN: usize = 16 << 10;

/// Guards below CPU 0's magazine: rseq's "not registered" CPU ids, -1 and -2.
const GUARDS: usize = 2;

// SAFETY: Mags owns the magazines in `mem` (their headers are atomics; the
// slots are only accessed under a lock byte or in an rseq sequence on
// their own CPU); the raw pointer is what keeps the slots' provenance, not
// shared state.
unsafe impl Send for Mags {}
// SAFETY: as above; shared access goes through `&Magazine` and MagGuard.
unsafe impl Sync for Mags {}

impl Mags {
    /// `ncpus` magazines of `size` (none at all when `size` is 0: `KMC_SLAB`).
    pub(crate) fn new(ncpus: usize, size: u32, refill: u32) -> Self {
        assert!(
            size <= MAX_MAGAZINE,
            "magazine size {size} over {MAX_MAGAZINE}"
        );
        let hdr = size_of::<Magazine>();
        let slot = size_of::<UnsafeCell<*mut u8>>();
        let stride = (hdr + slot * size as usize).next_multiple_of(align_of::<Magazine>());
        let bytes = if size == 0 { 0 } else { ncpus * stride };
        let layout = std::alloc::Layout::from_size_align(bytes, align_of::<Magazine>())
            .expect("magazine memory fits a Layout");
        if bytes == 0 {
            return Mags {
                mem: NonNull::dangling(),
                layout,
                stride,
                ncpus: 0,
                size,
                refill,
                mapped: false,
                locks: Box::new([]),
                guards: Box::new([]),
                table: Box::new([]),
            };
        }
        // Zero-filled: all zero bytes are a magazine never used and null
        // slots, so nothing is written here. With an allocator that hands
        // out fresh pages without writing them (the internal one while the
        // classes are built), a CPU's magazine costs no page until that
        // CPU opens it, and a slot's page none until the magazine fills
        // that far.
        let mapped = bytes >= MAP_MIN && !cfg!(any(miri, loom));
        let mem = if mapped {
            // Page aligned, so 64-aligned.
            crate::os::mmap_anon(bytes)
        } else {
            // SAFETY: layout has a non-zero size.
            NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })
        };
        let Some(mem) = mem else {
            std::alloc::handle_alloc_error(layout)
        };
        // loom's atomics and cells keep state of their own and must be
        // built; std's are valid as zero bytes.
        #[cfg(loom)]
        for cpu in 0..ncpus {
            // SAFETY: header and `size` slots of magazine `cpu` lie inside
            // the allocation (cpu·stride + stride <= bytes), 64-aligned,
            // and are written once here before any reader exists.
            let m = unsafe { mem.add(cpu * stride) };
            // SAFETY: see above.
            unsafe { m.cast::<Magazine>().write(Magazine::unused()) };
            // SAFETY: see above.
            let objs = unsafe { m.add(hdr) }.cast::<UnsafeCell<*mut u8>>();
            for i in 0..size as usize {
                // SAFETY: see above.
                let cell = unsafe { objs.add(i) };
                // SAFETY: see above.
                unsafe { cell.write(UnsafeCell::new(std::ptr::null_mut())) };
            }
        }
        let locks = (0..ncpus).map(|_| AtomicBool::new(false)).collect();
        let guards: Box<[Magazine]> = (0..GUARDS).map(|_| Magazine::unused()).collect();
        let table = guards
            .iter()
            .map(|g| std::ptr::from_ref(g).addr())
            // SAFETY: cpu·stride < bytes.
            .chain((0..ncpus).map(|cpu| unsafe { mem.add(cpu * stride) }.addr().get()))
            .map(std::sync::atomic::AtomicUsize::new)
            .collect();
        Mags {
            mem,
            layout,
            stride,
            ncpus,
            size,
            refill,
            mapped,
            locks,
            guards,
            table,
        }
    }

    /// Real magazines (one per possible CPU; 0 without magazines).
    pub(crate) fn len(&self) -> usize {
        self.ncpus
    }

    /// Objects per magazine.
    pub(crate) fn size(&self) -> u32 {
        self.size
    }

    /// Objects per refill or flush.
    pub(crate) fn refill(&self) -> u32 {
        self.refill
    }

    /// CPU `i`'s magazine.
    pub(crate) fn get(&self, i: usize) -> Option<&Magazine> {
        // SAFETY: i < ncpus.
        (i < self.ncpus).then(|| unsafe { self.get_unchecked(i) })
    }

    /// CPU `i`'s magazine, unchecked.
    ///
    /// # Safety
    /// `i < self.len()`.
    #[inline(always)]
    pub(crate) unsafe fn get_unchecked(&self, i: usize) -> &Magazine {
        // SAFETY: i < ncpus (caller); the header, zero-filled (or
        // written, under loom) by new(), is a valid Magazine of atomics,
        // which lives as long as self.
        unsafe { self.header(i).as_ref() }
    }

    /// Where CPU `i`'s magazine header lies (`i < ncpus`).
    #[inline(always)]
    fn header(&self, i: usize) -> NonNull<Magazine> {
        debug_assert!(i < self.ncpus);
        // SAFETY: for i < ncpus the header lies inside the allocation.
        unsafe { self.mem.byte_add(i * self.stride) }.cast()
    }

    /// Slot 0 of CPU `i`'s magazine (`i < ncpus`), with the provenance of
    /// the whole allocation.
    #[inline(always)]
    fn slots(&self, i: usize) -> NonNull<UnsafeCell<*mut u8>> {
        debug_assert!(i < self.ncpus);
        // SAFETY: for i < ncpus the slots lie inside the allocation.
        unsafe {
            self.mem
                .byte_add(i * self.stride + Magazine::SLOTS_OFFSET)
                .cast()
        }
    }

    /// One attempt at CPU `i`'s lock (`i < ncpus`). The magazine may be
    /// one never opened: [`MagGuard::open`] it before pushing.
    #[inline(always)]
    pub(crate) fn try_lock(&self, i: usize) -> Option<MagGuard<'_>> {
        self.locks[i]
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            // Built only when the lock was taken: a guard unlocks on drop.
            .then(|| MagGuard {
                mags: self,
                cpu: i,
                closed: false,
            })
    }

    /// Waits for CPU `i`'s lock (slow paths only: reap, destroy, validate,
    /// fork).
    pub(crate) fn lock(&self, i: usize) -> MagGuard<'_> {
        let mut spins = 0u32;
        loop {
            if let Some(g) = self.try_lock(i) {
                return g;
            }
            spins = spins.saturating_add(1);
            spin_wait(spins);
        }
    }

    /// The real magazines, CPU 0 first.
    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = &Magazine> {
        // SAFETY: i < ncpus.
        (0..self.ncpus).map(|i| unsafe { self.get_unchecked(i) })
    }

    /// CPU `cpu`'s table entry.
    fn entry(&self, cpu: usize) -> &std::sync::atomic::AtomicUsize {
        &self.table[GUARDS + cpu]
    }

    /// What a closed magazine's entry points at: the first guard.
    fn closed_addr(&self) -> usize {
        std::ptr::from_ref(&self.guards[0]).addr()
    }

    /// The table entry of CPU 0, which the sequences index by CPU id (the
    /// guards' entries sit at -1 and -2); 0 without magazines.
    pub(crate) fn rseq_base(&self) -> usize {
        self.table.get(GUARDS).map_or(0, |e| e.as_ptr().addr())
    }
}

impl Drop for Mags {
    fn drop(&mut self) {
        if self.layout.size() == 0 {
            return;
        }
        for i in 0..self.ncpus {
            let size = self.size as usize;
            // SAFETY: the slots of magazine i (valid as zero bytes, or
            // written under loom) are dropped once here, before their
            // header; nothing refers to them past `&mut self`.
            unsafe {
                std::ptr::slice_from_raw_parts_mut(self.slots(i).as_ptr(), size).drop_in_place()
            };
            // SAFETY: as above, the header.
            unsafe { self.header(i).drop_in_place() };
        }
        if self.mapped {
            // SAFETY: mapped in new() with this length; nothing refers to
            // it past `&mut self`.
            unsafe { crate::os::munmap_range(self.mem.as_ptr(), self.layout.size()) };
        } else {
            // SAFETY: allocated in new() with this layout.
            unsafe { std::alloc::dealloc(self.mem.as_ptr(), self.layout) };
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Model checks of the magazine lock protocol with a magazine of 2.
    use super::*;
    use loom::sync::Arc;

    fn sorted(mut v: Vec<usize>) -> Vec<usize> {
        v.sort_unstable();
        v
    }

    /// One CPU's magazine of 2 holding 0x10; `other` runs on a second
    /// thread while this one tries to push 0x20 (try-lock, as the fast
    /// path does). Checks that the magazine and `other`'s result hold 0x10,
    /// and 0x20 when its push went through: nothing lost or duplicated.
    fn race_with_push(other: impl FnOnce(&Mags) -> Vec<usize> + Send + 'static) {
        let mags = Arc::new(Mags::new(1, 2, 1));
        {
            let mut g = mags.try_lock(0).unwrap();
            g.open();
            assert!(g.push(0x10 as *mut u8));
        }
        let m2 = mags.clone();
        let t = loom::thread::spawn(move || other(&m2));
        let pushed = mags
            .try_lock(0)
            .map(|mut g| g.push(0x20 as *mut u8))
            .unwrap_or(false);
        let mut all = t.join().unwrap();
        let held = mags.lock(0).objects();
        assert_eq!(mags.get(0).unwrap().fill() as usize, held.len());
        all.extend(held.into_iter().map(|p| p as usize));
        let want = if pushed { vec![0x10, 0x20] } else { vec![0x10] };
        assert_eq!(sorted(all), want);
    }

    /// An allocator and a freer race on one magazine (as two threads on one
    /// CPU, or one migrated mid-operation): with try-lock and fall-through,
    /// no object is lost or handed out twice.
    #[test]
    fn loom_try_lock_push_pop_conserves_objects() {
        loom::model(|| {
            race_with_push(|m| {
                // Contended: the real code takes from the slabs instead.
                m.try_lock(0)
                    .and_then(|mut g| g.pop())
                    .map(|p| p.as_ptr() as usize)
                    .into_iter()
                    .collect()
            })
        });
    }

    /// A flush (reap/destroy, blocking lock) races with a push.
    #[test]
    fn loom_blocking_flush_and_push_conserve_objects() {
        loom::model(|| {
            race_with_push(|m| {
                let mut out = Vec::new();
                m.lock(0).drain_oldest(u32::MAX, |p| out.push(p as usize));
                out
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pop_is_lifo_and_bounded() {
        let mags = Mags::new(1, 3, 2);
        let m = mags.get(0).unwrap();
        let mut g = mags.try_lock(0).unwrap();
        assert!(mags.try_lock(0).is_none(), "lock is exclusive");
        assert!(
            mags.try_lock(0).is_none(),
            "a failed attempt leaves the lock to its holder"
        );
        assert!(!g.opened() && !m.open(), "a new magazine is not open");
        g.open();
        assert!(g.opened() && m.open());
        for i in 1..=3usize {
            assert!(g.push(std::ptr::without_provenance_mut(i)));
        }
        assert!(!g.push(std::ptr::without_provenance_mut(4)));
        assert_eq!(m.fill(), 3);
        assert_eq!(g.pop().unwrap().as_ptr() as usize, 3);
        let mut out = vec![];
        assert_eq!(g.drain_oldest(1, |p| out.push(p as usize)), 1);
        assert_eq!(out, [1]);
        assert_eq!(g.objects(), [std::ptr::without_provenance_mut(2)]);
        drop(g);
        assert!(!m.unchanged_since_last_look(), "first look: 1, was 0");
        assert!(m.unchanged_since_last_look());
        assert!(mags.try_lock(0).is_some());
    }

    /// Each magazine has room for its own size only, on lines of its own,
    /// and filling one to the brim leaves its neighbours' headers intact.
    #[test]
    fn magazines_are_sized_to_their_cache() {
        for (size, stride) in [(2, 128), (16, 192), (64, 576), (255, 2112), (256, 2112)] {
            let mags = Mags::new(3, size, size.div_ceil(2));
            assert_eq!(mags.stride, stride, "size {size}");
            assert_eq!(mags.layout.size(), 3 * stride, "size {size}");
            for (cpu, m) in mags.iter().enumerate() {
                assert_eq!(std::ptr::from_ref(m).addr() % 64, 0);
                let mut g = mags.try_lock(cpu).unwrap();
                g.open();
                for i in 0..size as usize {
                    assert!(g.push(std::ptr::without_provenance_mut(8 * (cpu * 1000 + i + 1))));
                }
                assert!(
                    !g.push(std::ptr::without_provenance_mut(8)),
                    "full at {size}"
                );
            }
            for (cpu, m) in mags.iter().enumerate() {
                let g = mags.try_lock(cpu).unwrap();
                assert_eq!(
                    (g.magic(), m.fill(), m.cap.load(Ordering::Relaxed)),
                    (SKM_MAGIC, size, size)
                );
                let want: Vec<*mut u8> = (0..size as usize)
                    .map(|i| std::ptr::without_provenance_mut(8 * (cpu * 1000 + i + 1)))
                    .collect();
                assert_eq!(g.objects(), want);
            }
        }
        let none = Mags::new(4, 0, 0);
        assert_eq!(
            (none.len(), none.layout.size(), none.rseq_base()),
            (0, 0, 0)
        );
    }

    /// Pages of `mags`' allocation that are resident (`mincore`).
    #[cfg(not(miri))]
    fn resident_pages(mags: &Mags) -> usize {
        let page = crate::os::page_size();
        let start = mags.mem.as_ptr().addr() & !(page - 1);
        let end = (mags.mem.as_ptr().addr() + mags.layout.size()).next_multiple_of(page);
        let mut vec = vec![0u8; (end - start) / page];
        // SAFETY: [start, end) covers whole pages of the allocation's
        // mapping; vec has one byte per page.
        let r = unsafe {
            libc::mincore(
                std::ptr::without_provenance_mut(start),
                end - start,
                vec.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|&&b| b & 1 != 0).count()
    }

    /// On a machine of many CPUs, a cache's magazines (here 64 of 256
    /// slots, 132 KiB, a mapping of their own) take no resident memory
    /// until a CPU uses its own: opening one makes its page resident, and
    /// only that page.
    #[cfg(not(miri))]
    #[test]
    fn magazines_of_cpus_that_never_use_them_cost_no_memory() {
        let mags = Mags::new(64, 256, 128);
        let before = resident_pages(&mags);
        assert!(
            before <= 1,
            "{before} of {} pages resident before any CPU used its magazine",
            mags.layout.size() / crate::os::page_size()
        );
        {
            let mut g = mags.lock(40);
            g.close();
            drop(g);
            let mut g = mags.lock(41);
            g.open();
            assert!(g.push(std::ptr::without_provenance_mut(64)));
        }
        let after = resident_pages(&mags);
        assert!(
            after <= before + 2,
            "{after} pages resident after one CPU opened its magazine ({before} before)"
        );
    }

    /// A magazine no CPU has opened is all zero bytes, and locking,
    /// closing, reading and unlocking it (what reaps, validation and
    /// `fork` do to every magazine) leave it so: an idle cache's magazines
    /// cost no written memory.
    #[test]
    fn a_magazine_never_opened_is_never_written() {
        let mags = Mags::new(2, 16, 8);
        let zero = |cpu: usize| {
            let start = mags.header(cpu).cast::<u8>().as_ptr();
            // SAFETY: the header and slots of magazine cpu lie inside the
            // allocation, and no one writes them meanwhile (no guard held).
            let bytes = unsafe { std::slice::from_raw_parts(start, mags.stride) };
            bytes.iter().all(|&b| b == 0)
        };
        {
            let mut g = mags.lock(1);
            g.close();
            assert!(g.pop().is_none() && g.objects().is_empty() && !g.opened());
        }
        assert!(zero(0) && zero(1));
        assert!(!mags.get(1).unwrap().open(), "unlocking opened nothing");
        {
            let mut g = mags.lock(0);
            g.open();
            assert!(g.push(std::ptr::without_provenance_mut(64)));
        }
        assert!(!zero(0) && zero(1), "only the magazine opened was written");
    }
}

/// What the call-free part of a free did with an object (the C ABI's
/// `kmem_cache_free` takes each outcome but the first with a jump).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeHit {
    /// In the current CPU's magazine.
    Pushed,
    /// Checked and marked free, but the magazine was full (or the
    /// sequence was interrupted): hand it to
    /// `slabscope::raw::push_refused`.
    Refused,
    /// Not an object the inline path takes (not marked with this cache's
    /// inline tag): nothing was done; free it through
    /// `Cache::free`.
    Miss,
}
