//! Blocks above the largest class: each a mapping of its own, counted in
//! the `kmem_alloc_large` row, with a few freed mappings kept for reuse.
//!
//! A block is `PREFIX` bytes into its mapping; its header (right before
//! it, like a slab object's) holds `OBJ_LARGE` and the mapping's length.
//!
//! Mapping and unmapping a block costs an `mmap`, page faults and an
//! `munmap`, 16 to 26 µs per block where a class object costs tens of
//! nanoseconds (see [`super`]). So a freed mapping of at most
//! [`KEEP_MAPPING_MAX`] bytes is kept, up to [`KEEP_SLOTS`] of them and
//! [`KEEP_TOTAL_MAX`] bytes in all, and the next request it fits (using at
//! least four fifths of it) takes it back without a system call; its
//! header then says `OBJ_LARGE_KEPT`, so a second free of the block is
//! told from a live one. The slots are lock-free (one word each, the
//! mapping's page number and page count), so a `fork` never finds them
//! held. A kept mapping holds the pages the block touched; `malloc_trim`
//! ([`trim`]) returns every kept mapping to the OS.

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
pub const KEEP_SLOTS: usize = 8;
/// Largest mapping kept, in bytes.
pub const KEEP_MAPPING_MAX: usize = 1 << 20;
/// Most bytes kept in all (see "The largest class" in [`super`]).
pub const KEEP_TOTAL_MAX: u64 = 1 << 20;

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

/// A kept mapping of at least `len` bytes and at most a quarter more.
fn take_kept(len: usize) -> Option<(usize, usize)> {
    if KEPT_COUNT.load(Ordering::Relaxed) == 0 {
        return None;
    }
    for slot in &KEPT {
        let v = slot.load(Ordering::Acquire);
        if v == 0 {
            continue;
        }
        let (base, have) = unpack(v);
        if have >= len
            && have - len <= len / 4
            && slot
                .compare_exchange(v, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            KEPT_COUNT.fetch_sub(1, Ordering::Relaxed);
            KEPT_BYTES.fetch_sub(have as u64, Ordering::Relaxed);
            return Some((base, have));
        }
    }
    None
}

/// A block of `size` bytes (more than the largest class), zeroed when
/// `zero` (fresh mappings are zero already and are not written).
pub(super) fn alloc(size: usize, zero: bool) -> Option<NonNull<u8>> {
    let len = mapping_len(size)?;
    let (base, len, fresh) = match take_kept(len) {
        Some((base, have)) => (
            std::ptr::with_exposed_provenance_mut::<u8>(base),
            have,
            false,
        ),
        None => (os::mmap_anon(len)?.as_ptr(), len, true),
    };
    let obj = base.wrapping_add(PREFIX);
    // SAFETY: the header is the mapping's second word, ours.
    unsafe { slab::set_foreign_header(obj, len, OBJ_LARGE) };
    if zero && !fresh {
        // SAFETY: the mapping holds size bytes past PREFIX.
        unsafe { obj.write_bytes(0, size) };
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
    if len <= KEEP_MAPPING_MAX && KEPT_BYTES.load(Ordering::Relaxed) + len as u64 <= KEEP_TOTAL_MAX
    {
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
    let mut freed = 0;
    for slot in &KEPT {
        let v = slot.swap(0, Ordering::AcqRel);
        if v == 0 {
            continue;
        }
        let (base, len) = unpack(v);
        KEPT_COUNT.fetch_sub(1, Ordering::Relaxed);
        KEPT_BYTES.fetch_sub(len as u64, Ordering::Relaxed);
        // SAFETY: a kept mapping, whole, taken out of its slot: nobody
        // else can take it now.
        unsafe { os::munmap_range(std::ptr::with_exposed_provenance_mut(base), len) };
        freed += len as u64;
    }
    freed
}

/// Resizes a live block to `size` bytes (more than the largest class):
/// the mapping moves or grows in place, without copying (`mremap`).
///
/// # Safety
/// `obj` is a live large block whose mapping is `len` bytes; on `Some`
/// the old pointer is not used again.
pub(super) unsafe fn remap(obj: *mut u8, len: usize, size: usize) -> Option<NonNull<u8>> {
    let new_len = mapping_len(size)?;
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
