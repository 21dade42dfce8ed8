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

/// One CPU's magazine (`spl_kmem_magazine_t`), on cache lines of its own:
/// this header, then its `size` slots right behind it (as SPL's
/// `skm_objs[]` follows `spl_kmem_magazine_t`), both inside the one
/// allocation of [`Mags`].
///
/// `repr(C)`: the restartable sequences of [`crate::magazine::rseq`] find CPU *n*'s
/// magazine in the table of [`Mags`] and address its fields and slots by
/// offset from there.
#[repr(C, align(64))]
pub(crate) struct Magazine {
    lock: AtomicBool,
    magic: u32,
    avail: AtomicU32,
    /// How far the restartable sequences may fill the magazine: `size`, or
    /// 0 while the lock holder works on it from another CPU (see
    /// [`MagGuard::close`]) and in the guards, which pushes then find full.
    cap: AtomicU32,
    pub(super) size: u32,
    pub(super) refill: u32,
    cpu: u32,
    /// The fill count the background reaper saw on its last pass: one that
    /// finds the same count twice in a row takes the magazine for idle, so
    /// the fast path writes nothing for the reaper (which the seed does
    /// not have: the kernel's shrinker drives its reclaim).
    seen: AtomicU32,
    /// Slot 0, at [`Self::SLOTS_OFFSET`] from the header; a pointer so the
    /// slots are reached with the provenance of the whole allocation.
    objs: NonNull<UnsafeCell<*mut u8>>,
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

// SAFETY: the slots are only accessed while `lock` is held (through MagGuard)
// or inside an rseq critical section on the magazine's own CPU (see
// `crate::magazine::rseq`); the other fields are atomics or immutable.
unsafe impl Sync for Magazine {}
// SAFETY: the object pointers are plain addresses owned by the cache.
unsafe impl Send for Magazine {}

impl std::fmt::Debug for Magazine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Magazine")
            .field("cpu", &self.cpu)
            .field("avail", &self.fill())
            .field("size", &self.size)
            .finish()
    }
}

impl Magazine {
    /// `spl_magazine_alloc()`'s header, for slots at `objs`.
    fn new(cpu: u32, size: u32, refill: u32, objs: NonNull<UnsafeCell<*mut u8>>) -> Self {
        assert!(
            size <= MAX_MAGAZINE,
            "magazine size {size} over {MAX_MAGAZINE}"
        );
        Magazine {
            lock: AtomicBool::new(false),
            magic: SKM_MAGIC,
            avail: AtomicU32::new(0),
            cap: AtomicU32::new(size),
            size,
            refill,
            cpu,
            seen: AtomicU32::new(0),
            objs,
        }
    }

    /// A magazine that holds nothing, has no slots and is never unlocked:
    /// the guards below CPU 0's magazine, where a sequence run by a thread
    /// without an rseq registration lands (its CPU id reads -1 or -2).
    fn guard() -> Self {
        let m = Magazine::new(u32::MAX, 0, 0, NonNull::dangling());
        m.lock.store(true, Ordering::Relaxed);
        m
    }

    /// Whether restartable sequences may use the magazine now (racy; for
    /// the slow paths, to tell "locked" from "empty" or "full").
    pub(crate) fn open(&self) -> bool {
        self.cap.load(Ordering::Relaxed) != 0
    }

    /// Objects held now (racy).
    pub(crate) fn fill(&self) -> u32 {
        self.avail.load(Ordering::Relaxed)
    }

    /// One attempt at the lock.
    #[inline(always)]
    pub(crate) fn try_lock(&self) -> Option<MagGuard<'_>> {
        if self
            .lock
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            Some(MagGuard {
                mag: self,
                closed: None,
            })
        } else {
            None
        }
    }

    /// Waits for the lock (slow paths only: reap, destroy, validate).
    pub(crate) fn lock(&self) -> MagGuard<'_> {
        let mut spins = 0u32;
        loop {
            if let Some(g) = self.try_lock() {
                return g;
            }
            spins = spins.saturating_add(1);
            spin_wait(spins);
        }
    }

    /// Whether the fill count is the one the previous call saw (the
    /// background reaper's idea of "idle for a whole interval": a busy
    /// magazine that happens to show the same count twice is flushed too,
    /// which costs it one refill).
    pub(crate) fn unchanged_since_last_look(&self) -> bool {
        let fill = self.fill();
        self.seen.swap(fill, Ordering::Relaxed) == fill
    }
}

