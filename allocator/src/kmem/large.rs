//! Blocks above the largest class: each a mapping of its own, counted in
//! the `kmem_alloc_large` row, with a few freed mappings kept for reuse.
//!
//! A block is `PREFIX` bytes into its mapping; its header (right before
//! it, like a slab object's) holds `OBJ_LARGE` and the mapping's length.
//!
//! Mapping and unmapping a block costs an `mmap`, page faults and an
//! `munmap`, 16 to 26 µs per block where a class object costs tens of
//! nanoseconds (see [`super`]). So a freed mapping of at most
//! [`KEEP_MAPPING_MAX`] bytes is kept, in up to [`KEEP_SLOTS`] slots,
//! while the kept bytes stay within a cap: [`KEEP_TOTAL_MIN`], or half
//! the bytes of the live blocks when that is more, so a program whose
//! large blocks come and go keeps pages in step with the blocks it
//! holds, and one that has freed them all keeps at most 1 MiB. A free
//! that finds more kept than the cap now allows unmaps the excess. A
//! kept mapping's header says `OBJ_LARGE_KEPT`, so a second free of the
//! block is told from a live one. The slots are lock-free (one word
//! each, the mapping's page number and page count), so a `fork` never
//! finds them held. A kept mapping holds the pages the block touched;
//! `malloc_trim` ([`trim`]) returns every kept mapping to the OS.
//!
//! A request takes the kept mapping that serves it best: the smallest
//! that holds it, used whole, if it is at most four times the request's
//! length (the block's usable size is then the mapping's, and a
//! `realloc` within it stays in place); else the largest shorter one,
//! grown to the request's length by `mremap`, which moves its pages
//! without copying. Either way the pages the last block touched serve
//! the new one, and only the pages past them fault. Kept mappings once
//! served only requests that filled four fifths of them, within 1 MiB
//! in all: a program churning blocks of varied sizes mapped, faulted
//! and unmapped nearly every one (bench/ANALYSIS.md, "Large blocks of
//! varied sizes").

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::{os, registry, slab};

/// Header state of a live large block (the low bits: its mapping's length).
pub(super) const OBJ_LARGE: u16 = 0x1a26;
/// Header state of a kept mapping, free for reuse.
pub(super) const OBJ_LARGE_KEPT: u16 = 0x1a28;
/// Bytes before a large block: its header and one spare word.
pub(super) const PREFIX: usize = 16;
/// Most mappings kept.
pub const KEEP_SLOTS: usize = 16;
/// Largest mapping kept, in bytes: glibc's largest `mmap` threshold
/// (`DEFAULT_MMAP_THRESHOLD_MAX`), below which its freed blocks stay in
/// its heap.
pub const KEEP_MAPPING_MAX: usize = 32 << 20;
/// Bytes that may be kept however few the live blocks (see "The largest
/// class" in [`super`]).
pub const KEEP_TOTAL_MIN: u64 = 1 << 20;
/// A request takes a kept mapping at most this many times its length.
const KEEP_FIT: usize = 4;

static COUNT: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Whether any block was ever mapped.
static USED: AtomicBool = AtomicBool::new(false);
static KEPT: [AtomicU64; KEEP_SLOTS] = [const { AtomicU64::new(0) }; KEEP_SLOTS];
static KEPT_COUNT: AtomicU64 = AtomicU64::new(0);
static KEPT_BYTES: AtomicU64 = AtomicU64::new(0);

/// Page-number bits of a slot (47-bit addresses, 4 KiB granules).
const BASE_BITS: u32 = 35;

fn pack(base: usize, len: usize) -> u64 {
    (base >> 12) as u64 | ((len >> 12) as u64) << BASE_BITS
}

fn unpack(v: u64) -> (usize, usize) {
    (
        ((v & ((1 << BASE_BITS) - 1)) << 12) as usize,
        ((v >> BASE_BITS) << 12) as usize,
    )
}

/// Live blocks and the bytes of their mappings; kept mappings and their
/// bytes; whether any block was ever mapped.
pub(super) fn stats() -> (u64, u64, u64, u64, bool) {
    (
        COUNT.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
        KEPT_COUNT.load(Ordering::Relaxed),
        KEPT_BYTES.load(Ordering::Relaxed),
        USED.load(Ordering::Relaxed),
    )
}

