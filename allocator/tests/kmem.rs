//! `kmem_alloc` and its kin on the `kmem_alloc_<size>` size classes: the
//! classes and their names, every size's class and alignment, mappings
//! above the largest class, aligned blocks, realloc, zeroing, and the
//! aborts on frees of what slabscope did not hand out.
//!
//! This binary's global allocator is the system's, so its own `Box`es are
//! foreign pointers to slabscope.

use std::process::Output;
use std::ptr::NonNull;

use slabscope::flags::KM_SLEEP;
use slabscope::kmem::{self, ladder};
use slabscope_testkit::child;

const SCENARIO: &str = "SLABSCOPE_KMEM_SCENARIO";

/// Runs `scenario` in a child process (this binary, filtered to
/// `test_name`) and returns its output.
fn in_child(test_name: &str, scenario: fn()) -> Output {
    child::in_child(SCENARIO, test_name, scenario)
}

/// Runs `scenario` in a child process and requires it to succeed.
fn succeeds_in_child(test_name: &str, scenario: fn()) {
    child::assert_succeeded(&in_child(test_name, scenario));
}

fn assert_aborted_with(out: &Output, what: &str) {
    child::assert_aborted_naming_ptr(out, &[what]);
}

fn fill(p: NonNull<u8>, len: usize, seed: u8) {
    // SAFETY: the callers pass blocks of at least len bytes.
    let s = unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), len) };
    for (i, b) in s.iter_mut().enumerate() {
        *b = seed.wrapping_add(i as u8);
    }
}

fn check(p: NonNull<u8>, len: usize, seed: u8) {
    // SAFETY: the callers pass blocks of at least len bytes.
    let s = unsafe { std::slice::from_raw_parts(p.as_ptr(), len) };
    for (i, &b) in s.iter().enumerate() {
        assert_eq!(b, seed.wrapping_add(i as u8), "byte {i} of {len}");
    }
}

#[test]
fn a_class_is_built_at_its_first_allocation_named_by_size() {
    // In a child of its own: no other test has built a class there.
    succeeds_in_child(
        "a_class_is_built_at_its_first_allocation_named_by_size",
        || {
            assert_eq!(
                kmem::built_classes().count(),
                0,
                "a class before any allocation"
            );
            let p = kmem::kmem_alloc(100, KM_SLEEP).expect("KM_SLEEP");
            let built: Vec<usize> = kmem::built_classes().map(|(i, _)| i).collect();
            assert_eq!(built, [ladder::index(100)], "only the class allocated from");
            // SAFETY: p is a live block.
            assert_eq!(unsafe { kmem::usable_size(p.as_ptr()) }, 104);
            let c104 = kmem::class_cache(ladder::index(104)).expect("built");
            assert_eq!(c104.name(), "kmem_alloc_104");
            assert!(c104.stats().obj_alloc >= 1, "{:?}", c104.stats());
            // SAFETY: p came from kmem_alloc(100).
            unsafe { kmem::kmem_free(p, 100) };
            for i in 0..ladder::CLASSES {
                let size = ladder::size(i);
                let q = kmem::alloc(size).expect("memory");
                let c = kmem::class_cache(i).expect("built by its first allocation");
                assert_eq!(c.name(), format!("kmem_alloc_{size}"));
                assert_eq!(c.entry_size() as usize, size);
                // SAFETY: q is a live block, not used afterwards.
                unsafe { kmem::free(q.as_ptr()) };
                c.validate().unwrap_or_else(|e| panic!("{}: {e}", c.name()));
            }
            assert_eq!(kmem::built_classes().count(), ladder::CLASSES);
        },
    );
}

#[test]
fn every_size_gets_a_16_aligned_block_of_its_class() {
    let mut live = Vec::new();
    let mut n = 0;
    while n <= ladder::MAX_CLASS {
        let p = kmem::alloc(n).expect("memory");
        assert!((p.as_ptr() as usize).is_multiple_of(16), "{n}: {p:p}");
        // SAFETY: p is a live block.
        let usable = unsafe { kmem::usable_size(p.as_ptr()) };
        assert_eq!(usable, ladder::size(ladder::index(n)), "{n}");
        fill(p, n, n as u8);
        live.push((p, n));
        n = if n < 600 { n + 1 } else { n + n / 7 };
    }
    for (p, n) in live {
        check(p, n, n as u8);
        // SAFETY: each block is freed once.
        unsafe { kmem::free(p.as_ptr()) };
    }
}

