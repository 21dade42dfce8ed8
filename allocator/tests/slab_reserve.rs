//! Slabs carved from shared reservations (`slab_reserve_kb`, 2 MiB by
//! default): caches of different slab sizes carve the same reservation, a
//! slab reclaimed from the middle of one is unmapped alone and its
//! neighbours keep their contents, slabs too large to carve get mappings of
//! their own, and `os::mapped_bytes()` counts exactly the slabs at every
//! step (the unused tail, `os::reserved_bytes()`, stays below one
//! reservation); a slab unmapped where the process cannot split another
//! mapping (`vm.max_map_count`) still gives its memory back.

use std::ptr::NonNull;

use slabscope::flags::KM_SLEEP;
use slabscope::tunables::{self, Tunables};
use slabscope::{Cache, CacheBuilder, os};

const RESERVE: usize = 2 << 20;

fn slab_bytes(caches: &[&Cache]) -> usize {
    caches
        .iter()
        .map(|c| {
            let s = c.stats();
            (s.slab_total * s.slab_size) as usize
        })
        .sum()
}

/// Allocates `n` objects of `c`, each filled with its index's low byte.
fn fill(c: &Cache, n: usize) -> Vec<NonNull<u8>> {
    let size = c.entry_size() as usize;
    (0..n)
        .map(|i| {
            let p = c.alloc(KM_SLEEP).expect("KM_SLEEP never fails");
            // SAFETY: `size` writable bytes.
            unsafe { p.as_ptr().write_bytes(i as u8, size) };
            p
        })
        .collect()
}

fn check(c: &Cache, objs: &[(usize, NonNull<u8>)]) {
    let size = c.entry_size() as usize;
    for &(i, p) in objs {
        // SAFETY: a live object of `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), size) };
        assert!(
            bytes.iter().all(|&b| b == i as u8),
            "{}: object {i} was overwritten",
            c.name()
        );
    }
}

#[test]
fn slabs_share_reservations_and_are_unmapped_one_by_one() {
    tunables::set(Tunables {
        stats_interval_ms: 0,
        // Every empty slab goes at the next flush, wherever it sits.
        slab_reclaim_delay_ms: 0,
        ..Tunables::default()
    })
    .expect("tunables are set before any cache exists");
    let base = os::mapped_bytes();
    let small = CacheBuilder::new("res_small", 64).build().unwrap();
    let mid = CacheBuilder::new("res_mid", 3000).build().unwrap();
    let large = CacheBuilder::new("res_large", 200_000).build().unwrap();
    assert!(
        small.stats().slab_size < mid.stats().slab_size,
        "two slab sizes share the reservations"
    );
    assert!(
        large.stats().slab_size as usize > RESERVE / 8,
        "large slabs are mapped on their own"
    );

    // Interleaved growth: the small and mid caches carve the same
    // reservations, several of them.
    let mut s_objs = Vec::new();
    let mut m_objs = Vec::new();
    for _ in 0..40 {
        s_objs.extend(fill(&small, 500));
        m_objs.extend(fill(&mid, 30));
    }
    let l_objs = fill(&large, 12);
    let all = [&small, &mid, &large];
    assert_eq!(os::mapped_bytes() - base, slab_bytes(&all));
    assert!(
        slab_bytes(&[&small, &mid]) > 2 * RESERVE,
        "several reservations"
    );
    assert!(os::reserved_bytes() < RESERVE);

    // Free the mid cache's objects but every tenth: its emptied slabs, in
    // the middle of reservations between small slabs, are unmapped.
    let mut kept_mid = Vec::new();
    for (i, p) in m_objs.into_iter().enumerate() {
        if i % 10 == 0 {
            kept_mid.push((i % 30, p));
        } else {
            // SAFETY: p came from `mid` and is freed once.
            unsafe { mid.free(p) };
        }
    }
    mid.reap_now();
    let s = mid.stats();
    assert!(s.slab_destroy > 0, "no slab was reclaimed: {s:?}");
    assert_eq!(os::mapped_bytes() - base, slab_bytes(&all));

    // The small cache's objects, the neighbours, are intact and writable.
    let s_objs: Vec<(usize, NonNull<u8>)> = s_objs
        .into_iter()
        .enumerate()
        .map(|(i, p)| (i % 500, p))
        .collect();
    check(&small, &s_objs);
    check(&mid, &kept_mid);
    check(
        &large,
        &l_objs.iter().copied().enumerate().collect::<Vec<_>>(),
    );
    for c in all {
        c.validate().unwrap();
    }

    for (c, objs) in [
        (
            &small,
            s_objs.into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
        ),
        (&mid, kept_mid.into_iter().map(|(_, p)| p).collect()),
        (&large, l_objs),
    ] {
        for p in objs {
            // SAFETY: each object came from `c` and is freed once.
            unsafe { c.free(p) };
        }
        c.validate().unwrap();
        c.destroy().expect("every object was freed");
    }
    assert_eq!(os::mapped_bytes(), base, "destroy left slab memory mapped");
    assert!(os::reserved_bytes() < RESERVE);
}

