//! Inboxes: free objects waiting for the CPU they belong to. Not in the
//! seed, whose magazines keep whatever their CPU frees.
//!
//! A per-CPU magazine reuses every object its CPU frees. When threads
//! hand objects to one another and both allocate (a server that passes
//! its requests on, larson's arrays), the freeing CPU reuses the other's
//! objects, and the two CPUs' objects end up side by side in the same
//! cache lines: each CPU's writes then take lines from the other's cache
//! (bench/ANALYSIS.md, "Larson's two readings", measured this at a third
//! of larson's gap to jemalloc). mimalloc sends such an object back to
//! the page it came from; a cache with inboxes sends it back to its
//! *home*, the CPU that allocated it, which the object's header names
//! (`slab::home_of`).
//!
//! Each home has an inbox: a lock-free stack of objects linked through
//! their first word, its top and its length packed into one word, so a
//! push is one compare-and-swap and the home takes the whole stack with
//! one swap, when its magazine runs empty (before the depot and the
//! slabs). Taking everything at once is what makes the stack safe
//! without tags: a push links its object onto the top it read and
//! publishes it with an exchange that succeeds only while that is still
//! the top, so the link is right whatever happened in between; the
//! ABA problem of lock-free stacks is a pop's, and there is no pop of
//! one object here.
//!
//! An inbox holds at most `limit` objects (the cache's magazine size, so
//! an inbox costs what one more magazine would): the push that would
//! pass it takes the stack instead, and its caller returns those objects
//! to the depot and the slabs. The cache's reaps and destroy drain every
//! inbox the same way, so a home that never allocates again strands
//! nothing. Objects in an inbox count as allocated from the slabs and
//! held in magazines (`mag_objs`), like the depot's.
//!
//! An inbox also *closes*. Sending objects home pays when the home frees
//! its own objects too, and reuses the ones that come back beside them.
//! A home that only allocates, while another CPU only frees (a producer
//! and a consumer), gains nothing from it, and pays: it takes its objects
//! back by walking their chain, a cache miss on each link that the next
//! cannot overlap (twice the time per object of the magazines and the
//! depot, measured with `workloads/queue.c`). When such a home falls
//! behind, its inbox fills: the push that finds it full closes it, and
//! frees elsewhere keep their objects, as without homes, for the home's
//! next [`REOPEN_AFTER`] refills (or until a reap drains and reopens
//! every inbox). A program whose threads swap work now and then (larson
//! hands its arrays on each round) sends a few objects home between two
//! refills of their home, and its inboxes stay open. So does a producer
//! that keeps up, taking short chains often: it still pays for the walks
//! (a third slower than without homes; bench/ANALYSIS.md), which a better
//! rule, or a chain taken without a walk, would spare it.

// Under loom the size classes (`crate::kmem`), the inboxes' only users,
// are not built; the loom model below still exercises the container.
#![cfg_attr(loom, allow(dead_code))]

use std::sync::atomic::Ordering;

use crate::sync::AtomicU64;

/// Bits of a packed word that hold the top object's address (user-space
/// addresses fit in 48 bits on x86_64 and aarch64, as object headers also
/// assume). The length takes the next 9, the home's refills since the
/// inbox closed the next 6, and the top bit says closed.
const ADDR_BITS: u32 = 48;
const ADDR_MASK: u64 = (1 << ADDR_BITS) - 1;
const LEN_BITS: u32 = 9;
const REFILLS_SHIFT: u32 = ADDR_BITS + LEN_BITS;
const REFILLS_MASK: u64 = 0x3f << REFILLS_SHIFT;
const CLOSED: u64 = 1 << 63;

/// Most objects an inbox can count (its length field's width).
pub(crate) const MAX_LIMIT: u32 = (1 << LEN_BITS) - 1;

/// Refills of its home after which a closed inbox opens again.
pub(crate) const REOPEN_AFTER: u64 = 32;
const _: () = assert!(REOPEN_AFTER <= REFILLS_MASK >> REFILLS_SHIFT);

