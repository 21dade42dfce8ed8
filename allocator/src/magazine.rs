//! Per-CPU magazines: the allocation fast path. Ports `spl_magazine_*()`,
//! `spl_cache_refill()`, `spl_cache_flush()` and the magazine halves of
//! `spl_kmem_cache_alloc()` / `spl_kmem_cache_free()`.
//!
//! Each cache has one magazine per possible CPU holding up to `size` object
//! pointers (`spl_magazine_size()` or the `magazine_size` tunable). Allocation
//! pops from the current CPU's magazine; when it is empty it is refilled with
//! up to `refill = (size + 1) / 2` objects from the depot or else the slabs,
//! growing the cache when none are free. Free pushes onto the current CPU's
//! magazine; when it is full `refill` objects are flushed to the depot, or
//! when it is full back to their slabs, and empty slabs are reclaimed (see
//! [`crate::depot`], which the seed does not have).
//!
//! # Preemption and migration
//!
//! The seed makes the magazine private to a CPU with `local_irq_disable()`.
//! Userspace has two ways to do the same, chosen per process when the first
//! cache is created (tunable `magazine_rseq`, [`crate::Cache::magazine_protocol`]):
//!
//! - **Restartable sequences** (the default where available: x86_64 Linux,
//!   glibc 2.35+): each operation is one critical section of
//!   [`crate::rseq`] that reads the CPU id, works on that CPU's magazine and
//!   commits with a single store; the kernel aborts it if the thread is
//!   preempted, migrated or signalled before the commit. No atomic
//!   read-modify-write and no lock on the fast path. Work on another CPU's
//!   magazine (reap, destroy, validate) takes the magazine's lock byte and
//!   closes the magazine to the sequences, then `membarrier()` to wait out
//!   sequences already running. Refill and flush move their batch in one
//!   sequence; a flush therefore moves the **newest** objects, three
//!   quarters of the magazine (a sequence may only write before its commit,
//!   so it cannot compact the array from the bottom as the seed's
//!   `spl_cache_flush()` does; `flush_rseq` says why three quarters).
//! - **A one-byte lock** everywhere else (and under valgrind, Miri and
//!   loom): every operation takes the magazine's lock with a single
//!   compare-and-swap (`try_lock`). A thread that reads CPU *n*, is
//!   migrated, and then touches magazine *n* is still correct: it merely
//!   shares magazine *n* with whoever runs there now, and the lock
//!   serialises them.
//!
//! Either way, an operation never waits: when the magazine is busy (its
//! lock is held by a flush or, with the lock protocol, by a preempted
//! owner) allocation takes one object straight from the slabs under the
//! cache lock and free returns the object straight to its slab. The fast
//! path has no syscalls, no timestamps, no heap allocation and no probes.
//! Measured side by side by `cargo xtask bench` (BENCHMARKS.md, the
//! fast-path table), a 64-byte magazine hit costs 0.94 ns per alloc or free
//! with restartable sequences and 7.03 ns with the lock.
//!
//! Lock order: magazine lock, depot lock, cache lock. Code holding the cache
//! lock never waits for a magazine lock.
//!
//! The fill count is an atomic so statistics can read every magazine without
//! locking (racily, like SPL's `skm_avail`).

use std::ops::ControlFlow;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use crate::cache::CacheInner;
use crate::flags::{KM_NOSLEEP, SKM_MAGIC};
use crate::grow::Grow;
use crate::os;
use crate::rseq;
use crate::sizing::MAX_MAGAZINE;
use crate::slab;
use crate::sync::{AtomicBool, AtomicU32, UnsafeCell, spin_wait};
use crate::tunables;

/// One CPU's magazine (`spl_kmem_magazine_t`), on cache lines of its own:
/// this header, then its `size` slots right behind it (as SPL's
/// `skm_objs[]` follows `spl_kmem_magazine_t`), both inside the one
/// allocation of [`Mags`].
///
/// `repr(C)`: the restartable sequences of [`crate::rseq`] find CPU *n*'s
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
    size: u32,
    refill: u32,
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
    not(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom))),
    allow(dead_code, reason = "used by the rseq sequences only")
)]
impl Magazine {
    pub(crate) const AVAIL_OFFSET: usize = std::mem::offset_of!(Magazine, avail);
    pub(crate) const CAP_OFFSET: usize = std::mem::offset_of!(Magazine, cap);
    pub(crate) const SLOTS_OFFSET: usize = size_of::<Magazine>();
}