/// A process at `vm.max_map_count` cannot split a mapping, so unmapping a
/// slab from the middle of a reservation fails there (`ENOMEM`); the
/// slab's memory must go back all the same. In a child: three slabs
/// carved in a row, the process's mappings raised to the limit, then the
/// middle slab unmapped: it is no longer resident (`mincore`), and its
/// neighbours keep their contents.
#[test]
fn a_slab_unmapped_at_the_mapping_limit_still_gives_its_memory_back() {
    let out = slabscope_testkit::child::in_child(
        "SLABSCOPE_SLAB_RESERVE_SCENARIO",
        "a_slab_unmapped_at_the_mapping_limit_still_gives_its_memory_back",
        at_the_mapping_limit,
    );
    slabscope_testkit::child::assert_succeeded(&out);
}

fn at_the_mapping_limit() {
    let page = os::page_size();
    let slabs: Vec<NonNull<u8>> = (0..3)
        .map(|_| os::map_slab(page, RESERVE, os::SlabPages::Dense, None).expect("a slab"))
        .collect();
    let at = |k: usize| slabs[k].as_ptr() as usize;
    assert!(
        at(1) == at(0) + page && at(2) == at(1) + page,
        "carved in a row"
    );
    for (k, s) in slabs.iter().enumerate() {
        // SAFETY: a fresh slab of one page, ours.
        unsafe { s.as_ptr().write_bytes(k as u8 + 1, page) };
    }
    // Split one large mapping page by page (every other page made
    // read-only) until the kernel refuses the next split.
    let n = 70_000;
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing.
    let big = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * n * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(big, libc::MAP_FAILED);
    let mut limited = false;
    for k in 0..n {
        // SAFETY: a page of the mapping just made, unused.
        let rc = unsafe {
            libc::mprotect(
                big.cast::<u8>().wrapping_add(2 * k * page).cast(),
                page,
                libc::PROT_READ,
            )
        };
        if rc != 0 {
            limited = true;
            break;
        }
    }
    assert!(limited, "{n} splits did not reach vm.max_map_count");
    let resident = |p: usize| {
        let mut v = 0u8;
        // SAFETY: mincore of one mapped page into one byte.
        let rc = unsafe { libc::mincore(p as *mut libc::c_void, page, &mut v) };
        assert_eq!(rc, 0, "mincore");
        v & 1 == 1
    };
    assert!(resident(at(1)));
    // SAFETY: the middle slab, mapped by map_slab and unused from now on.
    unsafe { os::unmap_pages(slabs[1], page) };
    assert!(!resident(at(1)), "the unmapped slab is still resident");
    for k in [0, 2] {
        // SAFETY: the outer slabs are still ours.
        let s = unsafe { std::slice::from_raw_parts(slabs[k].as_ptr(), page) };
        assert!(
            s.iter().all(|&b| b == k as u8 + 1),
            "slab {k} kept its contents"
        );
    }
}