/// The mapping length of a block of `size` bytes; `None` past what any
/// mapping can hold.
fn mapping_len(size: usize) -> Option<usize> {
    let len = size
        .checked_add(PREFIX)?
        .checked_next_multiple_of(os::page_size())?;
    (len < 1 << 47).then_some(len)
}

/// Most bytes kept now: [`KEEP_TOTAL_MIN`], or half the live blocks'
/// mappings.
fn keep_cap() -> u64 {
    KEEP_TOTAL_MIN.max(BYTES.load(Ordering::Relaxed) / 2)
}

/// A kept mapping for a block whose mapping is `len` bytes, taken out of
/// its slot: the smallest of `len` to [`KEEP_FIT`] times `len` bytes,
/// else the largest shorter one; its base and length.
fn take_kept(len: usize) -> Option<(usize, usize)> {
    // A slot another thread empties or fills meanwhile sends us round
    // again; a few rounds, then a fresh mapping.
    for _ in 0..4 {
        if KEPT_COUNT.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut best: Option<(&AtomicU64, u64, usize)> = None;
        for slot in &KEPT {
            let v = slot.load(Ordering::Acquire);
            if v == 0 {
                continue;
            }
            let have = unpack(v).1;
            if have / KEEP_FIT > len {
                continue;
            }
            let better = best.is_none_or(|(_, _, b)| {
                if have >= len {
                    b < len || have < b
                } else {
                    b < len && have > b
                }
            });
            if better {
                best = Some((slot, v, have));
            }
        }
        let (slot, v, have) = best?;
        if slot
            .compare_exchange(v, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            KEPT_COUNT.fetch_sub(1, Ordering::Relaxed);
            KEPT_BYTES.fetch_sub(have as u64, Ordering::Relaxed);
            return Some(unpack(v));
        }
    }
    None
}

/// The kept mapping `[base, base + have)`, taken out of its slot, made
/// to serve a block whose mapping is `len` bytes: whole when it holds
/// them, else grown to `len` (see the module docs). Its start, its length
/// and how many of its first bytes a block may have written (the rest
/// are fresh zeros); `None`, the mapping unmapped, when the OS refuses to
/// grow it.
///
/// # Safety
/// The range is a whole kept mapping of ours, taken by [`take_kept`].
unsafe fn refit(base: usize, have: usize, len: usize) -> Option<(*mut u8, usize, usize)> {
    let p = std::ptr::with_exposed_provenance_mut::<u8>(base);
    if have >= len {
        return Some((p, have, have));
    }
    // SAFETY: a whole mapping of ours, unused (caller).
    match unsafe { os::mremap_anon(p, have, len) } {
        Some(moved) => Some((moved.as_ptr(), len, have)),
        None => {
            // SAFETY: as above, left where it was.
            unsafe { os::munmap_range(p, have) };
            None
        }
    }
}

/// A block of `size` bytes (more than the largest class), zeroed when
/// `zero` (fresh mappings are zero already and are not written).
pub(super) fn alloc(size: usize, zero: bool) -> Option<NonNull<u8>> {
    let len = mapping_len(size)?;
    // SAFETY: a kept mapping just taken out of its slot.
    let kept = take_kept(len).and_then(|(b, have)| unsafe { refit(b, have, len) });
    let (base, len, dirty) = match kept {
        Some(k) => k,
        None => (os::mmap_anon(len)?.as_ptr(), len, 0),
    };
    let obj = base.wrapping_add(PREFIX);
    // SAFETY: the header is the mapping's second word, ours.
    unsafe { slab::set_foreign_header(obj, len, OBJ_LARGE) };
    if zero {
        // SAFETY: the mapping holds size bytes past PREFIX, and what a
        // block wrote ends within its first dirty bytes.
        unsafe { obj.write_bytes(0, size.min(dirty.saturating_sub(PREFIX))) };
    }
    if !USED.swap(true, Ordering::Relaxed) {
        // The statistics report the kmem_alloc_large row from now on.
        registry::report_row(super::large_snapshot);
    }
    COUNT.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(len as u64, Ordering::Relaxed);
    NonNull::new(obj)
}

