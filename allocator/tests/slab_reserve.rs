//! Slabs carved from shared reservations (`slab_reserve_kb`, 2 MiB by
//! default): caches of different slab sizes carve the same reservation, a
//! slab reclaimed from the middle of one is unmapped alone and its
//! neighbours keep their contents, slabs too large to carve get mappings of
//! their own, and `os::mapped_bytes()` counts exactly the slabs at every
//! step (the unused tail, `os::reserved_bytes()`, stays below one
//! reservation).

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