#[test]
fn blocks_above_the_largest_class_are_mappings_of_their_own_counted_in_one_row() {
    // Alone in a process of its own: other tests map large blocks too.
    succeeds_in_child(
        "blocks_above_the_largest_class_are_mappings_of_their_own_counted_in_one_row",
        large_blocks,
    );
}

fn large_blocks() {
    let (count0, bytes0) = kmem::large_stats();
    let sizes = [ladder::MAX_CLASS + 1, 1 << 20, (5 << 20) + 3];
    let blocks: Vec<_> = sizes
        .iter()
        .map(|&n| {
            let p = kmem::zalloc(n).expect("memory");
            check_zero(p, n);
            fill(p, n, 3);
            (p, n)
        })
        .collect();
    let (count, bytes) = kmem::large_stats();
    assert_eq!(count, count0 + 3);
    let want: usize = sizes.iter().map(|&n| mapping(n)).sum();
    assert_eq!(bytes, bytes0 + want as u64);
    // The row the probes publish, as the inspector shows a cache.
    let row = slabscope::stats::publish()
        .into_iter()
        .find(|c| c.name == kmem::LARGE_ROW)
        .expect("publish reports kmem_alloc_large");
    assert_eq!((row.obj_alloc, row.obj_total), (count, count));
    assert_eq!(row.slab_size * row.slab_total, bytes, "size column = bytes");
    assert_eq!(row.obj_size, bytes / count);
    for (p, n) in blocks {
        // SAFETY: a live block.
        assert!(unsafe { kmem::usable_size(p.as_ptr()) } >= n);
        check(p, n, 3);
        // SAFETY: freed once.
        unsafe { kmem::free(p.as_ptr()) };
    }
    assert_eq!(kmem::large_stats(), (count0, bytes0));
    // Growing a large block moves its pages (mremap), contents and all.
    let p = kmem::alloc(200_000).expect("memory");
    fill(p, 200_000, 5);
    // SAFETY: p is live.
    let q = unsafe { kmem::realloc(p.as_ptr(), 3 << 20) }.expect("memory");
    check(q, 200_000, 5);
    fill(q, 3 << 20, 6);
    // SAFETY: q is live.
    assert!(unsafe { kmem::usable_size(q.as_ptr()) } >= 3 << 20);
    let want = mapping(3 << 20) as u64;
    assert_eq!(kmem::large_stats(), (count0 + 1, bytes0 + want));
    // SAFETY: q is live; shrink within the mapping's upper half: in place.
    let r = unsafe { kmem::realloc(q.as_ptr(), (2 << 20) + 1) }.expect("memory");
    assert_eq!(r, q);
    check(r, (2 << 20) + 1, 6);
    // SAFETY: freed once.
    unsafe { kmem::free(r.as_ptr()) };
    assert_eq!(kmem::large_stats(), (count0, bytes0));
    // A freed mapping is kept, and the next request it fits takes it back,
    // zeroed when asked.
    let a = kmem::alloc(512 << 10).expect("memory");
    fill(a, 512 << 10, 7);
    // SAFETY: freed once.
    unsafe { kmem::free(a.as_ptr()) };
    let b = kmem::zalloc((512 << 10) - 5000).expect("memory");
    assert_eq!(a, b, "the kept mapping is reused");
    check_zero(b, (512 << 10) - 5000);
    // SAFETY: freed once.
    unsafe { kmem::free(b.as_ptr()) };
    assert!(kmem::trim() >= 512 << 10, "trim unmaps the kept mappings");
    assert_eq!(kmem::trim(), 0);
    assert!(kmem::alloc(usize::MAX - 4096).is_none(), "absurd size");
    assert!(
        kmem::alloc(1 << 50).is_none(),
        "more than the address space"
    );
}

#[test]
fn a_large_block_grown_a_page_at_a_time_is_remapped_every_eighth() {
    // Alone in a process of its own: other tests map large blocks too.
    succeeds_in_child(
        "a_large_block_grown_a_page_at_a_time_is_remapped_every_eighth",
        grown_a_page_at_a_time,
    );
}