/// Frees a block whose mapping is `len` bytes: kept for reuse when it
/// fits, else unmapped.
///
/// # Safety
/// `obj` is a live large block with a mapping of `len` bytes, not used
/// afterwards.
pub(super) unsafe fn free(obj: *mut u8, len: usize) {
    COUNT.fetch_sub(1, Ordering::Relaxed);
    BYTES.fetch_sub(len as u64, Ordering::Relaxed);
    let base = obj.wrapping_sub(PREFIX);
    let cap = keep_cap();
    if KEPT_BYTES.load(Ordering::Relaxed) > cap {
        shed(cap);
    }
    if len <= KEEP_MAPPING_MAX && KEPT_BYTES.load(Ordering::Relaxed) + len as u64 <= cap {
        // SAFETY: the header of a live block of ours (caller).
        unsafe { slab::set_foreign_header(obj, len, OBJ_LARGE_KEPT) };
        let v = pack(base.expose_provenance(), len);
        for slot in &KEPT {
            if slot
                .compare_exchange(0, v, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                KEPT_COUNT.fetch_add(1, Ordering::Relaxed);
                KEPT_BYTES.fetch_add(len as u64, Ordering::Relaxed);
                return;
            }
        }
    }
    // SAFETY: the block's whole mapping, unused from now on (caller).
    unsafe { os::munmap_range(base, len) };
}

/// Unmaps every kept mapping; returns the bytes returned to the OS.
pub fn trim() -> u64 {
    KEPT.iter().map(unmap_slot).sum()
}

/// Unmaps kept mappings until at most `cap` bytes are kept: those the
/// live blocks no longer justify (see [`keep_cap`]).
fn shed(cap: u64) {
    for slot in &KEPT {
        if KEPT_BYTES.load(Ordering::Relaxed) <= cap {
            return;
        }
        unmap_slot(slot);
    }
}

/// Unmaps the mapping kept in `slot`, if any; returns its bytes.
fn unmap_slot(slot: &AtomicU64) -> u64 {
    let v = slot.swap(0, Ordering::AcqRel);
    if v == 0 {
        return 0;
    }
    let (base, len) = unpack(v);
    KEPT_COUNT.fetch_sub(1, Ordering::Relaxed);
    KEPT_BYTES.fetch_sub(len as u64, Ordering::Relaxed);
    // SAFETY: a kept mapping, whole, taken out of its slot: nobody else
    // can take it now.
    unsafe { os::munmap_range(std::ptr::with_exposed_provenance_mut(base), len) };
    len as u64
}

/// Resizes a live block to `size` bytes (more than the largest class):
/// the mapping moves or grows in place, without copying (`mremap`); a
/// mapping that grows grows by an eighth at least, so a block that a
/// program extends a page at a time (a string, a log buffer) is remapped
/// every eighth of its size, not at every page.
///
/// # Safety
/// `obj` is a live large block whose mapping is `len` bytes; on `Some`
/// the old pointer is not used again.
pub(super) unsafe fn remap(obj: *mut u8, len: usize, size: usize) -> Option<NonNull<u8>> {
    let mut new_len = mapping_len(size)?;
    if new_len > len {
        // Growing: by an eighth at least (the classes' spacing), so that
        // a block grown a little at a time moves every eighth of its size,
        // not every page. The pages past what the block writes are never
        // touched, so they cost address space, not memory.
        new_len = new_len.max(mapping_len(len + len / 8)?);
    }
    let base = obj.wrapping_sub(PREFIX);
    // SAFETY: the block's mapping, whole (caller).
    let moved = unsafe { os::mremap_anon(base, len, new_len) }?;
    let obj = moved.as_ptr().wrapping_add(PREFIX);
    // SAFETY: the header is the mapping's second word.
    unsafe { slab::set_foreign_header(obj, new_len, OBJ_LARGE) };
    BYTES.fetch_add(new_len as u64, Ordering::Relaxed);
    BYTES.fetch_sub(len as u64, Ordering::Relaxed);
    NonNull::new(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_pack_47_bit_page_addresses_and_lengths() {
        let (base, len) = (0x7fff_ffff_f000usize, KEEP_MAPPING_MAX);
        assert_eq!(unpack(pack(base, len)), (base, len));
        assert_ne!(pack(0x1000, 0x1000), 0);
    }
}
