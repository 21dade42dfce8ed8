//! The cache's use of its [`Depot`](crate::depot::Depot) and its
//! [`Inboxes`](crate::inbox::Inboxes): draining them back into the slabs
//! (reap, destroy, the idle reaper), and the inboxes' two ends: a free on
//! a CPU other than the object's home, and a refill that takes what came
//! home. The containers themselves are `crate::depot` and `crate::inbox`.

use std::ptr::NonNull;

use super::CacheInner;
use crate::inbox::{Push, Taken};
use crate::magazine::rseq;

/// Most objects one inbox holds: an inbox's limit is the magazine size,
/// which is at most this.
const MAX_INBOX: usize = crate::sizing::MAX_MAGAZINE as usize;
const _: () = assert!(crate::sizing::MAX_MAGAZINE <= crate::inbox::MAX_LIMIT);

/// Hands `f` the objects of `taken`, a chain out of one of this cache's
/// inboxes (at most its limit, plus the object of a push that found it
/// full), as a slice.
///
/// # Safety
/// `taken` came from this cache's inboxes, and no one else uses its
/// objects.
unsafe fn with_chain<R>(taken: Taken, f: impl FnOnce(&[*mut u8]) -> R) -> R {
    let mut buf = [std::ptr::null_mut::<u8>(); MAX_INBOX + 1];
    // SAFETY: forwarded caller guarantee; an inbox holds at most the
    // magazine size, and a full push's chain one more.
    let n = unsafe { taken.collect(&mut buf) };
    f(&buf[..n])
}

impl CacheInner {
    /// Returns every depot object to its slab (reap, destroy, the idle
    /// reaper). Returns how many.
    pub(crate) fn drain_depot(&self) -> usize {
        self.depot.drain(|objs| {
            // SAFETY: depot objects are live slab objects of this cache,
            // free, in no magazine; drained, so the depot no longer has them.
            unsafe { self.free_to_slabs(objs) };
        })
    }

    /// Returns every inbox's objects to their slabs (reap, destroy, the
    /// idle reaper). Returns how many.
    pub(crate) fn drain_inboxes(&self) -> usize {
        let mut total = 0;
        for home in 0..self.inbox.homes() {
            let taken = self.inbox.take_and_open(home);
            if taken.is_empty() {
                continue;
            }
            total += taken.len();
            // SAFETY: inbox objects are free slab objects of this cache,
            // in no magazine, and taken out of the inbox.
            let back = |objs: &[*mut u8]| unsafe { self.free_to_slabs(objs) };
            // SAFETY: a chain from this cache's inbox, ours alone now.
            unsafe { with_chain(taken, back) };
        }
        total
    }

    /// The free of an object whose header names `home`, on another CPU:
    /// into `home`'s inbox, or, when that is full, with its objects to the
    /// depot and the slabs. When the inbox is closed, or this cache has
    /// no inbox for `home` (a header written by someone else), the object
    /// goes where it would without homes: the current CPU's magazine.
    ///
    /// # Safety
    /// `obj` is a live slab object of this cache, checked and marked
    /// free, in no magazine, not used after this call.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn free_foreign(&self, obj: NonNull<u8>, home: usize) {
        let pushed = if home < self.inbox.homes() {
            // SAFETY: home is in range; obj is free, ours alone (caller);
            // the magazine size is within the inbox's count.
            unsafe { self.inbox.push(home, obj.as_ptr(), self.mag_size) }
        } else {
            Push::Closed
        };
        match pushed {
            Push::Queued => {}
            Push::Full(taken) => {
                // SAFETY: free slab objects of this cache, out of every
                // inbox.
                let away = |objs: &[*mut u8]| unsafe { self.put_away(objs) };
                // SAFETY: a chain the push took from this cache's inbox,
                // ours alone.
                unsafe { with_chain(taken, away) };
            }
            Push::Closed => {
                let off = self.rseq.expect("homes are for rseq magazines");
                // SAFETY: as in fast_free (off and mag_base are this
                // cache's); obj is free, in no magazine.
                if !unsafe { rseq::push(self.mag_base, off, obj.as_ptr()) } {
                    // SAFETY: forwarded caller guarantee.
                    unsafe { self.push_refused(obj) };
                }
            }
        }
    }

    /// A refill from the current CPU's inbox: one object for the caller,
    /// the rest pushed on the CPU's magazine (what does not fit goes to
    /// the depot and the slabs). `None` when the inbox is empty.
    pub(crate) fn refill_from_inbox(&self, off: isize) -> Option<NonNull<u8>> {
        if self.inbox.homes() == 0 {
            return None;
        }
        let home = rseq::cpu_id(off) as usize % crate::slab::HOMES;
        let taken = self.inbox.take(home);
        if taken.is_empty() {
            return None;
        }
        let refill = |objs: &[*mut u8]| {
            let (&mine, rest) = objs.split_first()?;
            // SAFETY: as in rseq_pop (off and mag_base are this cache's);
            // inbox objects are free, in no magazine.
            let pushed = unsafe { rseq::push_batch(self.mag_base, off, rest) };
            if pushed < rest.len() {
                // SAFETY: taken from the inbox and not pushed anywhere.
                unsafe { self.put_away(&rest[pushed..]) };
            }
            NonNull::new(mine)
        };
        // SAFETY: a chain from this cache's inbox, ours alone now.
        unsafe { with_chain(taken, refill) }
    }
}