fn pack(top: *mut u8, len: u32) -> u64 {
    debug_assert!(top.addr() as u64 <= ADDR_MASK && len <= MAX_LIMIT);
    top.expose_provenance() as u64 | u64::from(len) << ADDR_BITS
}

fn top_of(word: u64) -> *mut u8 {
    std::ptr::with_exposed_provenance_mut((word & ADDR_MASK) as usize)
}

fn len_of(word: u64) -> u32 {
    ((word >> ADDR_BITS) & u64::from(MAX_LIMIT)) as u32
}

fn refills_of(word: u64) -> u64 {
    (word & REFILLS_MASK) >> REFILLS_SHIFT
}

/// What [`Inboxes::push`] did.
#[derive(Debug)]
pub(crate) enum Push {
    /// The object waits in the inbox.
    Queued,
    /// The inbox was full: here are its objects, the pushed one on top,
    /// for the caller to hand on.
    Full(Taken),
    /// The inbox is closed: the object was not taken.
    Closed,
}

/// Objects taken out of an inbox: a chain linked through each object's
/// first word, `len` long.
#[derive(Debug)]
pub(crate) struct Taken {
    top: *mut u8,
    len: u32,
}

impl Taken {
    /// Nothing taken.
    pub(crate) const EMPTY: Taken = Taken {
        top: std::ptr::null_mut(),
        len: 0,
    };

    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the objects into `out` (which must hold [`Self::len`]),
    /// the most recently pushed first, and returns how many.
    ///
    /// # Safety
    /// The chain came from [`Inboxes::take`] or [`Inboxes::push`]: each
    /// object's first word links to the next, and no one else uses them.
    pub(crate) unsafe fn collect(self, out: &mut [*mut u8]) -> usize {
        let n = self.len();
        assert!(
            out.len() >= n,
            "inbox chain of {n} into room for {}",
            out.len()
        );
        let mut p = self.top;
        for slot in &mut out[..n] {
            *slot = p;
            // SAFETY: a chained object (caller): its first word is the
            // link, written before the push that published it.
            p = unsafe { p.cast::<*mut u8>().read() };
        }
        n
    }
}

/// One inbox per home CPU (none for a cache without homes).
pub(crate) struct Inboxes {
    heads: Box<[AtomicU64]>,
}

impl std::fmt::Debug for Inboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inboxes")
            .field("homes", &self.homes())
            .field("len", &self.len())
            .finish()
    }
}

impl Inboxes {
    /// `homes` inboxes, all empty (0: the cache has none).
    pub(crate) fn new(homes: usize) -> Self {
        Inboxes {
            heads: (0..homes).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(crate) fn homes(&self) -> usize {
        self.heads.len()
    }

    /// Objects in all inboxes now (racy: for statistics).
    pub(crate) fn len(&self) -> usize {
        self.heads
            .iter()
            .map(|h| len_of(h.load(Ordering::Relaxed)) as usize)
            .sum()
    }

    /// Puts `obj` in home `home`'s inbox. When it holds `limit` objects
    /// already, takes them instead, closes the inbox and returns them with
    /// `obj` on top: the caller hands them on (to the depot or the slabs).
    /// A closed inbox takes nothing.
    ///
    /// # Safety
    /// `home < self.homes()`; `obj` is a free object of this cache, in no
    /// magazine, inbox or depot, that no one else uses; its first word is
    /// writable; `1 <= limit <= MAX_LIMIT`.
    pub(crate) unsafe fn push(&self, home: usize, obj: *mut u8, limit: u32) -> Push {
        let head = &self.heads[home];
        let mut old = head.load(Ordering::Relaxed);
        loop {
            if old & CLOSED != 0 {
                return Push::Closed;
            }
            let len = len_of(old);
            // SAFETY: obj is ours alone until the exchange publishes it
            // (caller); its first word is the link.
            unsafe { obj.cast::<*mut u8>().write(top_of(old)) };
            let new = if len >= limit {
                CLOSED
            } else {
                pack(obj, len + 1)
            };
            // Release: the home that takes obj sees its link. Acquire on
            // a full stack: its objects' links, for the caller to walk.
            match head.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) if new == CLOSED => {
                    return Push::Full(Taken {
                        top: obj,
                        len: len + 1,
                    });
                }
                Ok(_) => return Push::Queued,
                Err(now) => old = now,
            }
        }
    }