/// The magazine, locked.
pub(crate) struct MagGuard<'a> {
    mag: &'a Magazine,
    /// The table entry that [`Self::close`] pointed at a guard and `cap`
    /// set to 0 (see [`CacheInner::lock_mag`]): both restored on unlock.
    closed: Option<&'a std::sync::atomic::AtomicUsize>,
}

impl<'a> MagGuard<'a> {
    /// Slot `i` (bounds checked in debug builds only; callers pass
    /// `i < avail <= size` or `i < size`).
    #[inline(always)]
    fn cell(&self, i: usize) -> &UnsafeCell<*mut u8> {
        debug_assert!(i < self.mag.size as usize);
        // SAFETY: i < size (callers' contract): inside the magazine's slots.
        let cell = unsafe { self.mag.objs.add(i) };
        // SAFETY: the slots, initialised by Mags::new (zero-filled: null),
        // live as long as the magazine.
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

    #[inline(always)]
    pub(crate) fn avail(&self) -> u32 {
        self.mag.avail.load(Ordering::Relaxed)
    }

    #[inline(always)]
    pub(crate) fn pop(&mut self) -> Option<NonNull<u8>> {
        let a = self.avail();
        if a == 0 {
            return None;
        }
        let p = self.read(a as usize - 1);
        self.mag.avail.store(a - 1, Ordering::Relaxed);
        // SAFETY: only non-null object pointers are pushed.
        Some(unsafe { NonNull::new_unchecked(p) })
    }

    /// Pushes `p`; false when full.
    #[inline(always)]
    pub(crate) fn push(&mut self, p: *mut u8) -> bool {
        let a = self.avail();
        if a >= self.mag.size {
            return false;
        }
        self.write(a as usize, p);
        self.mag.avail.store(a + 1, Ordering::Relaxed);
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
        self.mag.avail.store(a - n, Ordering::Relaxed);
        n
    }

    /// Copies the held objects out (validation).
    pub(crate) fn objects(&self) -> Vec<*mut u8> {
        (0..self.avail() as usize).map(|i| self.read(i)).collect()
    }

    pub(crate) fn magic(&self) -> u32 {
        self.mag.magic
    }

    /// Closes the magazine to the restartable sequences until unlock: its
    /// entry in `mags`' table points at a guard (empty, and full with its
    /// `cap` of 0), and its own `cap` is 0 too (for the slow paths'
    /// [`Magazine::open`]). The caller then fences, so no sequence still
    /// runs on the magazine itself.
    pub(crate) fn close(&mut self, mags: &'a Mags) {
        self.mag.cap.store(0, Ordering::Relaxed);
        let entry = mags.entry(self.mag.cpu);
        entry.store(mags.closed_addr(), Ordering::Relaxed);
        self.closed = Some(entry);
    }
}

impl Drop for MagGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(entry) = self.closed {
            self.mag.cap.store(self.mag.size, Ordering::Relaxed);
            entry.store(std::ptr::from_ref(self.mag).addr(), Ordering::Relaxed);
        }
        self.mag.lock.store(false, Ordering::Release);
    }
}

/// A cache's magazines: one per possible CPU, after two [`Magazine::guard`]s,
/// and a table of their addresses in the same order, which the restartable
/// sequences index by CPU id.
///
/// One allocation holds them all: the guards' headers, then each CPU's
/// header and its `size` slots, rounded up to whole cache lines. A
/// magazine takes `64 + 8·size` bytes, so a 128 KiB cache's 16-slot
/// magazines take 192 bytes a CPU and a 64-byte cache's 256-slot ones
/// 2112 (SPL's `spl_magazine_alloc()` sizes each to its cache the same way).
pub(crate) struct Mags {
    /// The allocation, or dangling (and `layout` of size 0) without
    /// magazines.
    mem: NonNull<u8>,
    layout: std::alloc::Layout,
    /// Bytes from one CPU's magazine to the next.
    stride: usize,
    ncpus: usize,
    table: Box<[std::sync::atomic::AtomicUsize]>,
}