// SAFETY: the slots are only accessed while `lock` is held (through MagGuard)
// or inside an rseq critical section on the magazine's own CPU (see
// `crate::rseq`); the other fields are atomics or immutable.
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
        // SAFETY: the slots, initialised by Mags::new, live as long as the
        // magazine.
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

/// Most objects one refill or flush moves: `magazine_refill(256)`.
const MAX_REFILL: usize = 128;
/// Most objects one rseq flush moves: three quarters of the largest
/// magazine.
const MAX_FLUSH: usize = 192;
const _: () =
    assert!(MAX_REFILL as u32 >= crate::sizing::magazine_refill(crate::sizing::MAX_MAGAZINE));

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
        // SAFETY: layout has a non-zero size.
        let Some(mem) = NonNull::new(unsafe { std::alloc::alloc(layout) }) else {
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
            // (GUARDS·hdr + cpu·stride + stride <= bytes), 64-aligned, and
            // are written once here before any reader exists.
            let m = unsafe { mem.add(GUARDS * hdr + cpu * stride).cast::<Magazine>() };
            // SAFETY: see above.
            let objs = unsafe {
                m.byte_add(Magazine::SLOTS_OFFSET)
                    .cast::<UnsafeCell<*mut u8>>()
            };
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

/// Why an rseq magazine operation did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Miss {
    /// Nothing to pop, or no room to push.
    Bound,
    /// Locked for work from another CPU, or no rseq registration on this
    /// thread.
    Busy,
    /// Neither: the sequence was aborted (preempted, migrated, signalled).
    Aborted,
}

impl CacheInner {
    /// The magazine of the CPU this thread is on.
    #[inline(always)]
    pub(crate) fn local_mag(&self) -> &Magazine {
        let cpu = os::current_cpu();
        let n = self.mags.len();
        let i = if cpu < n { cpu } else { cpu % n };
        // SAFETY: i < n.
        unsafe { self.mags.get_unchecked(i) }
    }

    /// Why the current CPU's rseq magazine refused an operation; `full`
    /// says whether it was a push (racy: the slow path only picks its
    /// remedy by it, and every remedy is correct in every case).
    fn rseq_miss(&self, full: bool) -> Miss {
        let Some(cpu) = os::rseq_cpu() else {
            return Miss::Busy;
        };
        let Some(mag) = self.mags.get(cpu) else {
            return Miss::Busy;
        };
        if !mag.open() {
            return Miss::Busy;
        }
        let fill = mag.fill();
        if (full && fill >= mag.size) || (!full && fill == 0) {
            Miss::Bound
        } else {
            Miss::Aborted
        }
    }

    /// Takes `mag`'s lock for work that may run on any CPU (flush, reap,
    /// validate): in rseq mode also closes the magazine to the sequences
    /// and waits out those that started before (see [`crate::rseq`]).
    pub(crate) fn lock_mag<'a>(&'a self, mag: &'a Magazine) -> MagGuard<'a> {
        let mut g = mag.lock();
        if self.rseq.is_some() {
            g.close(&self.mags);
            rseq::fence();
        }
        g
    }