    /// Takes everything in home `home`'s inbox (its home's refill); a
    /// closed one counts the refill, and opens at the [`REOPEN_AFTER`]th.
    pub(crate) fn take(&self, home: usize) -> Taken {
        let Some(head) = self.heads.get(home) else {
            return Taken::EMPTY;
        };
        let mut old = head.load(Ordering::Relaxed);
        loop {
            if old & CLOSED != 0 {
                // Closed: counting the home's refills to the one that
                // reopens it (once; a lost race only delays that).
                let n = refills_of(old) + 1;
                let new = if n >= REOPEN_AFTER {
                    0
                } else {
                    CLOSED | n << REFILLS_SHIFT
                };
                let _ = head.compare_exchange(old, new, Ordering::Relaxed, Ordering::Relaxed);
                return Taken::EMPTY;
            }
            if old == 0 {
                return Taken::EMPTY;
            }
            // Acquire: the pushes' links.
            match head.compare_exchange_weak(old, 0, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => {
                    return Taken {
                        top: top_of(old),
                        len: len_of(old),
                    };
                }
                Err(now) => old = now,
            }
        }
    }

    /// Takes everything in home `home`'s inbox and opens it (the cache's
    /// reaps and destroy).
    pub(crate) fn take_and_open(&self, home: usize) -> Taken {
        let Some(head) = self.heads.get(home) else {
            return Taken::EMPTY;
        };
        if head.load(Ordering::Relaxed) == 0 {
            return Taken::EMPTY;
        }
        // Acquire: the pushes' links.
        let word = head.swap(0, Ordering::Acquire);
        Taken {
            top: top_of(word),
            len: len_of(word),
        }
    }

    /// Whether home `home`'s inbox is closed (tests).
    #[cfg(test)]
    pub(crate) fn is_closed(&self, home: usize) -> bool {
        self.heads[home].load(Ordering::Relaxed) & CLOSED != 0
    }