/// Guards below CPU 0's magazine: rseq's "not registered" CPU ids, -1 and -2.
const GUARDS: usize = 2;

// SAFETY: Mags owns the magazines in `mem` (Magazine is Send and Sync); the
// raw pointer is what keeps the slots' provenance, not shared state.
unsafe impl Send for Mags {}
// SAFETY: as above; shared access goes through `&Magazine`.
unsafe impl Sync for Mags {}

impl Mags {
    /// `ncpus` magazines of `size` (none at all when `size` is 0: `KMC_SLAB`).
    pub(crate) fn new(ncpus: usize, size: u32, refill: u32) -> Self {
        let hdr = size_of::<Magazine>();
        let slot = size_of::<UnsafeCell<*mut u8>>();
        let stride = (hdr + slot * size as usize).next_multiple_of(align_of::<Magazine>());
        let bytes = if size == 0 {
            0
        } else {
            GUARDS * hdr + ncpus * stride
        };
        let layout = std::alloc::Layout::from_size_align(bytes, align_of::<Magazine>())
            .expect("magazine memory fits a Layout");
        if bytes == 0 {
            return Mags {
                mem: NonNull::dangling(),
                layout,
                stride,
                ncpus: 0,
                table: Box::new([]),
            };
        }
        // Zero-filled: a null slot is all zero bytes, so the slots need no
        // writing here, and a magazine reads no slot above its fill count,
        // which starts at 0. With an allocator that hands out fresh pages
        // without writing them (the internal one while the classes are
        // built), only the pages holding headers are touched; a slot's page
        // is first written when the magazine fills that far.
        // SAFETY: layout has a non-zero size.
        let Some(mem) = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }) else {
            std::alloc::handle_alloc_error(layout)
        };
        let mut table = Vec::with_capacity(GUARDS + ncpus);
        for g in 0..GUARDS {
            // SAFETY: g·hdr + hdr <= bytes; 64-aligned (hdr is a multiple of
            // the alignment); written once, before any reader exists.
            let m = unsafe { mem.add(g * hdr).cast::<Magazine>() };
            // SAFETY: see above.
            unsafe { m.write(Magazine::guard()) };
            table.push(std::sync::atomic::AtomicUsize::new(m.addr().get()));
        }
        for cpu in 0..ncpus {
            // SAFETY: the header and `size` slots lie inside the allocation
            // (GUARDS·hdr + cpu·stride + stride <= bytes), 64-aligned; the
            // header is written once here before any reader exists, the
            // slots are null already (zero-filled allocation).
            let m = unsafe { mem.add(GUARDS * hdr + cpu * stride).cast::<Magazine>() };
            // SAFETY: see above.
            let objs = unsafe {
                m.byte_add(Magazine::SLOTS_OFFSET)
                    .cast::<UnsafeCell<*mut u8>>()
            };
            // std's `UnsafeCell<*mut u8>` is a pointer, valid as zero bytes
            // (null); loom's keeps state of its own and must be built.
            #[cfg(loom)]
            for i in 0..size as usize {
                // SAFETY: see above.
                let cell = unsafe { objs.add(i) };
                // SAFETY: see above.
                unsafe { cell.write(UnsafeCell::new(std::ptr::null_mut())) };
            }
            // SAFETY: see above.
            unsafe { m.write(Magazine::new(cpu as u32, size, refill, objs)) };
            table.push(std::sync::atomic::AtomicUsize::new(m.addr().get()));
        }
        Mags {
            mem,
            layout,
            stride,
            ncpus,
            table: table.into_boxed_slice(),
        }
    }

    /// Real magazines (one per possible CPU; 0 without magazines).
    pub(crate) fn len(&self) -> usize {
        self.ncpus
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
        // SAFETY: magazine i (i < ncpus, caller) was written by new() and
        // lives as long as self.
        unsafe { self.mag_ptr(i).as_ref() }
    }

    /// Where CPU `i`'s magazine header lies (`i < ncpus`).
    #[inline(always)]
    fn mag_ptr(&self, i: usize) -> NonNull<Magazine> {
        debug_assert!(i < self.ncpus);
        // SAFETY: for i < ncpus the header lies inside the allocation.
        unsafe {
            self.mem
                .byte_add(GUARDS * size_of::<Magazine>() + i * self.stride)
        }
        .cast()
    }

    /// The real magazines, CPU 0 first.
    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = &Magazine> {
        // SAFETY: i < ncpus.
        (0..self.ncpus).map(|i| unsafe { self.get_unchecked(i) })
    }

    /// CPU `cpu`'s table entry.
    fn entry(&self, cpu: u32) -> &std::sync::atomic::AtomicUsize {
        &self.table[GUARDS + cpu as usize]
    }

    /// What a closed magazine's entry points at: the first guard.
    fn closed_addr(&self) -> usize {
        self.mem.addr().get()
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
        for g in 0..GUARDS {
            // SAFETY: guard g's header lies inside the allocation.
            let m = unsafe { self.mem.add(g * size_of::<Magazine>()) }.cast::<Magazine>();
            // SAFETY: written by new(), dropped once here.
            unsafe { m.drop_in_place() };
        }
        for i in 0..self.ncpus {
            let m = self.mag_ptr(i);
            // SAFETY: i < ncpus; written by new(), and no reference to it
            // outlives `&mut self`.
            let hdr = unsafe { m.as_ref() };
            let (objs, size) = (hdr.objs, hdr.size as usize);
            // SAFETY: the slots were written by new() and are dropped once
            // here, before their header.
            unsafe { std::ptr::slice_from_raw_parts_mut(objs.as_ptr(), size).drop_in_place() };
            // SAFETY: as above.
            unsafe { m.drop_in_place() };
        }
        // SAFETY: allocated in new() with this layout.
        unsafe { std::alloc::dealloc(self.mem.as_ptr(), self.layout) };
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
    fn race_with_push(other: impl FnOnce(&Magazine) -> Vec<usize> + Send + 'static) {
        let mags = Arc::new(Mags::new(1, 2, 1));
        let m = mags.get(0).unwrap();
        assert!(m.try_lock().unwrap().push(0x10 as *mut u8));
        let m2 = mags.clone();
        let t = loom::thread::spawn(move || other(m2.get(0).unwrap()));
        let pushed = m
            .try_lock()
            .map(|mut g| g.push(0x20 as *mut u8))
            .unwrap_or(false);
        let mut all = t.join().unwrap();
        let held = m.lock().objects();
        assert_eq!(m.fill() as usize, held.len());
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
                m.try_lock()
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
                m.lock().drain_oldest(u32::MAX, |p| out.push(p as usize));
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
        let mut g = m.try_lock().unwrap();
        assert!(m.try_lock().is_none(), "lock is exclusive");
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
        assert!(m.try_lock().is_some());
    }

    /// Each magazine has room for its own size only, on lines of its own,
    /// and filling one to the brim leaves its neighbours' headers intact.
    #[test]
    fn magazines_are_sized_to_their_cache() {
        for (size, stride) in [(2, 128), (16, 192), (64, 576), (255, 2112), (256, 2112)] {
            let mags = Mags::new(3, size, size.div_ceil(2));
            assert_eq!(mags.stride, stride, "size {size}");
            assert_eq!(mags.layout.size(), GUARDS * 64 + 3 * stride, "size {size}");
            for (cpu, m) in mags.iter().enumerate() {
                assert_eq!(std::ptr::from_ref(m).addr() % 64, 0);
                let mut g = m.try_lock().unwrap();
                for i in 0..size as usize {
                    assert!(g.push(std::ptr::without_provenance_mut(8 * (cpu * 1000 + i + 1))));
                }
                assert!(
                    !g.push(std::ptr::without_provenance_mut(8)),
                    "full at {size}"
                );
            }
            for (cpu, m) in mags.iter().enumerate() {
                let g = m.try_lock().unwrap();
                assert_eq!(
                    (g.magic(), m.cpu, m.size, m.fill()),
                    (SKM_MAGIC, cpu as u32, size, size)
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