    /// Every magazine, locked as by [`Self::lock_mag`] (one fence for all).
    pub(crate) fn lock_all_mags(&self) -> Vec<MagGuard<'_>> {
        let mut guards: Vec<_> = self.mags.iter().map(Magazine::lock).collect();
        if self.rseq.is_some() && !guards.is_empty() {
            guards.iter_mut().for_each(|g| g.close(&self.mags));
            rseq::fence();
        }
        guards
    }

    /// Fast path of `spl_kmem_cache_alloc()` for slab caches.
    #[inline(always)]
    pub(crate) fn mag_alloc(&self, kmflags: u32) -> Option<NonNull<u8>> {
        if let Some(off) = self.rseq {
            return match self.rseq_pop(self.mag_base, off) {
                Some(p) => Some(p),
                None => self.alloc_slow_rseq(kmflags, off),
            };
        }
        self.mag_alloc_locked(kmflags)
    }

    /// One pop from the current CPU's rseq magazine, handed out.
    #[inline(always)]
    fn rseq_pop(&self, base: usize, off: isize) -> Option<NonNull<u8>> {
        // SAFETY: base is this cache's magazine base (Mags::rseq_base: callers
        // pass `mag_base` or `fp.base`) and `off` came from rseq::available()
        // (callers pass `rseq`'s value).
        let p = unsafe { rseq::pop(base, off) };
        NonNull::new(p).map(|p| self.hand_out(p))
    }

    /// [`Self::mag_alloc`] with locked magazines (out of line, so the rseq
    /// path stays small).
    #[inline(never)]
    fn mag_alloc_locked(&self, kmflags: u32) -> Option<NonNull<u8>> {
        if let Some(mut g) = self.local_mag().try_lock()
            && let Some(p) = g.pop()
        {
            return Some(self.hand_out(p));
        }
        self.alloc_slow(kmflags)
    }

    /// A slab object leaves the cache for a caller: its header gets the
    /// cache's mark (one 16-bit store next to the object), which the free
    /// checks.
    #[inline(always)]
    fn hand_out(&self, p: NonNull<u8>) -> NonNull<u8> {
        // SAFETY: p was just taken from this cache's magazine or slabs.
        unsafe { slab::mark_allocated(p.as_ptr(), self.fp.tag) };
        p
    }

    /// One object straight from the slabs (the magazine is busy).
    fn take_one(&self) -> Option<NonNull<u8>> {
        let mut st = self.lock_state();
        self.check_alive(&st);
        st.take_obj(self.debug, &self.name, os::coarse_ms())
    }

    /// The `restart:` loop of `spl_kmem_cache_alloc()` with
    /// `spl_cache_refill()`: refill the local magazine from the slabs, or
    /// grow. `None` only for `KM_NOSLEEP`.
    #[cold]
    fn alloc_slow(&self, kmflags: u32) -> Option<NonNull<u8>> {
        loop {
            let mag = self.local_mag();
            let got = match mag.try_lock() {
                Some(mut g) => {
                    if let Some(p) = g.pop() {
                        return Some(self.hand_out(p));
                    }
                    // The magazine is empty: refill up to `refill` objects.
                    let mut buf = [std::ptr::null_mut::<u8>(); MAX_REFILL];
                    let want = (mag.refill.min(mag.size - g.avail()) as usize).min(MAX_REFILL);
                    let got = self.take_for_refill(&mut buf[..want]);
                    for &p in &buf[..got] {
                        let pushed = g.push(p);
                        debug_assert!(pushed, "refill beyond the magazine's room");
                    }
                    g.pop()
                }
                // Contended: one object straight from the slabs.
                None => self.take_one(),
            };
            if let Some(p) = got {
                return Some(self.hand_out(p));
            }
            if let ControlFlow::Break(r) = self.grow_or_look_again(kmflags) {
                return r;
            }
        }
    }

    /// The end of the `restart:` loop, when no object was found: grow, then
    /// either return (an emergency object, or `None` for `KM_NOSLEEP`) or
    /// look again.
    fn grow_or_look_again(&self, kmflags: u32) -> ControlFlow<Option<NonNull<u8>>> {
        match self.grow(kmflags) {
            Grow::Emergency(p) => ControlFlow::Break(Some(p)),
            Grow::NoMem if kmflags & KM_NOSLEEP != 0 => ControlFlow::Break(None),
            Grow::Again | Grow::NoMem => ControlFlow::Continue(()),
        }
    }

    /// [`Self::alloc_slow`] for rseq magazines, after the fast path's pop
    /// failed.
    #[cold]
    #[inline(never)]
    fn alloc_slow_rseq(&self, kmflags: u32, off: isize) -> Option<NonNull<u8>> {
        loop {
            let got = match self.rseq_miss(false) {
                Miss::Bound => self.refill_rseq(off),
                Miss::Aborted => match self.rseq_pop(self.mag_base, off) {
                    // Handed out already.
                    Some(p) => return Some(p),
                    None => self.take_one(),
                },
                Miss::Busy => self.take_one(),
            };
            if let Some(p) = got {
                return Some(self.hand_out(p));
            }
            if let ControlFlow::Break(r) = self.grow_or_look_again(kmflags) {
                return r;
            }
            if let Some(p) = self.rseq_pop(self.mag_base, off) {
                return Some(p);
            }
        }
    }

    /// Objects for a refill: from the depot when it has any, else from the
    /// slabs (`spl_cache_refill()`'s loop over partial slabs). Returns how
    /// many it put at the front of `out`.
    fn take_for_refill(&self, out: &mut [*mut u8]) -> usize {
        match self.depot.take(out) {
            0 => self.take_from_slabs(out),
            got => got,
        }
    }

    /// Up to `out.len()` objects straight from the slabs, under the cache
    /// lock; returns how many.
    fn take_from_slabs(&self, out: &mut [*mut u8]) -> usize {
        let mut st = self.lock_state();
        self.check_alive(&st);
        st.take_batch(self.debug, &self.name, os::coarse_ms(), out)
    }

    /// `spl_cache_refill()` for rseq magazines: takes up to `refill` objects
    /// from the depot or the slabs, keeps the last for the caller and pushes the rest onto
    /// the current CPU's magazine in one critical section; what does not fit
    /// (the thread migrated to a fuller magazine, or a flush holds it) goes
    /// back to the slabs.
    fn refill_rseq(&self, off: isize) -> Option<NonNull<u8>> {
        // A whole magazine's worth from the depot, pushed straight from it.
        let from_depot = self.depot.take_into(self.mag_size as usize, |objs| {
            // SAFETY: as in rseq_pop; depot objects are free, in no magazine.
            unsafe { rseq::push_batch(self.mag_base, off, objs) }
        });
        if let Some(mine) = from_depot {
            return NonNull::new(mine);
        }
        // The depot was empty: `refill` objects from the slabs.
        let mut buf = [std::ptr::null_mut::<u8>(); MAX_REFILL];
        let want = (self.mag_refill as usize).clamp(1, MAX_REFILL);
        let got = self.take_from_slabs(&mut buf[..want]);
        let mine = NonNull::new(buf[got.checked_sub(1)?])?;
        let rest = &buf[..got - 1];
        // SAFETY: as in rseq_pop; the objects were just taken from the
        // slabs, so no magazine holds them.
        let pushed = unsafe { rseq::push_batch(self.mag_base, off, rest) };
        if pushed < rest.len() {
            // SAFETY: taken from this cache's slabs above and not handed out.
            unsafe { self.free_to_slabs(&rest[pushed..]) };
        }
        Some(mine)
    }

    /// Returns objects straight to their slabs (the magazine is busy or full).
    ///
    /// # Safety
    /// Every object is a live slab object of this cache that no magazine
    /// holds and no caller uses any more.
    #[cold]
    pub(crate) unsafe fn free_to_slabs(&self, objs: &[*mut u8]) {
        let mut st = self.lock_state();
        let now = os::coarse_ms();
        for &p in objs {
            // SAFETY: caller's guarantee.
            unsafe { st.shrink(&self.geo, self.debug, &self.name, self.id(), p, now) };
        }
    }

    /// [`Cache::alloc`](crate::Cache::alloc)'s inline fast path: one pop
    /// from the current CPU's magazine. Only for caches with `fp.base` set
    /// (restartable sequences, no constructor).
    #[inline(always)]
    pub(crate) fn rseq_alloc_fast(&self) -> Option<NonNull<u8>> {
        debug_assert!(self.fp.base == self.mag_base && self.rseq == Some(self.fp.rseq_off));
        self.rseq_pop(self.fp.base, self.fp.rseq_off)
    }

    /// [`Cache::free`](crate::Cache::free)'s inline fast path: when the
    /// header carries `free_tag` — this cache's mark, if its frees may be
    /// inline (restartable sequences, no destructor) — one push.
    /// The one compare also sends emergency objects, `KMC_SLAB` objects,
    /// double frees and foreign pointers to the general path, which sorts
    /// them out. Returns whether the object was freed here.
    ///
    /// # Safety
    /// As `Cache::free`.
    #[inline(always)]
    pub(crate) unsafe fn fast_free(&self, obj: NonNull<u8>) -> bool {
        // Every object is at least 8-aligned; an odd pointer is not one of
        // ours and its header must not be read as a half-word.
        if obj.addr().get() & 1 != 0 {
            return false;
        }
        // SAFETY: obj is an object of this cache (caller), and every object
        // (slab, emergency, KMC_SLAB) has its header right before it; 2-aligned
        // (checked).
        let st = unsafe { slab::state_of(obj.as_ptr()) };
        if st.load(Ordering::Relaxed) != self.fp.free_tag {
            return false;
        }
        debug_assert!(self.fp.base == self.mag_base && self.rseq == Some(self.fp.rseq_off));
        st.store(slab::OBJ_FREE, Ordering::Relaxed);
        // SAFETY: a slab object this cache handed out (its mark), freed by
        // its holder (caller), so no magazine holds it; free_tag matched, so
        // fp.base is the magazine base.
        if !unsafe { rseq::push(self.fp.base, self.fp.rseq_off, obj.as_ptr()) } {
            // SAFETY: as above, checked and marked free.
            unsafe { self.rseq_push_failed(self.fp.rseq_off, obj) };
        }
        true
    }

    /// Magazine half of `spl_kmem_cache_free()`, after the destructor and the
    /// emergency check.
    ///
    /// # Safety
    /// `obj` is a live slab object of this cache, not used after this call.
    #[inline(always)]
    pub(crate) unsafe fn mag_free(&self, obj: NonNull<u8>) {
        // SAFETY: forwarded caller guarantee.
        unsafe { self.check_and_mark_free(obj) };
        if let Some(off) = self.rseq {
            // SAFETY: as in fast_free.
            if !unsafe { rseq::push(self.mag_base, off, obj.as_ptr()) } {
                // SAFETY: forwarded caller guarantee, checked and marked.
                unsafe { self.rseq_push_failed(off, obj) };
            }
            return;
        }
        // SAFETY: forwarded caller guarantee.
        unsafe { self.mag_free_locked(obj) }
    }

    /// The free-time header check of debug caches (see
    /// [`slab::check_free`]); other caches only mark the object free.
    ///
    /// # Safety
    /// As [`Self::mag_free`].
    #[inline(always)]
    unsafe fn check_and_mark_free(&self, obj: NonNull<u8>) {
        if self.debug {
            // SAFETY: obj is a slab object of this cache (caller); when the
            // caller broke that promise the header read is what detects it.
            unsafe { slab::check_free(&self.geo, &self.name, self.fp.tag, obj.as_ptr()) };
        } else {
            // SAFETY: obj is a slab object of this cache (caller).
            unsafe { slab::mark_free(obj.as_ptr()) };
        }
    }

    /// The free of `obj` when its push was refused: flush a full magazine,
    /// push again after an abort, or return the object to its slab.
    ///
    /// # Safety
    /// As [`Self::mag_free`], after the header check.
    #[cold]
    #[inline(never)]
    unsafe fn rseq_push_failed(&self, off: isize, obj: NonNull<u8>) {
        match self.rseq_miss(true) {
            // SAFETY: forwarded caller guarantee.
            Miss::Bound => unsafe { self.flush_rseq(off, obj) },
            // SAFETY: as in fast_free.
            Miss::Aborted if unsafe { rseq::push(self.mag_base, off, obj.as_ptr()) } => {}
            // SAFETY: forwarded caller guarantee.
            Miss::Aborted | Miss::Busy => unsafe { self.free_to_slabs(&[obj.as_ptr()]) },
        }
    }

    /// [`Self::mag_free`] with locked magazines, after the header check.
    ///
    /// # Safety
    /// As [`Self::mag_free`].
    #[inline(never)]
    unsafe fn mag_free_locked(&self, obj: NonNull<u8>) {
        let mag = self.local_mag();
        match mag.try_lock() {
            Some(mut g) => {
                if g.push(obj.as_ptr()) {
                    return;
                }
                // Full: flush the `refill` oldest objects to the depot or
                // their slabs, then push.
                let mut buf = [std::ptr::null_mut::<u8>(); MAX_REFILL];
                let n = mag.refill.min(MAX_REFILL as u32);
                let mut k = 0;
                g.drain_oldest(n, |p| {
                    buf[k] = p;
                    k += 1;
                });
                let pushed = g.push(obj.as_ptr());
                debug_assert!(pushed);
                drop(g);
                // SAFETY: drained from the magazine, so ours to give up.
                unsafe { self.put_away(&buf[..k]) };
            }
            // Contended: straight back to the slab.
            // SAFETY: forwarded caller guarantee.
            None => unsafe { self.free_to_slabs(&[obj.as_ptr()]) },
        }
    }

    /// `spl_cache_flush()` for rseq magazines, on a full magazine: pops
    /// three quarters of it off the **top** in one critical section,
    /// straight into the depot (into a buffer and to the slabs when the
    /// depot is full), then pushes `obj`.
    ///
    /// The seed flushes the `refill` (half) *oldest* objects; a sequence may
    /// only write before its commit, so it cannot compact the array and
    /// pops the newest instead. Popping only half the newest left the
    /// magazine holding the oldest objects and interleaved the order of
    /// the rest through the depot: with 1000 live 4 KiB objects in LIFO
    /// churn that swung between 3.1 and 6.8 ns/op from run to run; three
    /// quarters gave 1.9 (BENCHMARKS.md; a whole magazine gave 2.0, and
    /// keeping the newest half with two more sequences 2.3, and 64 B churn
    /// at 250 live objects slowed from 1.37 to 1.57 ns/op against half).
    ///
    /// # Safety
    /// As [`Self::mag_free`].
    #[cold]
    #[inline(never)]
    unsafe fn flush_rseq(&self, off: isize, obj: NonNull<u8>) {
        let want = (self.mag_size as usize * 3).div_ceil(4).clamp(1, MAX_FLUSH);
        // Popped straight into the depot when it has room.
        let into_depot = self.depot.put_from(want, |room| {
            // SAFETY: as in rseq_pop.
            unsafe { rseq::pop_batch(self.mag_base, off, room) }
        });
        if into_depot.is_some() {
            // SAFETY: as in fast_free.
            if unsafe { rseq::push(self.mag_base, off, obj.as_ptr()) } {
                return;
            }
            // SAFETY: the caller's object, not in any magazine.
            return unsafe { self.put_away(&[obj.as_ptr()]) };
        }
        let mut buf = [std::mem::MaybeUninit::<*mut u8>::uninit(); MAX_FLUSH + 1];
        // SAFETY: as in rseq_pop.
        let mut k = unsafe { rseq::pop_batch(self.mag_base, off, &mut buf[..want]) };
        // SAFETY: as in fast_free.
        if !unsafe { rseq::push(self.mag_base, off, obj.as_ptr()) } {
            buf[k].write(obj.as_ptr());
            k += 1;
        }
        // SAFETY: pop_batch initialised buf[..k] (and obj the last, if
        // pushed there); MaybeUninit<T> has T's layout.
        let objs = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<*mut u8>(), k) };
        // SAFETY: the popped objects left the magazine in the committed
        // sequence; obj is the caller's.
        unsafe { self.put_away(objs) };
    }

    /// Where a flush of a full magazine sends its objects: the depot, then
    /// what does not fit to the slabs, which then unmap the empty slabs
    /// idle for `slab_reclaim_delay_ms` (unlike the seed, which unmaps at
    /// once: an allocation burst right after would map them again).
    ///
    /// # Safety
    /// Every object is a live slab object of this cache, free, in no
    /// magazine, and the caller gives it up.
    unsafe fn put_away(&self, objs: &[*mut u8]) {
        let kept = self.depot.put(objs);
        if kept < objs.len() {
            // SAFETY: caller's guarantee; the depot did not keep these.
            unsafe { self.free_to_slabs(&objs[kept..]) };
            self.slab_reclaim(tunables::current().slab_reclaim_delay_ms);
        }
    }

    /// `spl_cache_flush()`: returns up to `n` of the magazine's oldest objects
    /// to their slabs. Returns how many.
    pub(crate) fn flush(&self, g: &mut MagGuard<'_>, n: u32) -> u32 {
        if g.avail() == 0 || n == 0 {
            return 0;
        }
        debug_assert_eq!(g.magic(), SKM_MAGIC);
        let mut st = self.lock_state();
        let now = os::coarse_ms();
        let (geo, debug, name, id) = (&self.geo, self.debug, &self.name, self.id());
        // SAFETY: magazines hold only live slab objects of this cache.
        g.drain_oldest(n, |p| unsafe { st.shrink(geo, debug, name, id, p, now) })
    }

    /// Flushes every magazine entirely (destroy; the background reaper with
    /// `only_idle`). Returns objects flushed.
    pub(crate) fn flush_all(&self, only_idle: bool) -> u64 {
        let mut n = 0;
        for mag in self.mags.iter() {
            if only_idle && !mag.unchanged_since_last_look() {
                continue;
            }
            if mag.fill() == 0 {
                continue;
            }
            let mut g = self.lock_mag(mag);
            n += u64::from(self.flush(&mut g, u32::MAX));
        }
        n
    }

    /// Per-CPU fill, CPU 0 first (racy).
    pub(crate) fn mag_fill(&self) -> impl Iterator<Item = u32> + '_ {
        self.mags.iter().map(Magazine::fill)
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

    /// An allocator and a freer race on one magazine (as two threads on one
    /// CPU, or one migrated mid-operation): with try-lock and fall-through,
    /// no object is lost or handed out twice.
    #[test]
    fn loom_try_lock_push_pop_conserves_objects() {
        loom::model(|| {
            let mags = Arc::new(Mags::new(1, 2, 1));
            let m = mags.get(0).unwrap();
            assert!(m.try_lock().unwrap().push(0x10 as *mut u8));
            let m2 = mags.clone();
            let popper = loom::thread::spawn(move || {
                // Contended: the real code takes from the slabs instead.
                m2.get(0)
                    .unwrap()
                    .try_lock()
                    .and_then(|mut g| g.pop())
                    .map(|p| p.as_ptr() as usize)
            });
            let pushed = m
                .try_lock()
                .map(|mut g| g.push(0x20 as *mut u8))
                .unwrap_or(false);
            let popped = popper.join().unwrap();
            let mut held: Vec<usize> = m.lock().objects().into_iter().map(|p| p as usize).collect();
            held.extend(popped);
            let mut want = vec![0x10];
            if pushed {
                want.push(0x20);
            }
            assert_eq!(sorted(held), want);
            assert_eq!(m.fill() as usize, m.lock().objects().len());
        });
    }

    /// A flush (reap/destroy, blocking lock) races with a push.
    #[test]
    fn loom_blocking_flush_and_push_conserve_objects() {
        loom::model(|| {
            let mags = Arc::new(Mags::new(1, 2, 1));
            let m = mags.get(0).unwrap();
            assert!(m.try_lock().unwrap().push(0x10 as *mut u8));
            let m2 = mags.clone();
            let flusher = loom::thread::spawn(move || {
                let mut out = Vec::new();
                m2.get(0)
                    .unwrap()
                    .lock()
                    .drain_oldest(u32::MAX, |p| out.push(p as usize));
                out
            });
            let pushed = m
                .try_lock()
                .map(|mut g| g.push(0x20 as *mut u8))
                .unwrap_or(false);
            let mut all = flusher.join().unwrap();
            all.extend(m.lock().objects().into_iter().map(|p| p as usize));
            let mut want = vec![0x10];
            if pushed {
                want.push(0x20);
            }
            assert_eq!(sorted(all), want);
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
