//! Unit tests of the slab layer: layout, list order, reclaim, magic checks.
use super::header::RESERVED_TAGS;
use super::*;
use crate::sizing;

fn geo(size: u64, align: u64) -> Geometry {
    sizing::geometry(
        size,
        align,
        SLAB_HDR,
        OBJ_HDR,
        8,
        32,
        os::page_size() as u64,
    )
    .unwrap()
}

fn grow(st: &mut SlabState, g: &Geometry) {
    let base = os::map_pages(g.slab_size as usize).unwrap();
    // SAFETY: fresh mapping of slab_size bytes.
    let s = unsafe { init_slab(base, g, 1) };
    // SAFETY: s is fresh and unlinked.
    unsafe { st.add_slab(g, s) };
}

#[test]
fn take_all_fills_then_returns_keep_fuller_first_and_empty_at_tail() {
    let g = geo(100, 16);
    let mut st = SlabState::new();
    grow(&mut st, &g);
    grow(&mut st, &g);
    st.validate(&g, 1).unwrap();
    let n = g.slab_objs as usize;
    let mut objs = Vec::new();
    for _ in 0..2 * n {
        let o = st.take_obj(&g, true, "t", 0).unwrap();
        assert!((o.as_ptr() as usize).is_multiple_of(16));
        objs.push(o.as_ptr());
        st.validate(&g, 1).unwrap();
    }
    assert!(st.take_obj(&g, true, "t", 0).is_none());
    assert_eq!(st.complete.len(), 2);
    assert_eq!(st.c.obj_alloc, 2 * n as u64);
    // Return one object of slab 0: slab 0 goes to the partial head.
    // SAFETY: objs[0] was taken above.
    unsafe { st.shrink(&g, true, "t", 1, objs[0], 0) };
    st.validate(&g, 1).unwrap();
    assert_eq!(st.partial.len(), 1);
    // Empty slab 1 entirely: it goes to the tail and is reclaimable.
    for &o in &objs[n..] {
        // SAFETY: taken above, returned once.
        unsafe { st.shrink(&g, true, "t", 1, o, 0) };
        st.validate(&g, 1).unwrap();
    }
    assert_eq!(st.c.slab_alloc, 1);
    let r = st.unlink_empty(&g, 0, 0);
    assert_eq!((r.slabs, r.objs), (1, n as u64));
    // SAFETY: the chain holds only the empty slab.
    unsafe { r.release(&g) };
    st.validate(&g, 1).unwrap();
    for &o in &objs[1..n] {
        // SAFETY: taken above, returned once.
        unsafe { st.shrink(&g, true, "t", 1, o, 0) };
    }
    let r = st.unlink_empty(&g, 0, 0);
    assert_eq!(r.slabs, 1);
    // SAFETY: as above.
    unsafe { r.release(&g) };
    st.validate(&g, 1).unwrap();
    assert_eq!(st.c.slab_total, 0);
    assert_eq!(st.c.obj_total, 0);
    assert_eq!((st.c.slab_create, st.c.slab_destroy), (2, 2));
}

#[test]
fn a_foreign_pointer_fails_the_header_check() {
    let g = geo(64, 8);
    let mut buf = vec![0u64; 32];
    // One word in: the header, right before the object, is buf[0].
    let p = buf.as_mut_ptr().wrapping_add(1).cast::<u8>();
    // SAFETY: buf has the OBJ_HDR header bytes before p.
    let r = unsafe { check_obj_result(&g, p) };
    assert_eq!(
        r,
        Err("its header says a caller holds it, or is not an object header")
    );
    // Misaligned: refused before the header is read (Miri found the
    // unaligned header reference this used to make).
    // SAFETY: as above, one byte further in.
    let r = unsafe { check_obj_result(&g, p.wrapping_add(1)) };
    assert_eq!(r, Err("not aligned like this cache's objects"));
}

#[test]
fn the_state_word_tells_held_objects_from_free_ones() {
    let g = geo(64, 8);
    let mut st = SlabState::new();
    grow(&mut st, &g);
    let o = st.take_obj(&g, true, "t", 0).unwrap().as_ptr();
    let tag = alloc_tag(0x7f00_1234_5678);
    assert_ne!(tag, OBJ_FREE);
    assert_ne!(
        tag,
        alloc_tag(0x7f00_1234_5700),
        "neighbouring caches differ"
    );
    // SAFETY: o is a slab object of this geometry.
    unsafe { mark_allocated(o, tag) };
    // SAFETY: as above.
    let held = unsafe { check_obj_result(&g, o) };
    assert_eq!(
        held,
        Err("its header says a caller holds it, or is not an object header")
    );
    // SAFETY: as above; held with this tag, so the check passes and frees it.
    unsafe { check_free(&g, "t", 1, tag, o) };
    // SAFETY: as above.
    assert_eq!(unsafe { check_obj_result(&g, o) }, Ok(()));
    // SAFETY: taken above, returned once.
    unsafe { st.shrink(&g, true, "t", 1, o, 0) };
    st.validate(&g, 1).unwrap();
    // A free-list object marked as held is a validation error.
    let o = st.take_obj(&g, true, "t", 0).unwrap().as_ptr();
    // SAFETY: taken above, returned once.
    unsafe { st.shrink(&g, true, "t", 1, o, 0) };
    // SAFETY: o's header is live (its slab is mapped).
    unsafe { mark_allocated(o, tag) };
    assert!(st.validate(&g, 1).unwrap_err().contains("caller holds it"));
    // SAFETY: as above.
    unsafe { mark_allocated(o, OBJ_FREE) };
    st.validate(&g, 1).unwrap();
    let r = st.unlink_empty(&g, 0, 0);
    // SAFETY: the only slab is empty.
    unsafe { r.release(&g) };
}

