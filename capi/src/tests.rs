//! Unit tests of the C ABI: misuse, errors and the SPL semantics, called
//! as a C program calls them.

use super::*;
use slabscope_probes::flags::*;

fn last_error() -> String {
    // SAFETY: slabscope_last_error always returns a valid C string.
    unsafe { CStr::from_ptr(slabscope_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn errno() -> c_int {
    // SAFETY: __errno_location has no preconditions.
    let slot = unsafe { libc::__errno_location() };
    // SAFETY: it points at this thread's errno.
    unsafe { *slot }
}

fn create(name: &CStr, size: usize, align: usize, flags: c_int) -> *mut KmemCache {
    // SAFETY: valid name, no callbacks.
    unsafe {
        kmem_cache_create(
            name.as_ptr(),
            size,
            align,
            None,
            None,
            None,
            ptr::null_mut(),
            ptr::null_mut(),
            flags,
        )
    }
}

#[test]
fn bad_inputs_return_null_with_errno_and_message() {
    let cases: [(&CStr, usize, usize, c_int, c_int, &str); 7] = [
        (c"", 8, 0, 0, libc::EINVAL, "empty"),
        (c"ffi_bad", 0, 0, 0, libc::EINVAL, "size 0"),
        (c"ffi_bad", 8, 24, 0, libc::EINVAL, "alignment 24"),
        (c"ffi_bad", 8, 4, 0, libc::EINVAL, "alignment 4"),
        (c"ffi_bad", 64 << 20, 0, 0, libc::ENOSPC, "ENOSPC"),
        (c"ffi_bad", 8, 0, 1 << 30, libc::EINVAL, "unknown flags"),
        (
            c"ffi_bad",
            8,
            0,
            (KMC_SLAB | KMC_KVMEM) as c_int,
            libc::EINVAL,
            "both set",
        ),
    ];
    for (name, size, align, flags, want_errno, want_msg) in cases {
        let c = create(name, size, align, flags);
        assert!(
            c.is_null(),
            "{name:?} {size} {align} {flags:#x} was accepted"
        );
        assert_eq!(errno(), want_errno, "{want_msg}");
        assert!(
            last_error().contains(want_msg),
            "{:?} lacks {want_msg:?}",
            last_error()
        );
    }
    let long = CString::new("n".repeat(64)).unwrap();
    assert!(create(&long, 8, 0, 0).is_null());
    assert!(last_error().contains("64 bytes"), "{}", last_error());
    let bad_utf8 = c"\xff\xfe";
    assert!(create(bad_utf8, 8, 0, 0).is_null());
    assert!(last_error().contains("UTF-8"));
    // SAFETY: a non-NULL vmp is rejected before any use.
    let c = unsafe {
        kmem_cache_create(
            c"ffi_vmp".as_ptr(),
            8,
            0,
            None,
            None,
            None,
            ptr::null_mut(),
            ptr::without_provenance_mut(8),
            0,
        )
    };
    assert!(c.is_null());
    assert!(last_error().contains("vmp"));
    // SAFETY: a NULL cache is handled.
    let rc = unsafe { kmem_cache_destroy(ptr::null_mut()) };
    assert_eq!(rc, -libc::EINVAL);
    // SAFETY: a NULL cache is handled.
    let p = unsafe { kmem_cache_alloc(ptr::null_mut(), KM_SLEEP as c_int) };
    assert!(p.is_null());
    assert_eq!(errno(), libc::EINVAL);
    assert!(
        last_error().starts_with("kmem_cache_alloc: NULL cache"),
        "{}",
        last_error()
    );
}

unsafe extern "C" fn ctor(obj: *mut c_void, priv_: *mut c_void, _kmflags: c_int) -> c_int {
    // SAFETY: priv_ is the test's AtomicU64, obj has 64 bytes.
    unsafe {
        (*(priv_ as *const std::sync::atomic::AtomicU64))
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    };
    // SAFETY: obj has 64 writable bytes.
    unsafe { obj.cast::<u8>().write_bytes(0x11, 64) };
    0
}

unsafe extern "C" fn dtor(obj: *mut c_void, priv_: *mut c_void) {
    // SAFETY: obj has 64 readable bytes written by ctor.
    assert_eq!(unsafe { obj.cast::<u8>().read() }, 0x11);
    // SAFETY: priv_ is the test's AtomicU64.
    unsafe {
        (*(priv_ as *const std::sync::atomic::AtomicU64))
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
    };
}

#[test]
#[allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "one invariant (c is live until the final destroy, objects are freed \
              once) covers every call of this scripted C session"
)]
fn a_cache_round_trips_through_the_c_abi() {
    let live = Box::new(std::sync::atomic::AtomicU64::new(0));
    let priv_ = &*live as *const _ as *mut c_void;
    // SAFETY: valid name and callbacks; priv_ outlives the cache.
    let c = unsafe {
        kmem_cache_create(
            c"ffi_ok".as_ptr(),
            64,
            0,
            Some(ctor),
            Some(dtor),
            None,
            priv_,
            ptr::null_mut(),
            0,
        )
    };
    assert!(!c.is_null(), "{}", last_error());
    // SAFETY: c is live for the rest of the test, objects freed once.
    unsafe {
        assert_eq!(kmem_cache_entry_size(c), 64);
        let objs: Vec<_> = (0..10)
            .map(|_| kmem_cache_alloc(c, KM_SLEEP as c_int))
            .collect();
        assert!(objs.iter().all(|p| !p.is_null()));
        assert_eq!(live.load(std::sync::atomic::Ordering::SeqCst), 10);
        assert!(kmem_cache_inuse(c) >= 10);
        assert!(kmem_cache_alloc(c, 0x100).is_null());
        assert_eq!(errno(), libc::EINVAL);
        assert!(
            last_error()
                .contains("cache \"ffi_ok\": kmflags 0x100 have bits outside KM_PUBLIC_MASK"),
            "{}",
            last_error()
        );
        kmem_cache_set_move(c, None);
        assert_eq!(kmem_cache_destroy(c), -libc::EBUSY);
        assert_eq!(errno(), libc::EBUSY);
        let mut snap = CacheSnapshot::ZERO;
        assert_eq!(slabscope_cache_snapshot(c, &mut snap), 0);
        assert_eq!(snap.cache_id, c as u64);
        assert_eq!(snap.name_bytes(), b"ffi_ok");
        for p in objs {
            kmem_cache_free(c, p);
        }
        kmem_cache_free(c, ptr::null_mut());
        assert_eq!(live.load(std::sync::atomic::Ordering::SeqCst), 0);
        kmem_cache_reap_now(c);
        kmem_reap();
        // The snprintf pattern: ask the length, then write. Tests
        // running beside this one build caches and size classes, so
        // the text may grow in between: then ask again.
        let mut buf = Vec::new();
        for _ in 0..100 {
            let n = slabscope_proc_slab(ptr::null_mut(), 0);
            buf = vec![0 as c_char; n + 1];
            if slabscope_proc_slab(buf.as_mut_ptr(), buf.len()) <= n {
                break;
            }
        }
        let text = CStr::from_ptr(buf.as_ptr()).to_str().unwrap();
        assert!(text.lines().any(|l| l.starts_with("ffi_ok ")), "{text}");
        assert_eq!(kmem_cache_destroy(c), 0);
    }
}

