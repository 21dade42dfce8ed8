//! Frees that break the contract — double frees, foreign pointers, objects
//! of another cache — through the Rust API and the C ABI.
//!
//! With debugging on (no `KMC_NODEBUG`) each is detected at the free call by
//! the object header (magic, address and state word) and the process aborts
//! with a message naming the cache and the pointer. An abort cannot be caught
//! in-process, so each scenario runs in a child: the test re-executes this
//! test binary, filtered to itself, with `SLABSCOPE_BAD_INPUT` naming the
//! scenario; the child runs it and the parent checks the signal and stderr.
//!
//! With `KMC_NODEBUG` nothing is checked at the call; the last scenario pins
//! down what happens then (the object is handed out twice, and
//! `Cache::validate` reports the corruption).
//!
//! The argument checks of cache creation and busy destroys are covered by
//! `cache_tests::bad_inputs_are_errors`, `cache_tests::destroy_with_objects_
//! allocated_is_busy_and_frees_nothing` and this crate's unit tests; NULL frees
//! through the C ABI here, and frees with a NULL or destroyed cache, which
//! abort when the object's cache has debug checks or no cache handed it out
//! (this crate's unit tests cover a `KMC_NODEBUG` cache's errno).

use std::ffi::{CStr, c_int, c_void};
use std::process::Output;
use std::ptr::{self, NonNull};

// The allocator the C library wraps; the C library itself is loaded from
// libslabscope.so (`support::ffi`).
use slabscope_rs::flags::{KM_SLEEP, KMC_NODEBUG};
use slabscope_rs::tunables::{self, Tunables};
use slabscope_rs::{Cache, CacheBuilder};
use slabscope_testkit::child;
use support::ffi;

mod support;

const SCENARIO: &str = "SLABSCOPE_BAD_INPUT";

/// Runs `scenario` in a child process when this is the child, else spawns
/// the child (this binary, filtered to `test_name`) and returns its output.
fn in_child(test_name: &str, scenario: fn()) -> Output {
    child::in_child(SCENARIO, test_name, scenario)
}

/// The child aborted (SIGABRT) after printing `PTR=<p>`, and stderr names
/// `cache` and that pointer along with `what`.
fn assert_aborted_naming(out: &Output, cache: &str, what: &str) {
    child::assert_aborted_naming_ptr(out, &[&format!("cache {cache:?}"), what]);
}

fn debug_cache(name: &str) -> Cache {
    CacheBuilder::new(name, 64).build().expect("valid cache")
}

#[test]
fn rust_double_free_aborts_naming_cache_and_pointer() {
    let out = in_child("rust_double_free_aborts_naming_cache_and_pointer", || {
        let c = debug_cache("bad_double");
        let keep = c.alloc(KM_SLEEP).unwrap();
        let p = c.alloc(KM_SLEEP).unwrap();
        println!("PTR={p:p}");
        // SAFETY: the first free is legitimate.
        unsafe { c.free(p) };
        // Push it on to the slab so the second free is not merely a
        // magazine duplicate: the header state must catch it either way.
        c.reap_now();
        // SAFETY: deliberately broken: p was freed above (the slab stays
        // mapped because `keep` is live, so the header read is in bounds).
        unsafe { c.free(p) };
        // SAFETY: never reached; keeps `keep` live up to the bad free.
        unsafe { c.free(keep) };
    });
    assert_aborted_naming(&out, "bad_double", "double free");
}

#[test]
fn rust_double_free_in_the_magazine_aborts() {
    let out = in_child("rust_double_free_in_the_magazine_aborts", || {
        let c = debug_cache("bad_double_mag");
        let p = c.alloc(KM_SLEEP).unwrap();
        println!("PTR={p:p}");
        // SAFETY: the first free is legitimate.
        unsafe { c.free(p) };
        // SAFETY: deliberately broken: p sits in the magazine now.
        unsafe { c.free(p) };
    });
    assert_aborted_naming(&out, "bad_double_mag", "double free");
}

#[test]
fn rust_foreign_pointer_aborts_naming_cache_and_pointer() {
    let out = in_child(
        "rust_foreign_pointer_aborts_naming_cache_and_pointer",
        || {
            let c = debug_cache("bad_foreign");
            // A heap block large enough that the header read stays inside it.
            let foreign = Box::leak(vec![0u8; 4096].into_boxed_slice());
            let p = NonNull::new(foreign.as_mut_ptr()).unwrap();
            println!("PTR={p:p}");
            // SAFETY: deliberately broken: p never came from this cache.
            unsafe { c.free(p) };
        },
    );
    assert_aborted_naming(&out, "bad_foreign", "does not carry this cache's mark");
}

#[test]
fn rust_misaligned_pointer_aborts_before_reading_a_header() {
    let out = in_child(
        "rust_misaligned_pointer_aborts_before_reading_a_header",
        || {
            let c = debug_cache("bad_misaligned");
            let p = c.alloc(KM_SLEEP).unwrap();
            let inside = NonNull::new(p.as_ptr().wrapping_add(3)).unwrap();
            println!("PTR={inside:p}");
            // SAFETY: deliberately broken: a pointer into the middle of an object.
            unsafe { c.free(inside) };
        },
    );
    assert_aborted_naming(
        &out,
        "bad_misaligned",
        "not aligned like this cache's objects",
    );
}