    /// Hands `f` each home's objects as they are now, without taking them
    /// (validation); stops at the first error `f` returns.
    ///
    /// # Safety
    /// Nothing takes from the inboxes meanwhile, and no object the walk
    /// reaches is reused: the caller holds what every taker and every
    /// user of a full inbox's objects needs (the magazine locks, the
    /// depot and the cache lock).
    pub(crate) unsafe fn peek<E>(
        &self,
        mut f: impl FnMut(usize, *mut u8) -> Result<(), E>,
    ) -> Result<(), E> {
        for (home, head) in self.heads.iter().enumerate() {
            let word = head.load(Ordering::Acquire);
            let mut p = top_of(word);
            for _ in 0..len_of(word) {
                f(home, p)?;
                // SAFETY: a chained object, not reused meanwhile (caller).
                p = unsafe { p.cast::<*mut u8>().read() };
            }
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Objects for the tests: 8-aligned words, each an object's first word.
    fn objs(n: usize) -> Vec<[usize; 2]> {
        vec![[0usize; 2]; n]
    }

    fn ptr(b: &mut [usize; 2]) -> *mut u8 {
        b.as_mut_ptr().cast()
    }

    #[test]
    fn a_home_takes_what_was_pushed_newest_first() {
        let ib = Inboxes::new(2);
        let mut o = objs(3);
        let p: Vec<*mut u8> = o.iter_mut().map(ptr).collect();
        for &q in &p {
            // SAFETY: test objects, ours, first word writable.
            assert!(matches!(unsafe { ib.push(1, q, 8) }, Push::Queued));
        }
        assert_eq!(ib.len(), 3);
        assert!(ib.take(0).is_empty(), "home 0 got nothing");
        assert!(ib.take(7).is_empty(), "no home 7");
        let t = ib.take(1);
        assert_eq!(t.len(), 3);
        let mut out = [std::ptr::null_mut(); 3];
        // SAFETY: a chain from take.
        assert_eq!(unsafe { t.collect(&mut out) }, 3);
        assert_eq!(out, [p[2], p[1], p[0]]);
        assert_eq!(ib.len(), 0);
        assert!(ib.take(1).is_empty() && !ib.is_closed(1));
    }

    #[test]
    fn the_push_past_the_limit_takes_the_stack() {
        let ib = Inboxes::new(1);
        let mut o = objs(4);
        let p: Vec<*mut u8> = o.iter_mut().map(ptr).collect();
        for &q in &p[..3] {
            // SAFETY: as above.
            assert!(matches!(unsafe { ib.push(0, q, 3) }, Push::Queued));
        }
        let mut seen = Vec::new();
        // SAFETY: nothing else uses the inbox.
        let walked = unsafe {
            ib.peek(|h, q| {
                seen.push((h, q));
                Ok::<(), ()>(())
            })
        };
        assert_eq!(walked, Ok(()));
        assert_eq!(seen, [(0, p[2]), (0, p[1]), (0, p[0])]);
        // SAFETY: as above.
        let Push::Full(t) = (unsafe { ib.push(0, p[3], 3) }) else {
            panic!("full: the pusher takes it");
        };
        assert_eq!((t.len(), ib.len()), (4, 0));
        let mut out = [std::ptr::null_mut(); 4];
        // SAFETY: a chain from push.
        unsafe { t.collect(&mut out) };
        assert_eq!(out, [p[3], p[2], p[1], p[0]]);
    }

    #[test]
    fn a_full_inbox_closes_until_its_home_refills_enough() {
        let ib = Inboxes::new(1);
        let mut o = objs(4);
        let p: Vec<*mut u8> = o.iter_mut().map(ptr).collect();
        for &q in &p[..2] {
            // SAFETY: as above.
            assert!(matches!(unsafe { ib.push(0, q, 2) }, Push::Queued));
        }
        // SAFETY: as above.
        let Push::Full(t) = (unsafe { ib.push(0, p[2], 2) }) else {
            panic!("full at 2");
        };
        assert_eq!(t.len(), 3);
        assert!(ib.is_closed(0) && ib.len() == 0);
        // SAFETY: as above.
        assert!(matches!(unsafe { ib.push(0, p[3], 2) }, Push::Closed));
        for _ in 1..REOPEN_AFTER {
            assert!(ib.take(0).is_empty() && ib.is_closed(0), "stays closed");
        }
        assert!(ib.take(0).is_empty() && !ib.is_closed(0), "reopened");
        // SAFETY: as above.
        assert!(matches!(unsafe { ib.push(0, p[3], 2) }, Push::Queued));
        assert_eq!(ib.take(0).len(), 1);
        // A reap's take opens at once.
        for &q in &p[..3] {
            // SAFETY: as above.
            let _ = unsafe { ib.push(0, q, 2) };
        }
        assert!(ib.is_closed(0));
        assert!(ib.take_and_open(0).is_empty() && !ib.is_closed(0));
    }

    /// Threads push and a home takes at once: every object comes out
    /// exactly once, through a take or a full inbox.
    #[test]
    fn concurrent_pushes_and_takes_lose_nothing() {
        const PER: usize = if cfg!(miri) { 300 } else { 20_000 };
        let ib = Inboxes::new(1);
        let mut o = objs(2 * PER);
        let addrs: Vec<usize> = o.iter_mut().map(|b| ptr(b).expose_provenance()).collect();
        let out = std::sync::Mutex::new(Vec::new());
        let done = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for half in addrs.chunks(PER) {
                let (ib, out, done) = (&ib, &out, &done);
                s.spawn(move || {
                    for &a in half {
                        let q = std::ptr::with_exposed_provenance_mut::<u8>(a);
                        // SAFETY: each test object is pushed once.
                        match unsafe { ib.push(0, q, 64) } {
                            Push::Queued => {}
                            Push::Full(t) => {
                                let mut buf = vec![std::ptr::null_mut(); t.len()];
                                // SAFETY: a chain from push.
                                unsafe { t.collect(&mut buf) };
                                out.lock().unwrap().extend(buf.iter().map(|p| p.addr()));
                            }
                            // Not taken: the pusher keeps it.
                            Push::Closed => out.lock().unwrap().push(a),
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
            s.spawn(|| {
                loop {
                    let finished = done.load(Ordering::SeqCst) == 2;
                    let t = ib.take_and_open(0);
                    let mut buf = vec![std::ptr::null_mut(); t.len()];
                    // SAFETY: a chain from take.
                    unsafe { t.collect(&mut buf) };
                    out.lock().unwrap().extend(buf.iter().map(|p| p.addr()));
                    if finished {
                        break;
                    }
                }
            });
        });
        let mut got = out.into_inner().unwrap();
        got.sort_unstable();
        let mut want = addrs;
        want.sort_unstable();
        // Compared here, not printed whole when they differ.
        assert!(
            got == want,
            "{} objects out of {} pushed",
            got.len(),
            want.len()
        );
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    /// Two CPUs push into one home's inbox (of room for one) while the
    /// home takes: every object ends up exactly once with someone (the
    /// home, a pusher that found it full or closed, or the inbox).
    #[test]
    fn loom_inbox_pushes_and_a_take_lose_nothing() {
        loom::model(|| {
            let ib = loom::sync::Arc::new(Inboxes::new(1));
            let objs: Vec<usize> = (0..2)
                .map(|_| Box::into_raw(Box::new([0usize; 2])).expose_provenance())
                .collect();
            let pushers: Vec<_> = objs
                .iter()
                .map(|&a| {
                    let ib = ib.clone();
                    loom::thread::spawn(move || {
                        let q = std::ptr::with_exposed_provenance_mut::<u8>(a);
                        // SAFETY: each object is pushed once, by this thread.
                        match unsafe { ib.push(0, q, 1) } {
                            Push::Queued => Vec::new(),
                            Push::Full(t) => {
                                let mut out = vec![std::ptr::null_mut(); t.len()];
                                // SAFETY: a chain from push.
                                unsafe { t.collect(&mut out) };
                                out.iter().map(|p| p.addr()).collect()
                            }
                            Push::Closed => vec![a],
                        }
                    })
                })
                .collect();
            let mut got = Vec::new();
            let t = ib.take(0);
            let mut out = vec![std::ptr::null_mut(); t.len()];
            // SAFETY: a chain from take.
            unsafe { t.collect(&mut out) };
            got.extend(out.iter().map(|p| p.addr()));
            for p in pushers {
                got.extend(p.join().unwrap());
            }
            let t = ib.take_and_open(0);
            let mut out = vec![std::ptr::null_mut(); t.len()];
            // SAFETY: a chain from take_and_open.
            unsafe { t.collect(&mut out) };
            got.extend(out.iter().map(|p| p.addr()));
            got.sort_unstable();
            let mut want = objs.clone();
            want.sort_unstable();
            assert_eq!(got, want);
            for a in objs {
                // SAFETY: made by Box::into_raw above, out of every inbox.
                drop(unsafe {
                    Box::from_raw(std::ptr::with_exposed_provenance_mut::<[usize; 2]>(a))
                });
            }
        });
    }
}
