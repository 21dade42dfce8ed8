//! Tests of the hit paths (`super`): what the inline free takes and
//! refuses, the headerless classes' object starts and windows, and the
//! homes of objects freed on other CPUs.

use super::*;
use crate::CacheBuilder;

/// [`free`] as `kmem::free` uses it: whether the inline path took
/// `p` (pushed, or refused and finished by [`push_refused`]).
///
/// # Safety
/// As [`free`].
unsafe fn take(p: *mut u8) -> bool {
    // SAFETY: forwarded caller guarantee.
    match unsafe { free(p) } {
        FreeHit::Pushed => true,
        FreeHit::Refused { class } => {
            // SAFETY: refused by free: marked, in no magazine.
            unsafe { push_refused(class, p) };
            true
        }
        FreeHit::Miss => false,
    }
}

/// [`hl_starts`] (a mask or a multiply per class) agrees with the
/// headerless slab's geometry (`sizing::headerless_geometry`, which
/// lays out the slabs) on every 16-aligned place of a page, and on the
/// next page's first byte.
#[test]
fn headerless_object_starts_match_the_slab_geometry() {
    for i in 0..ladder::HEADERLESS {
        let size = ladder::size(i) as u64;
        let hl = slab::HL_SLAB as u64;
        let g = crate::sizing::headerless_geometry(size, 16, slab::SLAB_HDR, hl, hl)
            .expect("a headerless class has a headerless geometry");
        assert_eq!(g.first_obj, HL_FIRST as u64, "class {i}");
        let page = 0x7000_0000_0000usize;
        for o in (0..=hl).step_by(16) {
            let want = o >= g.first_obj
                && (o - g.first_obj).is_multiple_of(size)
                && (o - g.first_obj) / size < g.slab_objs;
            assert_eq!(
                hl_starts(i, page + o as usize),
                want,
                "class {i} ({size} bytes), offset {o}"
            );
        }
    }
    assert!(
        !hl_starts(4, 0x7000_0000_0040),
        "no headerless class past the last one"
    );
}

/// The inline free takes a live class object and nothing else: not the
/// same object again, not a pointer inside one (even under a forged
/// header naming a real slab), not another cache's object, not
/// memory slabscope never mapped, not a large block.
#[test]
fn the_inline_free_takes_class_objects_only() {
    let p = super::super::alloc(100).expect("100 bytes");
    let i = ladder::index(100);
    assert!(i >= ladder::HEADERLESS, "a class with headers");
    if CLASSES[i].base.load(Ordering::Acquire) == 0 {
        eprintln!(
            "SKIPPED: the_inline_free_takes_class_objects_only: the classes' magazines do \
             not use restartable sequences here, so the inline paths are off; nothing \
             was checked"
        );
        // SAFETY: p is ours, unused from now on.
        unsafe { super::super::free(p.as_ptr()) };
        return;
    }
    let p = p.as_ptr();
    let class = super::super::class_cache(i).expect("built by the alloc");
    assert_eq!(
        Some(RSEQ_OFF.load(Ordering::Relaxed)),
        class.inner.rseq,
        "the hit paths use the class cache's own rseq area offset"
    );
    // SAFETY: p is a live class object.
    let state = unsafe { slab::state_bits_of(p) };
    assert_eq!(slab::without_home(state), slab::reserved_tag(i));
    // SAFETY: p is a live class object, not used afterwards.
    assert!(unsafe { take(p) }, "a live class object");
    // SAFETY: p's header is still slabscope's memory.
    assert_eq!(unsafe { slab::state_bits_of(p) }, slab::OBJ_FREE);
    // SAFETY: detected, not freed (the header says free).
    assert!(!unsafe { take(p) }, "a double free is the general path's");

    let q = super::super::alloc(200).expect("200 bytes").as_ptr();
    let j = ladder::index(200);
    // SAFETY: q is live.
    let slab = unsafe { slab::slab_addr_of(q) };
    // Forge, 64 bytes into q, the header of an object of another class
    // naming q's real slab: the slab's cache is not that class's.
    // (A forged header naming q's own class and slab passes, on this
    // path as on the general one: both check the header, not where
    // the pointer lies in the slab.) The page map tells which class
    // a slab start belongs to (`ranges::class_slab`).
    let inner = q.wrapping_add(64);
    let word = slab as u64 | u64::from(slab::reserved_tag(j + 1)) << 48;
    // SAFETY: the 8 bytes before inner lie inside q's 200.
    unsafe { inner.wrapping_sub(8).cast::<u64>().write(word) };
    // SAFETY: detected, not freed.
    assert!(!unsafe { take(inner) }, "a forged header of another class");
    // Nor a header of q's own class naming a place inside q's slab
    // that is not where the slab starts.
    let word = (slab + 8) as u64 | u64::from(slab::reserved_tag(j)) << 48;
    // SAFETY: as above.
    unsafe { inner.wrapping_sub(8).cast::<u64>().write(word) };
    // SAFETY: detected, not freed.
    let took = unsafe { take(inner) };
    assert!(!took, "a forged header naming no slab start");
    // SAFETY: q is live, not used afterwards.
    assert!(unsafe { take(q) });

    let c = CacheBuilder::new("fast_free_other_cache", 64)
        .build()
        .unwrap();
    let o = c.alloc(crate::flags::KM_SLEEP).unwrap();
    // SAFETY: o is live; the inline path only reads its header.
    assert!(!unsafe { take(o.as_ptr()) }, "another cache's object");
    // SAFETY: o came from c.
    unsafe { c.free(o) };

    let mut local = [0u64; 8];
    let on_stack = local.as_mut_ptr().wrapping_add(2).cast::<u8>();
    // SAFETY: not slabscope's: detected before anything is read.
    assert!(!unsafe { take(on_stack) }, "memory slabscope never mapped");

    let big = super::super::alloc(ladder::MAX_CLASS + 1).unwrap().as_ptr();
    // SAFETY: a live large block; its header's state is not a tag.
    assert!(!unsafe { take(big) }, "a large block");
    // SAFETY: big is ours, unused from now on.
    unsafe { super::super::free(big) };
}