fn grown_a_page_at_a_time() {
    let (_, bytes0) = kmem::large_stats();
    let mut size = 200 << 10;
    let mut p = kmem::alloc(size).expect("memory");
    fill(p, size, 9);
    let mut remaps = 0;
    let mut mapped = kmem::large_stats().1 - bytes0;
    while size < 2 << 20 {
        size += 4096;
        // SAFETY: p is live; replaced by what realloc returns.
        p = unsafe { kmem::realloc(p.as_ptr(), size) }.expect("memory");
        let now = kmem::large_stats().1 - bytes0;
        if now != mapped {
            assert!(
                now >= mapped + mapped / 8,
                "grown from {mapped} to only {now} bytes for {size}"
            );
            remaps += 1;
            mapped = now;
        }
    }
    check(p, 200 << 10, 9);
    // From 200 KiB to 2 MiB by a ninth or more each time: at most 20.
    assert!(remaps <= 20, "{remaps} remaps for 461 reallocs");
    // SAFETY: freed once.
    unsafe { kmem::free(p.as_ptr()) };
}

#[test]
fn kept_mappings_serve_other_sizes_and_follow_the_live_blocks() {
    // Alone in a process of its own: other tests map large blocks too.
    succeeds_in_child(
        "kept_mappings_serve_other_sizes_and_follow_the_live_blocks",
        kept_mappings,
    );
}

/// Kept mappings and their bytes (the `kmem_alloc_large` row's objects
/// and pages beyond the live ones).
fn kept() -> (u64, u64) {
    let row = kmem::large_snapshot().expect("the row exists once a block was mapped");
    (
        row.obj_total - row.obj_alloc,
        (row.slab_total - row.slab_alloc) * row.slab_size,
    )
}

/// A block's mapping length: its bytes and the 16 before it, in pages.
fn mapping(n: usize) -> usize {
    (n + 16).next_multiple_of(kmem::page_size())
}

fn kept_mappings() {
    let big = kmem::alloc(600 << 10).expect("memory");
    let small = kmem::alloc(300 << 10).expect("memory");
    fill(big, 600 << 10, 1);
    fill(small, 300 << 10, 2);
    kmem::trim();
    // SAFETY: each freed once.
    unsafe { kmem::free(big.as_ptr()) };
    // SAFETY: as above.
    unsafe { kmem::free(small.as_ptr()) };
    assert_eq!(
        kept(),
        (2, (mapping(600 << 10) + mapping(300 << 10)) as u64)
    );

    // The smallest kept mapping that holds a request serves it whole.
    let a = kmem::alloc(250 << 10).expect("memory");
    assert_eq!(a, small, "the 300 KiB mapping serves 250 KiB");
    // SAFETY: a is live.
    let usable = unsafe { kmem::usable_size(a.as_ptr()) };
    assert_eq!(usable, mapping(300 << 10) - 16);
    fill(a, mapping(300 << 10) - 16, 3);
    assert_eq!(kept().0, 1);

    // None holds it: the largest shorter one grows (mremap), its written
    // bytes zeroed for zalloc, the rest fresh.
    let b = kmem::zalloc(700 << 10).expect("memory");
    check_zero(b, 700 << 10);
    assert_eq!(kept(), (0, 0), "the 600 KiB mapping grew to serve 700 KiB");
    // SAFETY: b is live.
    let usable = unsafe { kmem::usable_size(b.as_ptr()) };
    assert_eq!(usable, mapping(700 << 10) - 16);

    // A request of less than a quarter of a kept mapping maps its own.
    // SAFETY: freed once.
    unsafe { kmem::free(b.as_ptr()) };
    assert_eq!(kept().0, 1);
    let c = kmem::alloc(140 << 10).expect("memory");
    assert_eq!(kept().0, 1, "a 700 KiB mapping is not spent on 140 KiB");
    check(a, mapping(300 << 10) - 16, 3);
    // SAFETY: each freed once.
    unsafe { kmem::free(c.as_ptr()) };
    // SAFETY: as above.
    unsafe { kmem::free(a.as_ptr()) };

    // What is kept follows the live blocks: at most 1 MiB, or half of
    // what the live blocks map, freeing them one by one.
    kmem::trim();
    let blocks: Vec<_> = (0..8)
        .map(|_| kmem::alloc(4 << 20).expect("memory"))
        .collect();
    for (k, p) in blocks.into_iter().enumerate() {
        fill(p, 4 << 20, k as u8);
        // SAFETY: freed once.
        unsafe { kmem::free(p.as_ptr()) };
        let live = kmem::large_stats().1;
        let (n, bytes) = kept();
        assert!(
            bytes <= (1 << 20u64).max(live / 2),
            "{n} mappings, {bytes} bytes kept with {live} bytes live"
        );
    }
    assert!(kept().1 <= 1 << 20, "all freed: at most 1 MiB kept");
    assert!(kmem::trim() <= 1 << 20);
    assert_eq!(kept(), (0, 0));
}