/// Slabs are built lazily: an object its slab never handed out still has
/// the zero header of a fresh mapping, which carries no cache's mark.
#[test]
fn rust_free_of_an_object_never_handed_out_aborts() {
    let out = in_child("rust_free_of_an_object_never_handed_out_aborts", || {
        // Refills of one object and no depot: the first allocation builds
        // object 0 alone.
        tunables::set(Tunables {
            magazine_size: 2,
            depot_kb: 0,
            ..Tunables::default()
        })
        .expect("tunables before the first cache");
        let c = debug_cache("bad_unbuilt");
        let p = c.alloc(KM_SLEEP).unwrap();
        let s = c.stats();
        assert_eq!(
            (s.counters.obj_alloc, s.counters.slab_total),
            (1, 1),
            "{s:?}"
        );
        // The slab's last object, p being its first.
        let last = p
            .as_ptr()
            .wrapping_add(((s.slab_objs - 1) * s.obj_size_full) as usize);
        println!("PTR={last:p}");
        // SAFETY: deliberately broken: the slab never handed `last` out.
        unsafe { c.free(NonNull::new(last).unwrap()) };
    });
    assert_aborted_naming(&out, "bad_unbuilt", "does not carry this cache's mark");
}

/// A write past the end of an object into the header of the next, never
/// built one is caught when the slab builds it (debug caches).
#[test]
fn rust_overflow_into_an_object_never_handed_out_aborts_when_it_is_built() {
    let out = in_child(
        "rust_overflow_into_an_object_never_handed_out_aborts_when_it_is_built",
        || {
            // Refills of one object and no depot, as above.
            tunables::set(Tunables {
                magazine_size: 2,
                depot_kb: 0,
                ..Tunables::default()
            })
            .expect("tunables before the first cache");
            let c = debug_cache("bad_overflow");
            let p = c.alloc(KM_SLEEP).unwrap();
            let s = c.stats();
            assert_eq!(s.obj_size_full, 72, "{s:?}");
            // The 8 bytes past p's 64 are the next object's header.
            // Deliberately broken: a write past the end of p, into its
            // slab's memory.
            let past = p.as_ptr().wrapping_add(64).cast::<u64>();
            // SAFETY: 8-aligned and inside p's mapped slab (the next
            // object's header); the write is the bug under test.
            unsafe { past.write(0x4141_4141) };
            println!("PTR={:p}", p.as_ptr().wrapping_add(72));
            // Building the next object finds its header written.
            let _ = c.alloc(KM_SLEEP);
        },
    );
    assert_aborted_naming(
        &out,
        "bad_overflow",
        "the header of an object never handed out is not zero",
    );
}

#[test]
fn rust_free_into_another_cache_aborts() {
    let out = in_child("rust_free_into_another_cache_aborts", || {
        let a = debug_cache("bad_owner_a");
        let b = debug_cache("bad_owner_b");
        let p = a.alloc(KM_SLEEP).unwrap();
        println!("PTR={p:p}");
        // SAFETY: deliberately broken: p belongs to cache a (same geometry,
        // so magic and address check out; the state word does not).
        unsafe { b.free(p) };
    });
    assert_aborted_naming(&out, "bad_owner_b", "another cache");
}

fn c_create(name: &CStr, flags: c_int) -> *mut ffi::KmemCache {
    // SAFETY: a valid name, no callbacks.
    let c = unsafe { ffi::kmem_cache_create(name.as_ptr(), 64, 0, flags) };
    assert!(!c.is_null(), "kmem_cache_create({name:?}) failed");
    c
}

#[test]
fn c_double_free_aborts_naming_cache_and_pointer() {
    let out = in_child("c_double_free_aborts_naming_cache_and_pointer", || {
        let c = c_create(c"bad_c_double", 0);
        // SAFETY: c is a live cache.
        let p = unsafe { ffi::kmem_cache_alloc(c, KM_SLEEP as c_int) };
        println!("PTR={p:p}");
        // SAFETY: the first free is legitimate.
        unsafe { ffi::kmem_cache_free(c, p) };
        // SAFETY: deliberately broken: freed above.
        unsafe { ffi::kmem_cache_free(c, p) };
    });
    assert_aborted_naming(&out, "bad_c_double", "double free");
}

#[test]
fn c_foreign_pointer_aborts_naming_cache_and_pointer() {
    let out = in_child("c_foreign_pointer_aborts_naming_cache_and_pointer", || {
        let c = c_create(c"bad_c_foreign", 0);
        // SAFETY: malloc of a non-zero size; calloc zeroes it.
        let p: *mut c_void = unsafe { libc::calloc(1, 4096) };
        assert!(!p.is_null());
        println!("PTR={p:p}");
        // SAFETY: deliberately broken: p is malloc memory.
        unsafe { ffi::kmem_cache_free(c, p) };
    });
    assert_aborted_naming(&out, "bad_c_foreign", "does not carry this cache's mark");
}

