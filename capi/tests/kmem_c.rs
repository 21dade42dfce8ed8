//! The C ABI of `kmem_alloc` and its kin (`capi/src/kmem.rs`): zeroed
//! blocks, `KM_NOSLEEP`, NULL frees, and bad flags reported through `errno`
//! and `slabscope_last_error()`. The size classes themselves are tested
//! through the Rust API in the allocator's `tests/kmem.rs`.

use std::ffi::c_int;

// The C library, loaded from libslabscope.so.
use slabscope_probes::flags::{KM_NOSLEEP, KM_SLEEP};
use support::ffi::{kmem_alloc, kmem_free, slabscope_last_error, vmem_zalloc};

mod support;

#[test]
fn the_c_abi_allocates_zeroes_and_reports_bad_flags() {
    let p = vmem_zalloc(3000, KM_SLEEP as c_int);
    assert!(!p.is_null());
    // SAFETY: p is a block of 3000 bytes.
    let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), 3000) };
    assert!(bytes.iter().all(|&b| b == 0), "3000 bytes not zeroed");
    // SAFETY: p came from vmem_zalloc(3000).
    unsafe { kmem_free(p, 3000) };
    let q = kmem_alloc(10, KM_NOSLEEP as c_int);
    assert!(!q.is_null(), "a class with room serves KM_NOSLEEP");
    // SAFETY: q came from kmem_alloc(10); NULL is a no-op.
    unsafe { kmem_free(q, 10) };
    // SAFETY: NULL is a no-op.
    unsafe { kmem_free(std::ptr::null(), 0) };
    let bad = kmem_alloc(10, 0x40);
    assert!(bad.is_null());
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EINVAL)
    );
    let msg = slabscope_last_error();
    // SAFETY: a NUL-terminated string of this thread.
    let msg = unsafe { std::ffi::CStr::from_ptr(msg) };
    assert!(msg.to_string_lossy().contains("KM_PUBLIC_MASK"), "{msg:?}");
}
