//! The slab lists: an intrusive doubly linked list of slab headers.

use std::ptr;

use super::Slab;

/// An intrusive doubly linked list of slabs (`struct list_head`).
#[derive(Debug)]
pub(crate) struct SlabList {
    pub(super) head: *mut Slab,
    pub(super) tail: *mut Slab,
    pub(super) len: u64,
}

impl SlabList {
    pub(super) const fn new() -> Self {
        SlabList {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            len: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// # Safety
    /// `s` is a live slab on no list.
    pub(super) unsafe fn push_front(&mut self, s: *mut Slab) {
        // SAFETY: s is live and unlinked; no other reference to it exists.
        let sl = unsafe { &mut *s };
        sl.prev = ptr::null_mut();
        sl.next = self.head;
        if self.head.is_null() {
            self.tail = s;
        } else {
            // SAFETY: head is a live slab of this list, distinct from s.
            unsafe { (*self.head).prev = s };
        }
        self.head = s;
        self.len += 1;
    }

    /// # Safety
    /// `s` is a live slab on no list.
    pub(super) unsafe fn push_back(&mut self, s: *mut Slab) {
        // SAFETY: s is live and unlinked; no other reference to it exists.
        let sl = unsafe { &mut *s };
        sl.next = ptr::null_mut();
        sl.prev = self.tail;
        if self.tail.is_null() {
            self.head = s;
        } else {
            // SAFETY: tail is a live slab of this list, distinct from s.
            unsafe { (*self.tail).next = s };
        }
        self.tail = s;
        self.len += 1;
    }

    /// # Safety
    /// `s` is a live slab on this list.
    pub(super) unsafe fn remove(&mut self, s: *mut Slab) {
        // SAFETY: s is a live slab of this list.
        let sl = unsafe { &mut *s };
        let (p, n) = (sl.prev, sl.next);
        sl.prev = ptr::null_mut();
        sl.next = ptr::null_mut();
        if p.is_null() {
            self.head = n;
        } else {
            // SAFETY: p is s's live neighbour on this list.
            unsafe { (*p).next = n };
        }
        if n.is_null() {
            self.tail = p;
        } else {
            // SAFETY: n is s's live neighbour on this list.
            unsafe { (*n).prev = p };
        }
        self.len -= 1;
    }

    /// # Safety
    /// `s` is a live slab on this list.
    pub(super) unsafe fn move_to_back(&mut self, s: *mut Slab) {
        // SAFETY: s is on this list (caller).
        unsafe { self.remove(s) };
        // SAFETY: s is live and now unlinked.
        unsafe { self.push_back(s) };
    }

    /// Raw iteration, head to tail. The list must not change meanwhile.
    pub(super) fn iter(&self) -> impl Iterator<Item = *mut Slab> + '_ {
        let mut cur = self.head;
        std::iter::from_fn(move || {
            if cur.is_null() {
                return None;
            }
            let s = cur;
            // SAFETY: cur is a live slab of this list.
            cur = unsafe { (*s).next };
            Some(s)
        })
    }
}

/// Moves `s` from `from` to the head of `to`.
///
/// # Safety
/// `s` is a live slab on `from`.
pub(super) unsafe fn relink(from: &mut SlabList, to: &mut SlabList, s: *mut Slab) {
    // SAFETY: s is on `from` (caller).
    unsafe { from.remove(s) };
    // SAFETY: s is live and now unlinked.
    unsafe { to.push_front(s) };
}