#[test]
fn small_objects_carry_one_word_of_header() {
    let g = geo(64, 8);
    assert_eq!(OBJ_HDR, 8);
    assert_eq!(g.obj_size_full, 72);
    if os::page_size() == 4096 {
        assert_eq!(g.slab_objs, 56, "{g:?}");
    }
    // The header names the slab; the free list runs through the objects.
    let mut st = SlabState::new();
    grow(&mut st, &g);
    let a = st.take_obj(&g, true, "t", 0).unwrap().as_ptr();
    let b = st.take_obj(&g, true, "t", 0).unwrap().as_ptr();
    assert_eq!(b as usize - a as usize, 72);
    // Held, so the slab does not empty and keeps its list.
    let c = st.take_obj(&g, true, "t", 0).unwrap().as_ptr();
    // SAFETY: b was taken above, returned once.
    unsafe { st.shrink(&g, true, "t", 1, b, 0) };
    // SAFETY: as above.
    unsafe { st.shrink(&g, true, "t", 1, a, 0) };
    st.validate(&g, 1).unwrap();
    // A corrupted link is found by validate, not followed off the slab.
    // SAFETY: a is free and ours to scribble on in this test.
    unsafe { a.cast::<usize>().write(8) };
    assert!(st.validate(&g, 1).unwrap_err().contains("outside it"));
    // SAFETY: as above: restore the link.
    unsafe { a.cast::<*mut u8>().write(b) };
    st.validate(&g, 1).unwrap();
    // SAFETY: c was taken above, returned once.
    unsafe { st.shrink(&g, true, "t", 1, c, 0) };
    let r = st.unlink_empty(&g, 0, 0);
    // SAFETY: the only slab is empty.
    unsafe { r.release(&g) };
}

#[test]
fn a_batch_take_spans_slabs_and_keeps_every_equation() {
    let g = geo(64, 8);
    let mut st = SlabState::new();
    grow(&mut st, &g);
    grow(&mut st, &g);
    let n = g.slab_objs as usize;
    let mut single = SlabState::new();
    grow(&mut single, &g);
    grow(&mut single, &g);
    let mut out = vec![ptr::null_mut(); n + 3];
    assert_eq!(st.take_batch(&g, true, "t", 7, &mut out), n + 3);
    st.validate(&g, 1).unwrap();
    // The same objects, in the same order, as n + 3 takes of one.
    let offsets = |objs: &[*mut u8], base: *mut u8| -> Vec<isize> {
        objs.iter().map(|&o| o as isize - base as isize).collect()
    };
    let singles: Vec<*mut u8> = (0..n + 3)
        .map(|_| single.take_obj(&g, true, "t", 7).unwrap().as_ptr())
        .collect();
    assert_eq!(
        offsets(&out[..n], out[0]),
        offsets(&singles[..n], singles[0])
    );
    assert_eq!(st.c, single.c, "counters match takes of one");
    assert_eq!((st.complete.len(), st.partial.len()), (1, 1));
    // Nothing left but n - 3 objects: a bigger batch takes just those.
    let mut rest = vec![ptr::null_mut(); n];
    assert_eq!(st.take_batch(&g, true, "t", 8, &mut rest), n - 3);
    assert_eq!(st.take_batch(&g, true, "t", 8, &mut rest), 0);
    st.validate(&g, 1).unwrap();
    for &o in out.iter().chain(&rest[..n - 3]) {
        // SAFETY: every object was taken above and is returned once.
        unsafe { st.shrink(&g, true, "t", 1, o, 9) };
    }
    for &o in &singles {
        // SAFETY: as above.
        unsafe { single.shrink(&g, true, "t", 1, o, 9) };
    }
    st.validate(&g, 1).unwrap();
    for mut state in [st, single] {
        let r = state.unlink_empty(&g, 0, 0);
        assert_eq!(r.slabs, 2);
        // SAFETY: both slabs are empty.
        unsafe { r.release(&g) };
    }
}