#[test]
fn c_null_free_is_a_no_op() {
    let c = c_create(c"bad_c_null", 0);
    // SAFETY: c is live; NULL objects are documented no-ops.
    unsafe { ffi::kmem_cache_free(c, ptr::null_mut()) };
    // SAFETY: c is live.
    let p = unsafe { ffi::kmem_cache_alloc(c, KM_SLEEP as c_int) };
    assert!(!p.is_null());
    // SAFETY: c is live.
    unsafe { ffi::kmem_cache_free(c, ptr::null_mut()) };
    // SAFETY: p is live and freed once.
    unsafe { ffi::kmem_cache_free(c, p) };
    // SAFETY: c is live; every object was freed, so destroy succeeds and
    // the NULL frees changed nothing.
    assert_eq!(unsafe { ffi::kmem_cache_destroy(c) }, 0);
}

#[test]
fn c_free_with_a_null_cache_aborts_naming_the_object() {
    let out = in_child("c_free_with_a_null_cache_aborts_naming_the_object", || {
        let c = c_create(c"bad_c_nullcache", 0);
        // SAFETY: c is live.
        let p = unsafe { ffi::kmem_cache_alloc(c, KM_SLEEP as c_int) };
        println!("PTR={p:p}");
        // SAFETY: deliberately broken: the object's cache is not passed.
        unsafe { ffi::kmem_cache_free(ptr::null_mut(), p) };
    });
    let (ptr, stderr) = child::aborted(&out);
    assert!(
        stderr.contains(&format!("kmem_cache_free of {ptr}: NULL cache"))
            && stderr.contains("(it is an object of cache \"bad_c_nullcache\")")
            && stderr.contains("the object is lost"),
        "{stderr}"
    );
}

#[test]
fn c_free_of_a_foreign_pointer_with_a_null_cache_aborts() {
    let out = in_child(
        "c_free_of_a_foreign_pointer_with_a_null_cache_aborts",
        || {
            // Memory slabscope never mapped: found to be no cache's object
            // without being read as one.
            let mut block = Box::new([0u64; 8]);
            let p = block.as_mut_ptr().wrapping_add(1).cast::<c_void>();
            println!("PTR={p:p}");
            // SAFETY: deliberately broken: not an object of any cache.
            unsafe { ffi::kmem_cache_free(ptr::null_mut(), p) };
        },
    );
    let (ptr, stderr) = child::aborted(&out);
    assert!(
        stderr.contains(&format!(
            "kmem_cache_free of {ptr}: NULL cache: pass a cache from kmem_cache_create \
             (no live cache handed it out)"
        )),
        "{stderr}"
    );
}

#[test]
fn c_free_into_a_destroyed_cache_aborts_naming_it() {
    let out = in_child("c_free_into_a_destroyed_cache_aborts_naming_it", || {
        let c = c_create(c"bad_c_destroyed", 0);
        let other = c_create(c"bad_c_destroyed_other", 0);
        // SAFETY: other is live.
        let p = unsafe { ffi::kmem_cache_alloc(other, KM_SLEEP as c_int) };
        // SAFETY: c is live and empty.
        assert_eq!(unsafe { ffi::kmem_cache_destroy(c) }, 0);
        println!("PTR={p:p}");
        // SAFETY: deliberately broken: c was destroyed (its struct is kept).
        unsafe { ffi::kmem_cache_free(c, p) };
    });
    assert_aborted_naming(&out, "bad_c_destroyed", "was destroyed");
}

#[test]
fn nodebug_double_free_hands_the_object_out_twice_and_validate_reports_it() {
    let out = in_child(
        "nodebug_double_free_hands_the_object_out_twice_and_validate_reports_it",
        || {
            let c = CacheBuilder::new("bad_nodebug", 64)
                .flags(KMC_NODEBUG)
                .build()
                .unwrap();
            // Pin to one CPU so both frees and both allocations use one
            // magazine.
            // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: CPU 0 is within the set's bounds.
            unsafe { libc::CPU_SET(0, &mut set) };
            // SAFETY: `set` is a valid mask of the size passed.
            let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
            assert_eq!(rc, 0, "cannot pin the child to CPU 0");
            let p = c.alloc(KM_SLEEP).unwrap();
            // SAFETY: the first free is legitimate.
            unsafe { c.free(p) };
            // SAFETY: deliberately broken; KMC_NODEBUG does not check.
            unsafe { c.free(p) };
            println!("VALIDATE={:?}", c.validate());
            let a = c.alloc(KM_SLEEP).unwrap();
            let b = c.alloc(KM_SLEEP).unwrap();
            println!("TWICE={}", a == b && a == p);
        },
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the KMC_NODEBUG child should run on: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("VALIDATE=Err(") && stdout.contains("two magazine slots"),
        "validate should report the duplicate: {stdout}"
    );
    assert!(stdout.contains("TWICE=true"), "{stdout}");
}
