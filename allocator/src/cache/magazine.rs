//! Per-CPU magazines: the allocation fast path. Ports `spl_magazine_*()`,
//! `spl_cache_refill()`, `spl_cache_flush()` and the magazine halves of
//! `spl_kmem_cache_alloc()` / `spl_kmem_cache_free()`.
//!
//! Each cache has one magazine per possible CPU holding up to `size` object
//! pointers (`spl_magazine_size()` or the `magazine_size` tunable). Allocation
//! pops from the current CPU's magazine; when it is empty it is refilled
//! from the depot (a whole magazine's worth with restartable sequences,
//! `refill = (size + 1) / 2` objects with the lock) or else with `refill`
//! objects from the slabs, growing the cache when none are free. Free
//! pushes onto the current CPU's magazine; when it is full a flush moves
//! objects (three quarters of the magazine with restartable sequences,
//! `refill` with the lock) to the depot, and what the depot has no room
//! for back to their slabs, whose empty ones are then reclaimed (see
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
//!   [`crate::magazine::rseq`] that reads the CPU id, works on that CPU's magazine and
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

use super::CacheInner;
use super::grow::Grow;
use crate::flags::{KM_NOSLEEP, SKM_MAGIC};
use crate::magazine::{FreeHit, MagGuard, Magazine, rseq};
use crate::os;
use crate::slab::{self, SlabState};
use crate::tunables;