#[test]
fn validate_catches_a_broken_counter() {
    let g = geo(64, 8);
    let mut st = SlabState::new();
    grow(&mut st, &g);
    st.c.obj_alloc = 3;
    assert!(st.validate(&g, 1).unwrap_err().contains("obj_alloc"));
    st.c.obj_alloc = 0;
    let r = st.unlink_empty(&g, 0, 0);
    // SAFETY: the only slab is empty.
    unsafe { r.release(&g) };
}

#[test]
fn reclaim_with_a_delay_keeps_young_empty_slabs_and_takes_old_ones() {
    let g = geo(100, 16);
    let mut st = SlabState::new();
    for _ in 0..3 {
        grow(&mut st, &g);
    }
    let n = g.slab_objs as usize;
    // Fill all three slabs, then empty them at times 100, 200 and 300 ms,
    // keeping one object of the third so it stays in use.
    let objs: Vec<*mut u8> = (0..3 * n)
        .map(|_| st.take_obj(&g, true, "t", 0).unwrap().as_ptr())
        .collect();
    for (slab, chunk) in objs.chunks(n).enumerate() {
        let keep = usize::from(slab == 2);
        for &o in &chunk[keep..] {
            // SAFETY: taken above, returned once.
            unsafe { st.shrink(&g, true, "t", 1, o, 100 * (slab as u64 + 1)) };
        }
    }
    st.validate(&g, 1).unwrap();
    assert_eq!(st.c.slab_alloc, 1);
    // At 250 ms with a 100 ms delay: the slab emptied at 100 is old enough,
    // the one emptied at 200 is not.
    let r = st.unlink_empty(&g, 100, 250);
    assert_eq!(r.slabs, 1);
    // SAFETY: the chain holds only empty slabs.
    unsafe { r.release(&g) };
    // The next delayed walk waits half a delay: at 290 nothing is looked
    // at, though the slab emptied at 200 is old enough by then.
    assert_eq!(st.unlink_empty(&g, 90, 290).slabs, 0);
    assert_eq!(st.c.slab_total, 2);
    st.validate(&g, 1).unwrap();
    assert_eq!(st.c.slab_total, 2);
    // Without a delay every empty slab goes; the slab in use stays.
    let r = st.unlink_empty(&g, 0, 250);
    assert_eq!(r.slabs, 1);
    // SAFETY: as above.
    unsafe { r.release(&g) };
    st.validate(&g, 1).unwrap();
    assert_eq!((st.c.slab_total, st.c.slab_alloc), (1, 1));
    // SAFETY: the last object, returned once.
    unsafe { st.shrink(&g, true, "t", 1, objs[2 * n], 300) };
    let r = st.unlink_empty(&g, 0, 0);
    // SAFETY: as above.
    unsafe { r.release(&g) };
    assert_eq!(st.c.slab_total, 0);
}

#[test]
fn colors_are_cache_lines_within_the_slack() {
    let g = geo(4096, 8);
    assert!(g.slack() >= 64, "a 4 KiB slab has room to color: {g:?}");
    let mut seen = std::collections::HashSet::new();
    for page in 0..1000u64 {
        let c = g.color(page << 12);
        assert!(c.is_multiple_of(64) && c <= g.slack(), "color {c} of {g:?}");
        seen.insert(c);
    }
    assert!(
        seen.len() as u64 > g.slack() / 64 / 2,
        "1000 slabs use most of the {} colors, not {}",
        g.slack() / 64 + 1,
        seen.len()
    );
    // The alignment is kept: colors step by it when it exceeds a line.
    let g = geo(3000, 256);
    for page in 0..64u64 {
        assert!(g.color(page << 12).is_multiple_of(256));
    }
    // No slack, no color: the objects fill the slab.
    let g = geo(64, 8);
    assert!(g.slack() < 64, "{g:?}");
    assert!((0..64u64).all(|p| g.color(p << 12) == 0));
}

/// Without color, every slab of a 4 KiB cache put its 8 objects at the same
/// 8 page offsets, and the headers of 1000 objects shared 8 of the 64 sets
/// of a 64-set L1 cache (see `Geometry::color`).
#[test]
fn colored_slabs_spread_headers_over_the_cache_sets() {
    let g = geo(4096, 8);
    let mut st = SlabState::new();
    let mut objs = Vec::new();
    let mut sets = std::collections::HashSet::new();
    while objs.len() < 1000 {
        grow(&mut st, &g);
        while let Some(o) = st.take_obj(&g, true, "t", 0) {
            let a = o.as_ptr() as usize;
            sets.insert(((a - OBJ_HDR as usize) >> 6) & 63);
            objs.push(o.as_ptr());
        }
    }
    st.validate(&g, 1).unwrap();
    for &o in &objs {
        // SAFETY: o was taken above and its slab is mapped; it is free in
        // the sense check_obj_result reads (taken objects keep OBJ_FREE
        // until a cache marks them).
        assert_eq!(unsafe { check_obj_result(&g, o) }, Ok(()), "{o:p}");
    }
    assert!(
        sets.len() >= 40,
        "headers of {} objects in {} of 64 sets",
        objs.len(),
        sets.len()
    );
    for o in objs {
        // SAFETY: taken above, returned once.
        unsafe { st.shrink(&g, true, "t", 1, o, 0) };
    }
    st.validate(&g, 1).unwrap();
    let r = st.unlink_empty(&g, 0, 0);
    // SAFETY: every slab is empty.
    unsafe { r.release(&g) };
}