fn check_zero(p: NonNull<u8>, n: usize) {
    // SAFETY: p is a block of at least n bytes.
    let s = unsafe { std::slice::from_raw_parts(p.as_ptr(), n) };
    assert!(s.iter().all(|&b| b == 0), "{n} bytes not zeroed");
}

#[test]
fn aligned_blocks_up_to_and_beyond_the_page_size() {
    for shift in 5..=17 {
        let align = 1usize << shift;
        for n in [0, 1, 100, 5000, 200_000] {
            let p = kmem::alloc_aligned(n, align).expect("memory");
            assert!((p.as_ptr() as usize).is_multiple_of(align), "{align} {n}");
            // SAFETY: a live block.
            let usable = unsafe { kmem::usable_size(p.as_ptr()) };
            assert!(usable >= n, "{align} {n}: {usable}");
            fill(p, usable, 9);
            check(p, usable, 9);
            // SAFETY: freed once.
            unsafe { kmem::free(p.as_ptr()) };
        }
    }
}

#[test]
fn realloc_keeps_a_block_more_than_half_used_moves_otherwise_and_keeps_contents() {
    // SAFETY: null asks for a new block.
    let p = unsafe { kmem::realloc(std::ptr::null_mut(), 30) }.expect("memory");
    fill(p, 30, 1);
    // SAFETY: p is live; 32 keeps the class of 30.
    let q = unsafe { kmem::realloc(p.as_ptr(), 32) }.expect("memory");
    assert_eq!(p, q, "same class: in place");
    // SAFETY: q is live; 17 uses more than half of the 32-byte class.
    let q = unsafe { kmem::realloc(q.as_ptr(), 17) }.expect("memory");
    assert_eq!(p, q, "a shrink that uses more than half: in place");
    // SAFETY: q is live.
    assert_eq!(unsafe { kmem::usable_size(q.as_ptr()) }, 32);
    // SAFETY: q is live; 16 is half of 32: moved to the 16-byte class.
    let h = unsafe { kmem::realloc(q.as_ptr(), 16) }.expect("memory");
    assert_ne!(h, q, "a shrink to half or less: moved");
    check(h, 16, 1);
    // SAFETY: h is live.
    assert_eq!(unsafe { kmem::usable_size(h.as_ptr()) }, 16);
    // SAFETY: h is live.
    let q = unsafe { kmem::realloc(h.as_ptr(), 30) }.expect("memory");
    check(q, 16, 1);
    fill(q, 30, 1);
    // SAFETY: q is live.
    let r = unsafe { kmem::realloc(q.as_ptr(), 5000) }.expect("memory");
    check(r, 30, 1);
    fill(r, 5000, 2);
    // SAFETY: r is live; a mapping.
    let s = unsafe { kmem::realloc(r.as_ptr(), 1 << 20) }.expect("memory");
    check(s, 5000, 2);
    // SAFETY: s is live; shrink to a class.
    let t = unsafe { kmem::realloc(s.as_ptr(), 10) }.expect("memory");
    check(t, 10, 2);
    // SAFETY: t is live.
    assert_eq!(unsafe { kmem::usable_size(t.as_ptr()) }, 16);
    // SAFETY: freed once.
    unsafe { kmem::free(t.as_ptr()) };
}

#[test]
fn zalloc_zeroes_a_reused_object() {
    for n in [1, 64, 1000, 4096] {
        let p = kmem::alloc(n).expect("memory");
        fill(p, n, 0xf0);
        // SAFETY: freed once.
        unsafe { kmem::free(p.as_ptr()) };
        let q = kmem::kmem_zalloc(n, KM_SLEEP).expect("memory");
        check_zero(q, n);
        // SAFETY: freed once.
        unsafe { kmem::kmem_free(q, n) };
    }
}