/// Most objects one refill or flush moves: `magazine_refill(256)`.
const MAX_REFILL: usize = 128;
/// Most objects one rseq flush moves: three quarters of the largest
/// magazine.
const MAX_FLUSH: usize = 192;
const _: () =
    assert!(MAX_REFILL as u32 >= crate::sizing::magazine_refill(crate::sizing::MAX_MAGAZINE));

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
    /// The index of the magazine of the CPU this thread is on.
    #[inline(always)]
    pub(crate) fn local_mag(&self) -> usize {
        let cpu = os::current_cpu();
        let n = self.mags.len();
        if cpu < n { cpu } else { cpu % n }
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
        if !mag.opened() {
            // This CPU's first use of the magazine: open it (unless a
            // reap or fork holds it), then look again.
            match self.mags.try_lock(cpu) {
                Some(mut g) => g.open(),
                None => return Miss::Busy,
            }
        }
        if !mag.open() {
            return Miss::Busy;
        }
        let fill = mag.fill();
        if (full && fill >= self.mags.size()) || (!full && fill == 0) {
            Miss::Bound
        } else {
            Miss::Aborted
        }
    }

    /// Takes CPU `cpu`'s magazine lock for work that may run on any CPU
    /// (flush, reap, validate): in rseq mode also closes the magazine to
    /// the sequences and waits out those that started before (see
    /// [`crate::magazine::rseq`]). A magazine never opened stays unwritten.
    pub(crate) fn lock_mag(&self, cpu: usize) -> MagGuard<'_> {
        let mut g = self.mags.lock(cpu);
        if self.rseq.is_some() && g.opened() {
            g.close();
            rseq::fence();
        }
        g
    }

    /// Every magazine, locked as by [`Self::lock_mag`] (one fence for all).
    pub(crate) fn lock_all_mags(&self) -> Vec<MagGuard<'_>> {
        let mut guards: Vec<_> = (0..self.mags.len()).map(|i| self.mags.lock(i)).collect();
        if self.rseq.is_some() && !guards.is_empty() {
            for g in &mut guards {
                g.close();
            }
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
        if let Some(mut g) = self.mags.try_lock(self.local_mag())
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
        if self.fp.headerless {
            // SAFETY: p was just taken from this headerless cache's
            // magazine or slabs.
            unsafe { slab::hl_mark_allocated(p.as_ptr()) };
        } else {
            // SAFETY: p was just taken from this cache's magazine or slabs.
            unsafe { slab::mark_allocated(p.as_ptr(), self.fp.tag) };
        }
        p
    }

    /// One object straight from the slabs (the magazine is busy).
    fn take_one(&self) -> Option<NonNull<u8>> {
        let mut st = self.lock_state();
        self.check_alive(&st);
        st.take_obj(&self.geo, self.debug, &self.name, os::coarse_ms())
    }

    /// The `restart:` loop of `spl_kmem_cache_alloc()` with
    /// `spl_cache_refill()`: refill the local magazine from the slabs, or
    /// grow. `None` only for `KM_NOSLEEP`.
    #[cold]
    fn alloc_slow(&self, kmflags: u32) -> Option<NonNull<u8>> {
        loop {
            let got = match self.mags.try_lock(self.local_mag()) {
                Some(mut g) => {
                    if let Some(p) = g.pop() {
                        return Some(self.hand_out(p));
                    }
                    // The magazine is empty: refill up to `refill` objects.
                    g.open();
                    let mut buf = [std::ptr::null_mut::<u8>(); MAX_REFILL];
                    let room = self.mags.size() - g.avail();
                    let want = (self.mags.refill().min(room) as usize).min(MAX_REFILL);
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
        st.take_batch(&self.geo, self.debug, &self.name, os::coarse_ms(), out)
    }

    /// `spl_cache_refill()` for rseq magazines: takes up to a whole
    /// magazine's worth from the depot, or else up to `refill` objects from
    /// the slabs, keeps the last for the caller and pushes the rest onto
    /// the current CPU's magazine in one critical section. What does not
    /// fit (the thread migrated to a fuller magazine, or a flush holds it)
    /// stays in the depot, or goes back to the slabs.
    fn refill_rseq(&self, off: isize) -> Option<NonNull<u8>> {
        // What other CPUs freed of this CPU's objects first: they go back
        // to the CPU that used them (see `crate::inbox`).
        if let Some(p) = self.refill_from_inbox(off) {
            return Some(p);
        }
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
        // SAFETY: forwarded caller guarantee.
        unsafe { self.shrink_all(&mut st, objs, os::coarse_ms()) };
    }

    /// Returns `objs` to their slabs at time `now`, under the lock `st`
    /// holds.
    ///
    /// # Safety
    /// As [`Self::free_to_slabs`].
    unsafe fn shrink_all(&self, st: &mut SlabState, objs: &[*mut u8], now: u64) {
        for &p in objs {
            // SAFETY: caller's guarantee.
            unsafe { st.shrink(&self.geo, self.debug, &self.name, self.id(), p, now) };
        }
    }

    /// [`Cache::alloc`](crate::Cache::alloc)'s inline fast path: one pop
    /// from the current CPU's magazine. Only for caches with `fp.base` set
    /// (restartable sequences, no constructor).
    /// Headerless caches keep `fp.base` 0, so this marks the header with
    /// the tag without asking which kind of object it is.
    #[inline(always)]
    pub(crate) fn rseq_alloc_fast(&self) -> Option<NonNull<u8>> {
        debug_assert!(self.fp.base == self.mag_base && self.rseq == Some(self.fp.rseq_off));
        debug_assert!(!self.fp.headerless);
        // SAFETY: fp.base is this cache's magazine base and fp.rseq_off
        // rseq's offset (both set together when the inline paths are on).
        let p = NonNull::new(unsafe { rseq::pop(self.fp.base, self.fp.rseq_off) })?;
        // SAFETY: p was just popped from this (headered) cache's magazine.
        unsafe { slab::mark_allocated(p.as_ptr(), self.fp.tag) };
        Some(p)
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
        // SAFETY: forwarded caller guarantee.
        match unsafe { self.free_hit(obj) } {
            FreeHit::Pushed => true,
            FreeHit::Refused => {
                // SAFETY: free_hit checked and marked it, and it is in no
                // magazine.
                unsafe { self.rseq_push_failed(self.fp.rseq_off, obj) };
                true
            }
            FreeHit::Miss => false,
        }
    }

    /// The call-free part of [`Self::fast_free`], for callers that take
    /// the slow paths themselves (the C ABI, whose exported free jumps to
    /// them): checks the mark, marks the object free and pushes it.
    ///
    /// # Safety
    /// As `Cache::free`.
    #[inline(always)]
    pub(crate) unsafe fn free_hit(&self, obj: NonNull<u8>) -> FreeHit {
        // Every object is at least 8-aligned; an odd pointer is not one of
        // ours and its header must not be read as a half-word.
        // A free_tag of 0 is an inline free that is off: the word before
        // the object may hold anything (a header-less object's neighbour,
        // an unbuilt object's zero).
        if obj.addr().get() & 1 != 0 || self.fp.free_tag == 0 {
            return FreeHit::Miss;
        }
        // SAFETY: obj is an object of this cache (caller), and every object
        // (slab, emergency, KMC_SLAB) has its header right before it; 2-aligned
        // (checked).
        let st = unsafe { slab::state_of(obj.as_ptr()) };
        if st.load(Ordering::Relaxed) != self.fp.free_tag {
            return FreeHit::Miss;
        }
        debug_assert!(self.fp.base == self.mag_base && self.rseq == Some(self.fp.rseq_off));
        st.store(slab::OBJ_FREE, Ordering::Relaxed);
        // SAFETY: a slab object this cache handed out (its mark), freed by
        // its holder (caller), so no magazine holds it; free_tag matched, so
        // fp.base is the magazine base.
        if unsafe { rseq::push(self.fp.base, self.fp.rseq_off, obj.as_ptr()) } {
            FreeHit::Pushed
        } else {
            FreeHit::Refused
        }
    }

    /// For `crate::kmem`'s inline free, which checked and marked `obj` and
    /// pushed it with this cache's fast-path fields itself: the rest of
    /// [`Self::fast_free`] when that push was refused.
    ///
    /// # Safety
    /// `obj` is a slab object this cache handed out, marked free since by
    /// its holder's free, in no magazine.
    #[cold]
    pub(crate) unsafe fn push_refused(&self, obj: NonNull<u8>) {
        let off = self.rseq.expect("a refused push was an rseq push");
        // SAFETY: forwarded caller guarantee.
        unsafe { self.rseq_push_failed(off, obj) }
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
            unsafe {
                slab::check_free(&self.geo, &self.name, self.id(), self.fp.tag, obj.as_ptr())
            };
        } else if self.fp.headerless {
            // SAFETY: obj is a slab object of this headerless cache (caller).
            unsafe { slab::hl_mark_free(obj.as_ptr()) };
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
        match self.mags.try_lock(self.local_mag()) {
            Some(mut g) => {
                g.open();
                if g.push(obj.as_ptr()) {
                    return;
                }
                // Full: flush the `refill` oldest objects to the depot or
                // their slabs, then push.
                let mut buf = [std::ptr::null_mut::<u8>(); MAX_REFILL];
                let n = self.mags.refill().min(MAX_REFILL as u32);
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
    pub(super) unsafe fn put_away(&self, objs: &[*mut u8]) {
        let kept = self.depot.put(objs);
        if kept < objs.len() {
            let delay = tunables::current().slab_reclaim_delay_ms;
            // One hold of the lock returns the objects and looks for idle
            // empty slabs, with one reading of the clock.
            let mut st = self.lock_state();
            let now = os::coarse_ms();
            // SAFETY: caller's guarantee; the depot did not keep these.
            unsafe { self.shrink_all(&mut st, &objs[kept..], now) };
            let r = st.unlink_empty(&self.geo, delay, now);
            self.release_reclaimed(st, r);
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
        for (cpu, mag) in self.mags.iter().enumerate() {
            // One never opened holds nothing (and looking would write it).
            if !mag.opened() || (only_idle && !mag.unchanged_since_last_look()) {
                continue;
            }
            if mag.fill() == 0 {
                continue;
            }
            let mut g = self.lock_mag(cpu);
            n += u64::from(self.flush(&mut g, u32::MAX));
        }
        n
    }

    /// Per-CPU fill, CPU 0 first (racy).
    pub(crate) fn mag_fill(&self) -> impl Iterator<Item = u32> + '_ {
        self.mags.iter().map(Magazine::fill)
    }
}