#[test]
fn the_hit_paths_jump_to_their_slow_paths_and_keep_the_books() {
    // No constructor or destructor: alloc and free take the inline
    // magazine hit, and a thousand objects live make them take every
    // way out of it (empty magazine, full magazine, depot, slabs).
    let c = create(c"ffi_hits", 64, 0, 0);
    assert!(!c.is_null(), "{}", last_error());
    let p = NonNull::new(c.cast::<c_void>()).unwrap();
    // SAFETY: c is a live cache from kmem_cache_create.
    let cache = unsafe { as_cache(p) };
    let mut expected = last_error();
    for round in 0..3 {
        // SAFETY: c is live; each object is freed once below.
        let objs: Vec<_> = (0..1000)
            .map(|_| unsafe { kmem_cache_alloc(c, KM_SLEEP as c_int) })
            .collect();
        assert!(objs.iter().all(|o| !o.is_null()), "round {round}");
        let distinct: std::collections::HashSet<_> = objs.iter().collect();
        assert_eq!(distinct.len(), objs.len(), "round {round}: an object twice");
        assert_eq!(cache.held(), 1000, "round {round}");
        if round == 1 {
            // A destroy that finds objects allocated leaves the cache
            // usable, its hit paths included.
            // SAFETY: c is live.
            assert_eq!(unsafe { kmem_cache_destroy(c) }, -libc::EBUSY);
            assert!(!cache.is_destroyed());
            expected = last_error();
            assert!(expected.contains("ffi_hits"), "{expected}");
        }
        for o in objs.into_iter().rev() {
            // SAFETY: allocated above, freed once.
            unsafe { kmem_cache_free(c, o) };
        }
        assert_eq!(cache.held(), 0, "round {round}");
        cache.validate().unwrap();
    }
    assert_eq!(last_error(), expected, "a good call set the last error");
    // SAFETY: c is live and holds no object.
    assert_eq!(unsafe { kmem_cache_destroy(c) }, 0, "{}", last_error());
}