#[test]
fn zalloc_aligned_zeroes_a_reused_block() {
    for (n, align) in [(100, 64), (4400, 64), (5000, 4096)] {
        let p = kmem::alloc_aligned(n, align).expect("memory");
        fill(p, n, 0xf1);
        // SAFETY: freed once.
        unsafe { kmem::free(p.as_ptr()) };
        let q = kmem::zalloc_aligned(n, align).expect("memory");
        assert!((q.as_ptr() as usize).is_multiple_of(align), "{align} {n}");
        check_zero(q, n);
        // SAFETY: freed once.
        unsafe { kmem::free(q.as_ptr()) };
    }
}

/// The internal allocator writes a block it zero-fills only when it was
/// handed out before: a block reused from its free lists must come back
/// zeroed all the same, at every size and alignment (its `alloc_zeroed`
/// is what a cache's magazines are allocated with).
#[test]
fn the_internal_allocator_zeroes_reused_blocks() {
    use std::alloc::{GlobalAlloc, Layout};
    let a = kmem::InternalAlloc;
    for (n, align) in [(8, 8), (100, 16), (1000, 64), (4432, 64), (70_000, 16)] {
        let layout = Layout::from_size_align(n, align).expect("layout");
        for round in 0..3u8 {
            // SAFETY: a non-zero size.
            let p = NonNull::new(unsafe { a.alloc_zeroed(layout) }).expect("memory");
            assert!((p.as_ptr() as usize).is_multiple_of(align), "{align} {n}");
            check_zero(p, n);
            fill(p, n, 0xe0 ^ round);
            // SAFETY: allocated above with this layout, freed once.
            unsafe { a.dealloc(p.as_ptr(), layout) };
        }
    }
}

#[test]
fn frees_on_other_threads_and_threads_exiting_with_objects_out() {
    struct Send(Vec<(usize, usize)>);
    let made: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                Send(
                    (0..2000usize)
                        .map(|i| {
                            let n = (i * 37 + t) % 3000;
                            let p = kmem::alloc(n).expect("memory");
                            fill(p, n, t as u8);
                            (p.as_ptr() as usize, n)
                        })
                        .collect(),
                )
            })
        })
        .collect();
    let blocks: Vec<_> = made.into_iter().map(|h| h.join().unwrap()).collect();
    let frees: Vec<_> = blocks
        .into_iter()
        .enumerate()
        .map(|(t, b)| {
            std::thread::spawn(move || {
                for (p, n) in b.0 {
                    let p = NonNull::new(p as *mut u8).unwrap();
                    check(p, n, t as u8);
                    // SAFETY: each block is freed once, here.
                    unsafe { kmem::free(p.as_ptr()) };
                }
            })
        })
        .collect();
    for h in frees {
        h.join().unwrap();
    }
    for (_, c) in kmem::built_classes() {
        c.validate().unwrap_or_else(|e| panic!("{}: {e}", c.name()));
    }
}

#[test]
fn kmem_free_with_a_larger_size_aborts() {
    let out = in_child("kmem_free_with_a_larger_size_aborts", || {
        let p = kmem::kmem_alloc(40, KM_SLEEP).unwrap();
        println!("PTR={:#x}", p.as_ptr() as usize);
        // SAFETY: deliberately wrong size: must abort.
        unsafe { kmem::kmem_free(p, 100) };
    });
    assert_aborted_with(&out, "larger than the block");
}

#[test]
fn double_free_aborts() {
    let out = in_child("double_free_aborts", || {
        let p = kmem::alloc(40).unwrap();
        let q = kmem::alloc(1 << 20).unwrap();
        println!("PTR={:#x}", p.as_ptr() as usize);
        // SAFETY: deliberately freed twice: must abort.
        unsafe { kmem::free(p.as_ptr()) };
        // SAFETY: as above.
        unsafe { kmem::free(q.as_ptr()) };
        // SAFETY: as above.
        unsafe { kmem::free(p.as_ptr()) };
    });
    assert_aborted_with(&out, "double free");
}

#[test]
fn double_free_of_a_large_block_aborts() {
    let out = in_child("double_free_of_a_large_block_aborts", || {
        let p = kmem::alloc(512 << 10).unwrap();
        println!("PTR={:#x}", p.as_ptr() as usize);
        // SAFETY: deliberately freed twice (the mapping is kept): must abort.
        unsafe { kmem::free(p.as_ptr()) };
        // SAFETY: as above.
        unsafe { kmem::free(p.as_ptr()) };
    });
    assert_aborted_with(&out, "double free");
}