#[test]
fn reserved_tags_are_never_a_cache_ids_tag_and_the_header_reads_agree() {
    for n in 0..RESERVED_TAGS {
        let t = reserved_tag(n);
        assert_eq!(t & 1, 1, "odd: an allocated object's state");
        assert_ne!(t & RESERVED_TAG, 0);
        assert_eq!(reserved_tag_index(t), n);
        assert_eq!(class_of_tag(t), Some(n));
        for cpu in [0, 1, 5, 127, 128, 129, 1000, u32::MAX] {
            let h = homed_tag(t, cpu);
            assert_eq!(home_of(h), cpu as usize % HOMES, "tag {n}, cpu {cpu}");
            assert_eq!(without_home(h), t);
            assert_eq!(reserved_tag_index(h), n);
            assert_eq!(class_of_tag(h), Some(n));
            assert!(h & 1 == 1 && h & RESERVED_TAG != 0);
        }
    }
    // Cache ids are 64-aligned addresses; every bit pattern of the folded
    // 16 bits shows up among these.
    for id in (0x7f00_0000_0000u64..0x7f00_0400_0000).step_by(4096 + 64) {
        let t = alloc_tag(id);
        assert_eq!(t & RESERVED_TAG, 0, "{id:#x}: {t:#x} is a reserved tag");
        assert_eq!(t & 1, 1);
    }
    let g = geo(64, 8);
    let mut st = SlabState::new();
    grow(&mut st, &g);
    let o = st.take_obj(&g, true, "t", 0).unwrap().as_ptr();
    // SAFETY: o is a slab object of this geometry.
    unsafe { mark_allocated(o, reserved_tag(5)) };
    // SAFETY: as above.
    let (state, slab) = unsafe { header_of(o) };
    assert_eq!(state, reserved_tag(5));
    // SAFETY: as above.
    assert_eq!(unsafe { state_bits_of(o) }, state);
    // SAFETY: as above.
    assert_eq!(unsafe { slab_addr_of(o) }, slab);
    assert!(slab < o as usize && o as usize - slab < g.slab_size as usize);
    // SAFETY: as above.
    unsafe { mark_free(o) };
    // SAFETY: as above; o is free.
    unsafe { st.shrink(&g, true, "t", 1, o, 0) };
}

/// A geometry of `per_slab` objects a slab (before page rounding).
fn geo_n(size: u64, align: u64, per_slab: u64) -> Geometry {
    sizing::geometry(
        size,
        align,
        SLAB_HDR,
        OBJ_HDR,
        per_slab,
        32,
        os::page_size() as u64,
    )
    .unwrap()
}

/// Object `i` of the slab whose object 0 is `first`.
fn nth(g: &Geometry, first: *mut u8, i: u64) -> *mut u8 {
    first.wrapping_add((i * g.obj_size_full) as usize)
}

