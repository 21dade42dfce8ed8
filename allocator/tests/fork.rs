//! A forked child keeps using the parent's caches: allocation and free,
//! grows on the worker pool (which the child does not inherit), and the
//! cross-CPU work that needs `membarrier()` with restartable-sequence
//! magazines (reap, validate, destroy).
//!
//! One test in its own process: fork() copies only the calling thread, so
//! nothing else may be running slabscope code at that moment.

mod support;

use std::ptr::NonNull;

use slabscope::flags::KM_SLEEP;
use slabscope::{CacheBuilder, tunables};
use support::threads_named;

#[test]
fn a_forked_child_allocates_grows_reaps_validates_and_destroys() {
    let cache = CacheBuilder::new("fork_parent", 64).build().unwrap();
    let held: Vec<NonNull<u8>> = (0..300).map(|_| cache.alloc(KM_SLEEP).unwrap()).collect();
    cache.reap_now();
    cache.validate().unwrap();
    // A grow delay keeps every grow off the allocating thread: the parent
    // starts its workers, and the child's grows need workers of its own.
    tunables::fault::set_grow_delay_ms(1);
    let extra: Vec<NonNull<u8>> = (0..100).map(|_| cache.alloc(KM_SLEEP).unwrap()).collect();
    let slabs_at_fork = cache.stats().slab_create;
    assert!(
        threads_named("slabscope-grow") > 0,
        "the parent's grows ran on workers"
    );

    // SAFETY: fork has no preconditions; the child only runs the block
    // below and leaves with _exit, never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mine: Vec<NonNull<u8>> = (0..500).map(|_| cache.alloc(KM_SLEEP).unwrap()).collect();
            let s = cache.stats();
            assert!(
                s.slab_create > slabs_at_fork && s.obj_emergency == 0,
                "the child's grows ran on its own workers: {s:?}"
            );
            for p in mine
                .into_iter()
                .chain(held.iter().copied())
                .chain(extra.iter().copied())
            {
                // SAFETY: allocated from this cache (in the parent, then
                // copied with the address space, or here), freed once.
                unsafe { cache.free(p) };
            }
            cache.reap_now();
            cache.validate().unwrap();
            let s = cache.stats();
            assert_eq!(s.obj_alloc, s.mag_objs, "{s:?}");
            cache.destroy().unwrap();
        }))
        .is_ok();
        // SAFETY: _exit ends the child without running the parent's
        // atexit handlers or the test harness.
        unsafe { libc::_exit(i32::from(!ok)) };
    }
    let mut status = 0;
    // SAFETY: pid is our child; status is a valid out pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the forked child failed (status {status:#x})"
    );
    tunables::fault::set_grow_delay_ms(0);
    // The parent's cache is untouched by the child's frees and destroy.
    cache.validate().unwrap();
    let s = cache.stats();
    assert_eq!(s.obj_alloc - s.mag_objs, 400, "{s:?}");
    for p in held.into_iter().chain(extra) {
        // SAFETY: allocated above, freed once.
        unsafe { cache.free(p) };
    }
    cache.destroy().unwrap();
}