#[test]
fn freeing_another_allocators_block_aborts() {
    let out = in_child("freeing_another_allocators_block_aborts", || {
        let _ = kmem::alloc(1);
        let b = Box::into_raw(Box::new([7u64; 4]));
        println!("PTR={:#x}", b as usize);
        // SAFETY: deliberately foreign: must abort, not read it.
        unsafe { kmem::free(b.cast()) };
    });
    assert_aborted_with(&out, "not memory slabscope handed out");
}

#[test]
fn freeing_an_interior_pointer_aborts() {
    let out = in_child("freeing_an_interior_pointer_aborts", || {
        let p = kmem::alloc(200).unwrap();
        let inner = p.as_ptr().wrapping_add(48);
        println!("PTR={:#x}", inner as usize);
        // SAFETY: deliberately not a block: must abort.
        unsafe { kmem::free(inner) };
    });
    assert_aborted_with(&out, "not the start of a block");
}

/// The same in a headerless class (16 to 64 bytes), where no header
/// stands before the pointer: 16 bytes into a 48-byte block.
#[test]
fn freeing_an_interior_pointer_of_a_headerless_class_aborts() {
    let out = in_child(
        "freeing_an_interior_pointer_of_a_headerless_class_aborts",
        || {
            let inner = kmem::alloc(40).unwrap().as_ptr().wrapping_add(16);
            println!("PTR={:#x}", inner as usize);
            // SAFETY: deliberately not a block: must abort.
            unsafe { kmem::free(inner) };
        },
    );
    assert_aborted_with(&out, "not the start of a block");
}

/// And the first byte of a headerless slab, its header.
#[test]
fn freeing_a_headerless_slab_header_aborts() {
    let out = in_child("freeing_a_headerless_slab_header_aborts", || {
        let p = kmem::alloc(40).unwrap().as_ptr();
        let slab = p.wrapping_sub(p as usize % 4096);
        println!("PTR={:#x}", slab as usize);
        // SAFETY: deliberately not a block: must abort.
        unsafe { kmem::free(slab) };
    });
    assert_aborted_with(&out, "not the start of a block");
}

/// A headerless block freed twice is caught by its free mark, also by
/// `realloc` and `malloc_usable_size`, and a block copied whole onto
/// another live block does not carry the mark along.
#[test]
fn a_headerless_blocks_free_mark_catches_double_frees_and_is_not_copied() {
    let out = in_child(
        "a_headerless_blocks_free_mark_catches_double_frees_and_is_not_copied",
        || {
            let p = kmem::alloc(16).unwrap().as_ptr();
            let q = kmem::alloc(16).unwrap().as_ptr();
            // SAFETY: p is freed once.
            unsafe { kmem::free(p) };
            // SAFETY: then q gets p's freed bytes (its free mark among
            // them) copied over it: a write of q's holder, of memory
            // slabscope still maps.
            unsafe { std::ptr::copy_nonoverlapping(p, q, 16) };
            // SAFETY: q is live: its usable size, and its free.
            assert_eq!(unsafe { kmem::usable_size(q) }, 16);
            // SAFETY: as above.
            unsafe { kmem::free(q) };
            println!("PTR={:#x}", p as usize);
            // SAFETY: deliberately after its free: must abort.
            unsafe { kmem::usable_size(p) };
        },
    );
    assert_aborted_with(&out, "double free");
}

/// Slabs are built lazily: an object its slab never handed out has a zero
/// header, which is no block's, so freeing it is refused like any pointer
/// slabscope did not hand out.
#[test]
fn freeing_an_object_its_slab_never_handed_out_aborts() {
    let out = in_child("freeing_an_object_its_slab_never_handed_out_aborts", || {
        // A class of slabs of a few pages (16 KiB of 8 objects): its first
        // refill builds the objects whose headers are on the first page.
        let p = kmem::alloc(2000).unwrap();
        let c = kmem::class_cache(ladder::index(2000)).expect("built by the alloc");
        let s = c.stats();
        // One slab, of which the objects 0..obj_alloc left it (p among
        // them): the one half a slab past p was never built.
        assert_eq!(s.counters.slab_total, 1, "{s:?}");
        assert!(s.counters.obj_alloc <= s.slab_objs / 2, "{s:?}");
        let unbuilt = p
            .as_ptr()
            .wrapping_add((s.slab_objs / 2 * s.obj_size_full) as usize);
        println!("PTR={:#x}", unbuilt as usize);
        // SAFETY: deliberately never handed out: must abort.
        unsafe { kmem::free(unbuilt) };
    });
    assert_aborted_with(&out, "not the start of a block");
}