/// Which pages of `[base, base + len)` are resident (`mincore`).
#[cfg(not(miri))]
fn resident(base: *mut u8, len: usize) -> Vec<bool> {
    let mut v = vec![0u8; len.div_ceil(os::page_size())];
    // SAFETY: the range is a mapping of ours; v has a byte per page.
    let rc = unsafe { libc::mincore(base.cast(), len, v.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    v.iter().map(|b| b & 1 == 1).collect()
}

/// The point of building slabs lazily: a new slab costs its header page,
/// and each take the pages of the headers it writes, nothing further.
#[cfg(not(miri))]
#[test]
fn a_fresh_slab_has_only_its_header_page_resident_and_grows_with_its_takes() {
    let page = os::page_size();
    // A kmem-class-like slab: 80-byte objects, many pages.
    let g = geo_n(72, 16, 800);
    let len = g.slab_size as usize;
    assert!(len >= 16 * page, "{g:?}");
    let base = os::map_pages(len).unwrap();
    let b = base.as_ptr();
    assert!(resident(b, len).iter().all(|&r| !r), "a fresh mapping");
    // SAFETY: fresh mapping of slab_size bytes.
    let s = unsafe { init_slab(base, &g, 1) };
    let want = |pages: &[usize]| {
        let mut v = vec![false; len.div_ceil(page)];
        for &p in pages {
            v[p] = true;
        }
        v
    };
    assert_eq!(resident(b, len), want(&[0]), "only the slab header");
    let mut st = SlabState::new();
    // SAFETY: s is fresh and unlinked.
    unsafe { st.add_slab(&g, s) };
    st.validate(&g, 1).unwrap();
    assert_eq!(resident(b, len), want(&[0]), "validate reads no object");
    // Take objects one by one: the resident pages are the header page and
    // those of the headers written so far.
    let mut objs = Vec::new();
    let mut pages = std::collections::BTreeSet::from([0usize]);
    for _ in 0..(3 * page as u64 / g.obj_size_full) {
        let o = st.take_obj(&g, true, "t", 0).unwrap().as_ptr();
        pages.insert((o as usize - OBJ_HDR as usize - b as usize) / page);
        objs.push(o);
        st.validate(&g, 1).unwrap();
        assert_eq!(
            resident(b, len),
            want(&pages.iter().copied().collect::<Vec<_>>()),
            "after {} takes",
            objs.len()
        );
    }
    assert!(pages.len() <= 4 && *pages.last().unwrap() <= 3, "{pages:?}");
    // Returning them and taking again reuses them: no new page.
    for &o in objs.iter().rev() {
        // SAFETY: taken above, returned once.
        unsafe { st.shrink(&g, true, "t", 1, o, 0) };
    }
    st.validate(&g, 1).unwrap();
    let again: Vec<*mut u8> = (0..objs.len())
        .map(|_| st.take_obj(&g, true, "t", 0).unwrap().as_ptr())
        .collect();
    // The slab emptied, so its list was dropped: the objects come back
    // from the highest built down, by address (see `Slab`'s `unlisted`).
    let mut down = objs.clone();
    down.reverse();
    assert_eq!(
        again, down,
        "an emptied slab hands out its objects from the top"
    );
    assert_eq!(
        resident(b, len),
        want(&pages.iter().copied().collect::<Vec<_>>())
    );
    for &o in &again {
        // SAFETY: taken above, returned once.
        unsafe { st.shrink(&g, true, "t", 1, o, 0) };
    }
    let r = st.unlink_empty(&g, 0, 0);
    assert_eq!((r.slabs, r.objs), (1, g.slab_objs));
    // SAFETY: the only slab is empty.
    unsafe { r.release(&g) };
    st.validate(&g, 1).unwrap();
}

#[test]
fn objects_come_out_in_address_order_after_the_freed_ones() {
    let g = geo(100, 16);
    let n = g.slab_objs;
    assert!(n >= 8, "{g:?}");
    let mut st = SlabState::new();
    grow(&mut st, &g);
    let first = st.take_obj(&g, true, "t", 0).unwrap().as_ptr();
    let slab = first as usize & !(os::page_size() - 1);
    // SAFETY: first is a slab object of this geometry.
    assert_eq!(unsafe { header_of(first) }, (OBJ_FREE, slab));
    let color = g.color(slab as u64);
    assert_eq!(
        first as usize - slab,
        (g.first_obj + color) as usize,
        "object 0 first"
    );
    let mut taken = vec![first];
    for i in 1..4 {
        let o = st.take_obj(&g, true, "t", 0).unwrap().as_ptr();
        assert_eq!(o, nth(&g, first, i), "object {i}");
        taken.push(o);
        st.validate(&g, 1).unwrap();
    }
    // Freed objects go first, last freed first; then the next unbuilt one.
    // SAFETY: taken above, returned once.
    unsafe { st.shrink(&g, true, "t", 1, taken[1], 0) };
    // SAFETY: as above.
    unsafe { st.shrink(&g, true, "t", 1, taken[3], 0) };
    st.validate(&g, 1).unwrap();
    let mut out = [ptr::null_mut(); 3];
    assert_eq!(st.take_batch(&g, true, "t", 0, &mut out), 3);
    assert_eq!(out, [taken[3], taken[1], nth(&g, first, 4)]);
    st.validate(&g, 1).unwrap();
    // The rest of the slab, to the last object, then nothing.
    let mut rest = vec![ptr::null_mut(); n as usize];
    assert_eq!(st.take_batch(&g, true, "t", 0, &mut rest), n as usize - 5);
    for (i, &o) in rest[..n as usize - 5].iter().enumerate() {
        assert_eq!(o, nth(&g, first, 5 + i as u64));
    }
    assert!(st.take_obj(&g, true, "t", 0).is_none());
    assert_eq!(st.complete.len(), 1);
    st.validate(&g, 1).unwrap();
    for &o in [first, taken[2]]
        .iter()
        .chain(&out)
        .chain(&rest[..n as usize - 5])
    {
        // SAFETY: each taken above and returned once.
        unsafe { st.shrink(&g, true, "t", 1, o, 0) };
    }
    st.validate(&g, 1).unwrap();
    let r = st.unlink_empty(&g, 0, 0);
    assert_eq!(r.slabs, 1);
    // SAFETY: the only slab is empty.
    unsafe { r.release(&g) };
}

#[test]
fn a_partially_built_slab_empties_and_is_released_whole() {
    let g = geo(64, 8);
    let n = g.slab_objs;
    let mut st = SlabState::new();
    grow(&mut st, &g);
    grow(&mut st, &g);
    let objs: Vec<*mut u8> = (0..5)
        .map(|_| st.take_obj(&g, true, "t", 0).unwrap().as_ptr())
        .collect();
    st.validate(&g, 1).unwrap();
    assert_eq!((st.c.obj_alloc, st.c.slab_alloc), (5, 1));
    assert_eq!(st.c.obj_total, 2 * n, "unbuilt objects count in the total");
    for &o in &objs {
        // SAFETY: taken above, returned once.
        unsafe { st.shrink(&g, true, "t", 1, o, 0) };
        st.validate(&g, 1).unwrap();
    }
    assert_eq!((st.c.obj_alloc, st.c.slab_alloc), (0, 0));
    // A delayed reclaim keeps the young slabs; a reap takes both, the one
    // with 5 objects built and the one with none.
    assert_eq!(st.unlink_empty(&g, 1000, 10).slabs, 0);
    let r = st.unlink_empty(&g, 0, 0);
    assert_eq!((r.slabs, r.objs), (2, 2 * n));
    st.validate(&g, 1).unwrap();
    assert_eq!((st.c.obj_total, st.c.slab_total), (0, 0));
    // SAFETY: both slabs are empty.
    unsafe { r.release(&g) };
}

#[test]
fn an_unbuilt_object_is_no_object_to_the_checks() {
    let g = geo(64, 8);
    let n = g.slab_objs;
    let mut st = SlabState::new();
    grow(&mut st, &g);
    let first = st.take_obj(&g, true, "t", 0).unwrap().as_ptr();
    let last = nth(&g, first, n - 1);
    // Its header is the zero of a fresh mapping: not free, not held.
    // SAFETY: last is an object of this live slab: its header is mapped.
    assert_eq!(unsafe { header_of(last) }, (0, 0));
    // SAFETY: as above.
    let r = unsafe { check_obj_result(&g, last) };
    assert_eq!(
        r,
        Err("its header says a caller holds it, or is not an object header")
    );
    // A forged free header does not make it one either.
    let slab = first as usize & !(os::page_size() - 1);
    // SAFETY: as above; 8-aligned.
    unsafe { set_foreign_header(last, slab, OBJ_FREE) };
    // SAFETY: as above.
    let r = unsafe { check_obj_result(&g, last) };
    assert_eq!(
        r,
        Err("its slab never handed it out (it is past the slab's built objects)")
    );
    // Nor may the free list reach it: validate refuses, without reading it.
    // (A second object stays out, so the slab keeps its list.)
    let second = st.take_obj(&g, true, "t", 0).unwrap().as_ptr();
    // SAFETY: first was taken above and is returned once.
    unsafe { st.shrink(&g, true, "t", 1, first, 0) };
    st.validate(&g, 1).unwrap();
    // SAFETY: first is free and ours to scribble on in this test.
    unsafe { first.cast::<*mut u8>().write(last) };
    let e = st.validate(&g, 1).unwrap_err();
    assert!(e.contains("never built"), "{e}");
    // SAFETY: as above: restore the end of the list.
    unsafe { first.cast::<*mut u8>().write(ptr::null_mut()) };
    st.validate(&g, 1).unwrap();
    // A counter that claims more built than the slab has is caught.
    let s = st.partial.head;
    // SAFETY: s is the live slab; we hold the state.
    unsafe { (*s).built = n as u32 + 1 };
    let e = st.validate(&g, 1).unwrap_err();
    assert!(e.contains("refs <= built <= objs"), "{e}");
    // SAFETY: as above.
    unsafe { (*s).built = 2 };
    st.validate(&g, 1).unwrap();
    // SAFETY: second was taken above and is returned once.
    unsafe { st.shrink(&g, true, "t", 1, second, 0) };
    let r = st.unlink_empty(&g, 0, 0);
    // SAFETY: the only slab is empty.
    unsafe { r.release(&g) };
}

/// A take builds the objects whose headers lie on one page, and returns
/// short rather than write a second; the free list is not bounded so.
#[test]
fn a_take_builds_at_most_one_page_of_objects() {
    let page = os::page_size() as u64;
    let g = geo_n(72, 16, 800);
    let n = g.slab_objs;
    let mut st = SlabState::new();
    grow(&mut st, &g);
    let mut out = vec![ptr::null_mut(); n as usize];
    let got = st.take_batch(&g, true, "t", 0, &mut out);
    st.validate(&g, 1).unwrap();
    let hdr_page = |o: *mut u8, base: usize| (o as usize - OBJ_HDR as usize - base) as u64 / page;
    let base = out[0] as usize & !(page as usize - 1);
    assert!(got > 1 && (got as u64) < n, "{got} of {n}");
    assert!(out[..got].iter().all(|&o| hdr_page(o, base) == 0));
    for (i, &o) in out[..got].iter().enumerate() {
        assert_eq!(o, nth(&g, out[0], i as u64));
    }
    // The first header on the next page is the object after the last.
    assert_eq!(hdr_page(nth(&g, out[0], got as u64), base), 1);
    assert_eq!(
        (st.c.obj_alloc, st.c.slab_alloc),
        (got as u64, 1),
        "one slab"
    );
    // The next take builds page 1's objects; returned objects then come
    // back all at once, before any new one.
    let mut more = vec![ptr::null_mut(); n as usize];
    let got2 = st.take_batch(&g, true, "t", 0, &mut more);
    assert!(more[..got2].iter().all(|&o| hdr_page(o, base) == 1));
    assert_eq!(more[0], nth(&g, out[0], got as u64));
    for &o in out[..got].iter().chain(&more[..got2]) {
        // SAFETY: taken above, returned once.
        unsafe { st.shrink(&g, true, "t", 1, o, 0) };
    }
    st.validate(&g, 1).unwrap();
    let mut all = vec![ptr::null_mut(); got + got2];
    assert_eq!(st.take_batch(&g, true, "t", 0, &mut all), got + got2);
    st.validate(&g, 1).unwrap();
    // A slab built to its last object hands on to the next slab.
    let mut rest = vec![ptr::null_mut(); n as usize];
    let mut taken = got + got2;
    while taken < n as usize {
        let k = st.take_batch(&g, true, "t", 0, &mut rest);
        assert!(k > 0);
        for &o in &rest[..k] {
            all.push(o);
        }
        taken += k;
        st.validate(&g, 1).unwrap();
    }
    assert_eq!(taken, n as usize);
    assert_eq!((st.complete.len(), st.c.slab_alloc), (1, 1));
    assert!(st.take_obj(&g, true, "t", 0).is_none());
    grow(&mut st, &g);
    let k = st.take_batch(&g, true, "t", 0, &mut rest);
    assert!(k > 0 && rest[..k].iter().all(|&o| !all.contains(&o)));
    assert_eq!(st.c.slab_alloc, 2);
    st.validate(&g, 1).unwrap();
    for &o in all.iter().chain(&rest[..k]) {
        // SAFETY: each taken above, returned once.
        unsafe { st.shrink(&g, true, "t", 1, o, 0) };
    }
    st.validate(&g, 1).unwrap();
    let r = st.unlink_empty(&g, 0, 0);
    assert_eq!(r.slabs, 2);
    // SAFETY: both slabs are empty.
    unsafe { r.release(&g) };
}

/// When a slab's last object comes back its free list is dropped unread:
/// every built object is free, and takes hand them out by address, from
/// the highest down, before the list that later returns build; validate
/// checks the objects below `unlisted` like the listed ones.
#[test]
fn an_emptied_slab_drops_its_list_and_hands_out_by_address() {
    let g = geo(64, 8);
    let mut st = SlabState::new();
    grow(&mut st, &g);
    let objs: Vec<*mut u8> = (0..6)
        .map(|_| st.take_obj(&g, true, "t", 0).unwrap().as_ptr())
        .collect();
    for (i, &o) in objs.iter().enumerate() {
        assert_eq!(o, nth(&g, objs[0], i as u64));
    }
    // Returned in a scrambled order, each object's first word becomes a
    // link; the last return empties the slab.
    for i in [3, 0, 5, 1, 4, 2] {
        // SAFETY: taken above, returned once.
        unsafe { st.shrink(&g, true, "t", 1, objs[i], 0) };
        st.validate(&g, 1).unwrap();
    }
    let s = st.partial.head;
    // SAFETY: s is the live slab; we hold the state.
    let sl = unsafe { &*s };
    assert_eq!((sl.unlisted, sl.built, sl.free), (6, 6, ptr::null_mut()));
    // The links are not read again: scribble over them.
    for &o in &objs {
        // SAFETY: a free object of ours: its first word is unused now.
        unsafe { o.cast::<usize>().write(0xdead_beef) };
    }
    st.validate(&g, 1).unwrap();
    // Takes come down from the highest built object.
    let mut out = [ptr::null_mut(); 2];
    assert_eq!(st.take_batch(&g, true, "t", 0, &mut out), 2);
    assert_eq!(out, [objs[5], objs[4]]);
    st.validate(&g, 1).unwrap();
    // A return while others are out goes on the list, which comes after
    // the rest of the unlisted objects.
    // SAFETY: taken just above, returned once.
    unsafe { st.shrink(&g, true, "t", 1, objs[5], 0) };
    st.validate(&g, 1).unwrap();
    let mut out = [ptr::null_mut(); 6];
    assert_eq!(st.take_batch(&g, true, "t", 0, &mut out), 6);
    assert_eq!(
        out,
        [
            objs[3],
            objs[2],
            objs[1],
            objs[0],
            objs[5],
            nth(&g, objs[0], 6)
        ],
        "unlisted from the top, then the list, then a new object"
    );
    st.validate(&g, 1).unwrap();
    // An unlisted object whose header says held is a validation error.
    for &o in out.iter().chain([&objs[4]]) {
        // SAFETY: taken above, returned once.
        unsafe { st.shrink(&g, true, "t", 1, o, 0) };
    }
    // SAFETY: s is the live slab; we hold the state.
    assert_eq!(unsafe { (*s).unlisted }, 7);
    let tag = alloc_tag(1);
    // SAFETY: objs[2] is an object of this live slab, below unlisted.
    unsafe { mark_allocated(objs[2], tag) };
    let e = st.validate(&g, 1).unwrap_err();
    assert!(
        e.contains("below unlisted") && e.contains("caller holds it"),
        "{e}"
    );
    // SAFETY: as above.
    unsafe { mark_allocated(objs[2], OBJ_FREE) };
    st.validate(&g, 1).unwrap();
    let r = st.unlink_empty(&g, 0, 0);
    // SAFETY: the only slab is empty.
    unsafe { r.release(&g) };
}

fn hl_geo(size: u64) -> Geometry {
    sizing::headerless_geometry(size, 16, SLAB_HDR, HL_SLAB as u64, HL_SLAB as u64).unwrap()
}

/// A headerless slab is one page built whole: every object carries its
/// free mark from the start, a take hands them out highest first, an
/// object's slab is its page, and the checks read the mark instead of a
/// header.
#[test]
fn a_headerless_slab_is_built_whole_and_found_from_its_objects() {
    if os::page_size() != HL_SLAB {
        eprintln!("SKIPPED: pages are not 4 KiB here, so no slab is headerless");
        return;
    }
    let g = hl_geo(48);
    assert!(g.headerless() && !geo(48, 16).headerless());
    assert_eq!((g.slab_size, g.first_obj, g.slab_objs), (4096, 64, 84));
    assert_eq!(g.color(0x1234_5000), 0);
    assert!(sizing::headerless_geometry(8, 16, SLAB_HDR, 4096, 4096).is_none());
    assert!(sizing::headerless_geometry(48, 8, SLAB_HDR, 4096, 4096).is_none());
    assert!(sizing::headerless_geometry(48, 16, SLAB_HDR, 4096, 16384).is_none());
    let mut st = SlabState::new();
    grow(&mut st, &g);
    st.validate(&g, 1).unwrap();
    let n = g.slab_objs as usize;
    let mut objs = Vec::new();
    while let Some(o) = st.take_obj(&g, true, "t", 0) {
        let o = o.as_ptr();
        let off = o as usize % HL_SLAB;
        assert!(off >= 64 && (off - 64).is_multiple_of(48), "{o:p}");
        // SAFETY: a free object of a live headerless slab.
        assert!(unsafe { hl_is_free(o) }, "taken, not yet handed out");
        assert_eq!(
            hl_slab_of(o),
            hl_slab_of(objs.first().copied().unwrap_or(o))
        );
        objs.push(o);
    }
    assert_eq!(objs.len(), n);
    assert_eq!(
        objs[0] as usize % HL_SLAB,
        64 + 48 * (n - 1),
        "highest first"
    );
    st.validate(&g, 1).unwrap();
    let o = objs[5];
    // SAFETY: o is an object of the live slab, in no caller's hands.
    assert_eq!(unsafe { check_obj_result(&g, o) }, Ok(()));
    // SAFETY: as above; handed out now.
    unsafe { hl_mark_allocated(o) };
    // SAFETY: as above.
    let held = unsafe { check_obj_result(&g, o) };
    assert_eq!(held, Err("its free mark is missing: a caller holds it"));
    // SAFETY: as above: held, so the check passes and frees it.
    unsafe { check_free(&g, "t", 1, 0, o) };
    // SAFETY: as above.
    assert_eq!(unsafe { check_obj_result(&g, o) }, Ok(()));
    // SAFETY: inside an object: refused before its mark is read.
    let inner = unsafe { check_obj_result(&g, o.wrapping_add(16)) };
    assert_eq!(inner, Err("not where an object of its slab starts"));
    for &o in &objs {
        // SAFETY: taken above, returned once, with its free mark.
        unsafe { st.shrink(&g, true, "t", 1, o, 0) };
    }
    st.validate(&g, 1).unwrap();
    // Take one back and return it to the free list: then clear its mark,
    // as a caller's write would, and validation sees it.
    let o = st.take_obj(&g, true, "t", 0).unwrap().as_ptr();
    let o2 = st.take_obj(&g, true, "t", 0).unwrap().as_ptr();
    // SAFETY: taken above, returned once.
    unsafe { st.shrink(&g, true, "t", 1, o, 0) };
    // SAFETY: o is an object of the live slab.
    unsafe { hl_mark_allocated(o) };
    assert!(st.validate(&g, 1).unwrap_err().contains("no free mark"));
    // SAFETY: as above.
    unsafe { hl_mark_free(o) };
    // SAFETY: taken above, returned once.
    unsafe { st.shrink(&g, true, "t", 1, o2, 0) };
    st.validate(&g, 1).unwrap();
    let r = st.unlink_empty(&g, 0, 0);
    assert_eq!(r.slabs, 1);
    // SAFETY: the only slab is empty.
    unsafe { r.release(&g) };
}