#[test]
#[allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "one invariant (c stays readable: destroyed caches' structs are kept) \
              covers every call of this scripted misuse"
)]
fn every_call_after_destroy_is_reported_not_undefined() {
    let c = create(c"ffi_dead", 64, 0, 0);
    assert!(!c.is_null(), "{}", last_error());
    // SAFETY: c came from kmem_cache_create; after the destroy its
    // struct is kept, which is what this test checks.
    unsafe {
        let p = kmem_cache_alloc(c, KM_SLEEP as c_int);
        kmem_cache_free(c, p);
        assert_eq!(kmem_cache_destroy(c), 0);

        assert!(kmem_cache_alloc(c, KM_SLEEP as c_int).is_null());
        assert_eq!(errno(), libc::EINVAL);
        let e = last_error();
        assert!(
            e.contains("kmem_cache_alloc: cache \"ffi_dead\"") && e.contains("was destroyed"),
            "{e}"
        );
        assert_eq!(kmem_cache_destroy(c), -libc::EINVAL);
        assert!(last_error().starts_with("kmem_cache_destroy: cache \"ffi_dead\""));
        let mut snap = CacheSnapshot::ZERO;
        assert_eq!(slabscope_cache_snapshot(c, &mut snap), -libc::EINVAL);
        assert!(last_error().contains("was destroyed"), "{}", last_error());
        kmem_cache_reap_now(c);
        assert_eq!(kmem_cache_inuse(c), 0);
        assert_eq!(kmem_cache_entry_size(c), 0);
    }
    // A struct that is no cache is refused by its magic, a misaligned
    // pointer before it is read (by every entry point but alloc and
    // free, which check only for NULL and a destroyed cache).
    #[repr(C, align(64))]
    struct Fake([u64; 1024]);
    // Room for a whole cache struct: every read stays inside the fake.
    assert!(size_of::<Fake>() >= raw::CACHE_STRUCT_SIZE + 64);
    let mut fake = Fake([0; 1024]);
    let f = (&raw mut fake).cast::<KmemCache>();
    for p in [f, f.wrapping_byte_add(8)] {
        // SAFETY: p points into 8 KiB of readable bytes; the checks stop
        // at the alignment or the magic.
        assert_eq!(unsafe { kmem_cache_destroy(p) }, -libc::EINVAL);
        assert!(last_error().contains("is not a cache"), "{}", last_error());
    }
}

#[test]
fn a_lost_object_of_a_nodebug_cache_sets_errno_and_the_last_error() {
    // What kmem_cache_free(NULL, obj) and a free into a destroyed cache
    // do when the object's cache has no debug checks, through the real
    // entry point (tests/bad_input.rs checks the abort of a debug cache).
    let c = create(c"ffi_lost", 64, 0, KMC_NODEBUG as c_int);
    let dead = create(c"ffi_lost_dead", 64, 0, 0);
    assert!(!c.is_null() && !dead.is_null(), "{}", last_error());
    // SAFETY: c is live.
    let obj = unsafe { kmem_cache_alloc(c, KM_SLEEP as c_int) };
    assert!(!obj.is_null());
    // SAFETY: dead is live and empty.
    assert_eq!(unsafe { kmem_cache_destroy(dead) }, 0);

    fail(0, "");
    // SAFETY: deliberately broken: no cache; obj stays allocated.
    unsafe { kmem_cache_free(ptr::null_mut(), obj) };
    assert_eq!(errno(), libc::EINVAL);
    assert_eq!(
        last_error(),
        format!(
            "kmem_cache_free of {obj:p}: NULL cache: pass a cache from \
             kmem_cache_create (it is an object of cache \"ffi_lost\"): the object is lost"
        )
    );
    fail(0, "");
    // SAFETY: deliberately broken: dead was destroyed (its struct is
    // kept); obj stays allocated.
    unsafe { kmem_cache_free(dead, obj) };
    assert_eq!(errno(), libc::EINVAL);
    let e = last_error();
    assert!(
        e.starts_with(&format!(
            "kmem_cache_free of {obj:p}: cache \"ffi_lost_dead\""
        )) && e.contains("was destroyed")
            && e.ends_with("(it is an object of cache \"ffi_lost\"): the object is lost"),
        "{e}"
    );
    // Neither free touched the object's own cache.
    // SAFETY: c is a live cache from kmem_cache_create.
    let cache = unsafe { as_cache(NonNull::new(c.cast::<c_void>()).unwrap()) };
    assert_eq!(cache.held(), 1);
    // SAFETY: obj came from c and is freed once; c is then empty.
    unsafe { kmem_cache_free(c, obj) };
    assert_eq!(cache.held(), 0);
    // SAFETY: as above.
    assert_eq!(unsafe { kmem_cache_destroy(c) }, 0, "{}", last_error());
}