#[test]
fn freeing_a_named_caches_object_aborts() {
    let out = in_child("freeing_a_named_caches_object_aborts", || {
        let c = slabscope::CacheBuilder::new("kmem_test_named", 64)
            .align(16)
            .build()
            .unwrap();
        let _ = kmem::alloc(1);
        let p = c.alloc(KM_SLEEP).unwrap();
        println!("PTR={:#x}", p.as_ptr() as usize);
        // SAFETY: deliberately the wrong free: must abort.
        unsafe { kmem::free(p.as_ptr()) };
    });
    assert_aborted_with(&out, "kmem_cache_free");
}

#[test]
#[should_panic(expected = "KM_PUBLIC_MASK")]
fn kmem_alloc_rejects_unknown_flags() {
    let _ = kmem::kmem_alloc(8, 0x100_u32);
}

#[test]
#[should_panic(expected = "KM_PUBLIC_MASK")]
fn kmem_zalloc_rejects_unknown_typed_flags() {
    let _ = kmem::kmem_zalloc(8, slabscope::flags::KmFlags::from_bits_retain(0x100));
}

#[test]
fn kmem_takes_typed_and_raw_flags() {
    use slabscope::flags::{KM_NOSLEEP, KmFlags};
    for p in [
        kmem::kmem_alloc(24, KmFlags::SLEEP),
        kmem::kmem_zalloc(24, KmFlags::NOSLEEP),
        kmem::vmem_alloc(24, KM_NOSLEEP),
        kmem::vmem_zalloc(24, KmFlags::PUSHPAGE),
    ] {
        let p = p.expect("24 bytes");
        // SAFETY: p came from kmem_alloc and friends with size 24.
        unsafe { kmem::kmem_free(p, 24) };
    }
}

/// Bytes of the process's large inaccessible mappings (256 MiB or more):
/// the small classes' windows (`slab_windows`), 4 GiB less what their
/// classes made writable, once a class has grown.
fn window_bytes() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("reading /proc/self/maps")
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (lo, hi) = f.next()?.split_once('-')?;
            let len = usize::from_str_radix(hi, 16).ok()? - usize::from_str_radix(lo, 16).ok()?;
            (f.next()? == "---p" && len >= 256 << 20).then_some(len)
        })
        .sum()
}

/// Allocates, checks and frees blocks of the small classes.
fn small_blocks() {
    let blocks: Vec<(usize, NonNull<u8>)> = (1..=64)
        .map(|n| (n, kmem::kmem_alloc(n, KM_SLEEP).expect("KM_SLEEP")))
        .collect();
    for &(n, p) in &blocks {
        fill(p, n, n as u8);
    }
    for (n, p) in blocks {
        check(p, n, n as u8);
        // SAFETY: p came from kmem_alloc(n), unused from now on.
        unsafe { kmem::kmem_free(p, n) };
    }
}

/// The `slab_windows` tunable, on (the default): the small classes'
/// windows, 4 GiB of inaccessible address space, appear with their first
/// slab.
#[test]
fn the_small_classes_get_windows_by_default() {
    succeeds_in_child("the_small_classes_get_windows_by_default", || {
        let before = window_bytes();
        small_blocks();
        let after = window_bytes();
        assert!(
            after >= before + (7 << 29),
            "no windows after the small classes grew: {before} then {after} bytes"
        );
    });
}

/// The `slab_windows` tunable, off: no windows, and the same blocks.
#[test]
fn slab_windows_0_reserves_no_windows() {
    succeeds_in_child("slab_windows_0_reserves_no_windows", || {
        use slabscope::tunables::{self, Tunables};
        let before = window_bytes();
        tunables::set(Tunables {
            slab_windows: 0,
            ..Tunables::default()
        })
        .expect("tunables before the first cache");
        small_blocks();
        assert_eq!(window_bytes(), before, "slab_windows = 0 reserved windows");
    });
}
