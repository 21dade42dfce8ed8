//! The C ABI of `slabscope::kmem`, beside the cache ABI of [`crate`]:
//! SPL's `kmem_alloc`, `kmem_zalloc`, `kmem_free`, `vmem_alloc`,
//! `vmem_zalloc` and `vmem_free`, declared in `include/slabscope.h`.
//!
//! | function | difference from SPL |
//! |---|---|
//! | `kmem_alloc(size, kmflags)`, `kmem_zalloc`, `vmem_*` | NULL (errno `EINVAL`, `slabscope_last_error()`) on kmflags outside `KM_PUBLIC_MASK`; NULL (errno `ENOMEM`) when the OS refuses a request above the largest class |
//! | `kmem_free(ptr, size)`, `vmem_free` | NULL is a no-op; a `size` larger than the block, a double free or a pointer slabscope did not hand out aborts with a message |

use std::ffi::{c_int, c_void};
use std::ptr::{self, NonNull};

use slabscope_probes::flags::KM_PUBLIC_MASK;
use slabscope_rs::kmem;

use crate::fail;

fn alloc(what: &str, size: usize, kmflags: c_int, zero: bool) -> *mut c_void {
    let kmflags = kmflags as u32;
    if kmflags & !KM_PUBLIC_MASK != 0 {
        fail(
            libc::EINVAL,
            &format!(
                "{what}: kmflags {kmflags:#x} have bits outside KM_PUBLIC_MASK: \
                 pass KM_SLEEP or KM_NOSLEEP"
            ),
        );
        return ptr::null_mut();
    }
    let p = if zero {
        kmem::kmem_zalloc(size, kmflags)
    } else {
        kmem::kmem_alloc(size, kmflags)
    };
    match p {
        Some(p) => p.as_ptr().cast(),
        None => {
            fail(
                libc::ENOMEM,
                &format!("{what}: no memory for {size} bytes (the system refused it)"),
            );
            ptr::null_mut()
        }
    }
}

/// `kmem_alloc`: `size` bytes, 16-aligned, from the `kmem_alloc_<size>`
/// class that fits or a mapping of their own.
#[unsafe(no_mangle)]
pub extern "C" fn kmem_alloc(size: usize, kmflags: c_int) -> *mut c_void {
    alloc("kmem_alloc", size, kmflags, false)
}

/// `kmem_zalloc`: [`kmem_alloc`], zeroed.
#[unsafe(no_mangle)]
pub extern "C" fn kmem_zalloc(size: usize, kmflags: c_int) -> *mut c_void {
    alloc("kmem_zalloc", size, kmflags, true)
}

/// `vmem_alloc`: the same as [`kmem_alloc`].
#[unsafe(no_mangle)]
pub extern "C" fn vmem_alloc(size: usize, kmflags: c_int) -> *mut c_void {
    alloc("vmem_alloc", size, kmflags, false)
}

/// `vmem_zalloc`: the same as [`kmem_zalloc`].
#[unsafe(no_mangle)]
pub extern "C" fn vmem_zalloc(size: usize, kmflags: c_int) -> *mut c_void {
    alloc("vmem_zalloc", size, kmflags, true)
}

/// `kmem_free`; NULL is a no-op.
///
/// # Safety
/// `ptr` is NULL or came from `kmem_alloc`/`kmem_zalloc` and is not used
/// afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kmem_free(ptr: *const c_void, size: usize) {
    if let Some(p) = NonNull::new(ptr.cast_mut().cast::<u8>()) {
        // SAFETY: forwarded caller guarantee.
        unsafe { kmem::kmem_free(p, size) }
    }
}

/// `vmem_free`: the same as [`kmem_free`].
///
/// # Safety
/// As [`kmem_free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vmem_free(ptr: *const c_void, size: usize) {
    // SAFETY: forwarded caller guarantee.
    unsafe { kmem_free(ptr, size) }
}