/// The inline free of a headerless class takes an allocated object
/// and nothing else: not the same object again, not a pointer inside
/// one or at its slab's first byte, not the slab header; and after it
/// the object carries its free mark.
#[test]
fn the_inline_free_of_headerless_classes_checks_place_and_mark() {
    if ladder::HEADERLESS == 0 {
        eprintln!("SKIPPED: no headerless classes on this target; nothing was checked");
        return;
    }
    let p = super::super::alloc(40).expect("40 bytes").as_ptr();
    let i = ladder::index(40);
    assert!(i < ladder::HEADERLESS && ladder::size(i) == 48);
    if CLASSES[i].base.load(Ordering::Acquire) == 0 {
        eprintln!(
            "SKIPPED: the_inline_free_of_headerless_classes_checks_place_and_mark: no \
             restartable sequences here, so the inline paths are off; nothing was checked"
        );
        // SAFETY: p is ours, unused from now on.
        unsafe { super::super::free(p) };
        return;
    }
    let a = p as usize;
    let page = a & !(slab::HL_SLAB - 1);
    assert_eq!(
        (a - page - HL_FIRST) % 48,
        0,
        "an object start of its one-page slab"
    );
    assert_eq!(
        ranges::headerless_class(ranges::byte(page)),
        i,
        "the page map names the slab's class"
    );
    assert_eq!(window_class(p), i, "the slab lies in its class's window");
    // The window's last page, never made writable this early: not
    // taken, and not read (it would fault).
    let last = (a & !((1 << 30) - 1)) + (1 << 30) - slab::HL_SLAB + HL_FIRST;
    assert_eq!(window_class(last as *mut u8), i);
    // SAFETY: detected by the page map, not read.
    let took = unsafe { take(last as *mut u8) };
    assert!(!took, "a window page not a slab");
    // SAFETY: p is a live object of a headerless slab.
    let marked = unsafe { slab::hl_is_free(p) };
    assert!(!marked, "an allocation clears the free mark");
    // SAFETY: p is live: its bytes are ours to write.
    unsafe { p.write_bytes(0xa5, 48) };
    for inner in [16, 32] {
        // SAFETY: detected (not an object's start), not freed.
        let took = unsafe { take(p.wrapping_add(inner)) };
        assert!(!took, "inside a block, +{inner}");
    }
    // The slab's own first bytes, and its header's last 16-aligned
    // word: no object starts there.
    let slab_start = p.wrapping_sub(a - page);
    for off in [0, 48] {
        // SAFETY: detected, not freed.
        let took = unsafe { take(slab_start.wrapping_add(off)) };
        assert!(!took, "slab byte {off}");
    }
    // SAFETY: p is a live class object, not used afterwards.
    assert!(unsafe { take(p) }, "a live headerless object");
    // SAFETY: p's page is still slabscope's.
    assert!(unsafe { slab::hl_is_free(p) }, "a free sets the free mark");
    // SAFETY: detected, not freed (the mark says free).
    assert!(!unsafe { take(p) }, "a double free is the general path's");
    // The next allocation of the class (p again, unless the thread
    // moved to another CPU's magazine) clears its object's mark.
    let q = super::super::alloc(48).expect("48 bytes").as_ptr();
    // SAFETY: q is live.
    let marked = unsafe { slab::hl_is_free(q) };
    assert!(!marked, "an allocation clears the free mark");
    // SAFETY: q is ours, unused from now on.
    assert!(unsafe { take(q) });
}

/// Each headerless class carves its slabs from a window of its own,
/// so its blocks' class is their address's window; blocks of the
/// other classes lie in none.
#[test]
fn headerless_classes_live_in_their_windows() {
    let sizes = [1, 16, 17, 32, 40, 48, 60, 64, 65, 100, 4000];
    // While another test's thread builds the classes, allocations come
    // from the internal allocator.
    while sizes
        .iter()
        .any(|&n| super::super::class_cache(ladder::index(n)).is_none())
    {
        for n in sizes {
            let p = super::super::alloc(n).expect("n bytes");
            // SAFETY: p is ours, unused from now on.
            unsafe { super::super::free(p.as_ptr()) };
        }
        std::thread::yield_now();
    }
    let blocks: Vec<(usize, *mut u8)> = sizes
        .into_iter()
        .map(|n| {
            (
                ladder::index(n),
                super::super::alloc(n).expect("n bytes").as_ptr(),
            )
        })
        .collect();
    for &(i, p) in &blocks {
        let w = window_class(p);
        if i < ladder::HEADERLESS {
            assert_eq!(w, i, "a block of class {i} in window {w}");
        } else {
            assert!(w >= window::WINDOWS, "a block of class {i} in window {w}");
        }
        // SAFETY: p is ours, unused from now on.
        unsafe { super::super::free(p) };
    }
}

/// The CPUs this process may run on, lowest first.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: all zeroes is the empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a cpu_set_t of the size passed.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: c is below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Runs `f` on a thread pinned to `cpu`.
fn on_cpu<T: Send>(cpu: usize, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: all zeroes is the empty set.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: cpu is below CPU_SETSIZE (it came from a set).
            unsafe { libc::CPU_SET(cpu, &mut set) };
            // SAFETY: set is a cpu_set_t of the size passed.
            let r = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
            assert_eq!(r, 0, "pinning a thread to CPU {cpu}");
            f()
        })
        .join()
        .expect("the pinned thread")
    })
}

/// A block handed out on one CPU and freed on another goes to its
/// home's inbox, not the freeing CPU's magazine, and its home gets it
/// back when its magazine runs empty.
#[test]
fn a_block_freed_on_another_cpu_goes_home() {
    let cpus = allowed_cpus();
    let (Some(&a), Some(&b)) = (cpus.first(), cpus.get(1)) else {
        eprintln!(
            "SKIPPED: a_block_freed_on_another_cpu_goes_home: this process may run on one \
             CPU only ({cpus:?}); nothing was checked"
        );
        return;
    };
    // A size no other test here uses, so its class is this test's.
    let size = 6000;
    let i = ladder::index(size);
    let first = super::super::alloc(size).expect("6000 bytes");
    if CLASSES[i].base.load(Ordering::Acquire) == 0 {
        eprintln!(
            "SKIPPED: a_block_freed_on_another_cpu_goes_home: no restartable sequences \
             here, so no homes; nothing was checked"
        );
        // SAFETY: ours, unused from now on.
        unsafe { super::super::free(first.as_ptr()) };
        return;
    }
    // SAFETY: ours, unused from now on.
    unsafe { super::super::free(first.as_ptr()) };
    let c = super::super::class_cache(i).expect("built");
    assert!(c.inner.inbox.homes() > a.max(b) % slab::HOMES);
    let p = on_cpu(a, || {
        let q = super::super::alloc(size).expect("6000 bytes").as_ptr();
        q.expose_provenance()
    });
    let p = std::ptr::with_exposed_provenance_mut::<u8>(p);
    // SAFETY: p is live.
    let state = unsafe { slab::state_bits_of(p) };
    assert_eq!(slab::without_home(state), slab::reserved_tag(i));
    assert_eq!(
        slab::home_of(state),
        a % slab::HOMES,
        "handed out on CPU {a}"
    );
    let before = c.inner.inbox.len();
    let pa = p.addr();
    on_cpu(b, || {
        // SAFETY: p is live, not used afterwards here.
        unsafe { super::super::free(std::ptr::with_exposed_provenance_mut(pa)) }
    });
    let mut waiting = Vec::new();
    // SAFETY: nothing else uses this class's inboxes (see `size`).
    let walked = unsafe {
        c.inner.inbox.peek(|home, q| {
            waiting.push((home, q.addr()));
            Ok::<(), ()>(())
        })
    };
    assert_eq!(walked, Ok(()));
    assert!(
        waiting.contains(&(a % slab::HOMES, p.addr())),
        "freed on CPU {b}, the block waits in CPU {a}'s inbox: {waiting:x?}"
    );
    assert_eq!(c.inner.inbox.len(), before + 1);
    // SAFETY: p's header is still slabscope's memory.
    assert_eq!(unsafe { slab::state_bits_of(p) }, slab::OBJ_FREE);
    c.validate()
        .expect("the books balance with a block in an inbox");
    // On CPU a, allocations empty the magazine; the refill after that
    // takes the inbox first.
    let got = on_cpu(a, || {
        let mut got = Vec::new();
        for _ in 0..=c.inner.mag_size as usize + 1 {
            let q = super::super::alloc(size).expect("6000 bytes").as_ptr();
            got.push(q.expose_provenance());
            if got.last() == Some(&pa) {
                break;
            }
        }
        got
    });
    assert_eq!(
        got.last(),
        Some(&pa),
        "CPU {a} got its block back within a magazine's worth of allocations"
    );
    assert_eq!(c.inner.inbox.len(), before);
    on_cpu(a, || {
        for q in got {
            // SAFETY: ours, unused from now on.
            unsafe { super::super::free(std::ptr::with_exposed_provenance_mut(q)) };
        }
    });
    c.validate().expect("the books balance");
}
