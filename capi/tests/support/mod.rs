//! Helpers shared by the C library's integration tests.
#![allow(dead_code, reason = "each test crate uses a different subset")]

use std::path::PathBuf;

/// The directory holding the `libslabscope.so` built for this test run
/// (this crate has no rlib, so cargo builds no library for its tests).
pub fn lib_dir() -> PathBuf {
    let lib = slabscope_testkit::cdylib("slabscope-capi", "libslabscope.so");
    lib.parent().expect("the library's directory").to_path_buf()
}

/// The functions of `libslabscope.so` the tests call from Rust, resolved
/// with `dlopen`/`dlsym` from the library cargo built, as a C program's
/// loader resolves them (this crate builds no rlib: its library file would
/// collide with the allocator's, both being named `slabscope`).
pub mod ffi {
    use std::ffi::{CString, c_char, c_int, c_void};
    use std::sync::OnceLock;

    /// `struct kmem_cache` of the header: opaque.
    pub enum KmemCache {}

    struct Lib {
        create: unsafe extern "C" fn(
            *const c_char,
            usize,
            usize,
            *const c_void,
            *const c_void,
            *const c_void,
            *mut c_void,
            *mut c_void,
            c_int,
        ) -> *mut KmemCache,
        alloc: unsafe extern "C" fn(*mut KmemCache, c_int) -> *mut c_void,
        free: unsafe extern "C" fn(*mut KmemCache, *mut c_void),
        destroy: unsafe extern "C" fn(*mut KmemCache) -> c_int,
        kmem_alloc: unsafe extern "C" fn(usize, c_int) -> *mut c_void,
        vmem_zalloc: unsafe extern "C" fn(usize, c_int) -> *mut c_void,
        kmem_free: unsafe extern "C" fn(*const c_void, usize),
        last_error: unsafe extern "C" fn() -> *const c_char,
    }

    /// The function `name` of the library `handle`, as a pointer of type `F`.
    ///
    /// # Safety
    /// `handle` is a live `dlopen` handle, never closed, and `F` is the
    /// function pointer type of that C function.
    unsafe fn sym<F: Copy>(handle: *mut c_void, name: &str) -> F {
        assert_eq!(
            size_of::<F>(),
            size_of::<*mut c_void>(),
            "{name}: not a pointer type"
        );
        let c = CString::new(name).expect("a symbol name");
        // SAFETY: handle is live (caller), c a NUL-terminated name.
        let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
        assert!(!p.is_null(), "libslabscope.so does not export {name}");
        // SAFETY: F is the function's pointer type (caller) and as large as
        // the pointer (checked).
        unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) }
    }

    fn lib() -> &'static Lib {
        static LIB: OnceLock<Lib> = OnceLock::new();
        LIB.get_or_init(|| {
            let path = super::lib_dir().join("libslabscope.so");
            let c = CString::new(path.to_str().expect("a UTF-8 path")).expect("no NUL");
            // SAFETY: a NUL-terminated path; the library stays loaded (never
            // dlclosed), so the function pointers below stay valid.
            let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            assert!(!handle.is_null(), "cannot dlopen {}", path.display());
            macro_rules! load {
                ($name:literal) => {
                    // SAFETY: the handle is never closed, and the field's
                    // type is the signature of the function of that name in
                    // include/slabscope.h (the callbacks as plain pointers:
                    // the tests pass NULL).
                    unsafe { sym(handle, $name) }
                };
            }
            Lib {
                create: load!("kmem_cache_create"),
                alloc: load!("kmem_cache_alloc"),
                free: load!("kmem_cache_free"),
                destroy: load!("kmem_cache_destroy"),
                kmem_alloc: load!("kmem_alloc"),
                vmem_zalloc: load!("vmem_zalloc"),
                kmem_free: load!("kmem_free"),
                last_error: load!("slabscope_last_error"),
            }
        })
    }

    /// `kmem_cache_create(name, size, align, NULL, NULL, NULL, NULL, NULL,
    /// flags)`: a cache without callbacks.
    ///
    /// # Safety
    /// `name` is NULL or NUL-terminated.
    pub unsafe fn kmem_cache_create(
        name: *const c_char,
        size: usize,
        align: usize,
        flags: c_int,
    ) -> *mut KmemCache {
        let null = std::ptr::null();
        let nul = std::ptr::null_mut();
        // SAFETY: forwarded caller guarantee; NULL callbacks are allowed.
        unsafe { (lib().create)(name, size, align, null, null, null, nul, nul, flags) }
    }

    /// `kmem_cache_alloc`.
    ///
    /// # Safety
    /// As the C function's (include/slabscope.h).
    pub unsafe fn kmem_cache_alloc(cache: *mut KmemCache, kmflags: c_int) -> *mut c_void {
        // SAFETY: forwarded caller guarantee.
        unsafe { (lib().alloc)(cache, kmflags) }
    }

    /// `kmem_cache_free`.
    ///
    /// # Safety
    /// As the C function's.
    pub unsafe fn kmem_cache_free(cache: *mut KmemCache, obj: *mut c_void) {
        // SAFETY: forwarded caller guarantee.
        unsafe { (lib().free)(cache, obj) }
    }

    /// `kmem_cache_destroy`.
    ///
    /// # Safety
    /// As the C function's.
    pub unsafe fn kmem_cache_destroy(cache: *mut KmemCache) -> c_int {
        // SAFETY: forwarded caller guarantee.
        unsafe { (lib().destroy)(cache) }
    }

    /// `kmem_alloc`.
    pub fn kmem_alloc(size: usize, kmflags: c_int) -> *mut c_void {
        // SAFETY: no preconditions.
        unsafe { (lib().kmem_alloc)(size, kmflags) }
    }

    /// `vmem_zalloc`.
    pub fn vmem_zalloc(size: usize, kmflags: c_int) -> *mut c_void {
        // SAFETY: no preconditions.
        unsafe { (lib().vmem_zalloc)(size, kmflags) }
    }

    /// `kmem_free`.
    ///
    /// # Safety
    /// As the C function's.
    pub unsafe fn kmem_free(ptr: *const c_void, size: usize) {
        // SAFETY: forwarded caller guarantee.
        unsafe { (lib().kmem_free)(ptr, size) }
    }

    /// `slabscope_last_error`.
    pub fn slabscope_last_error() -> *const c_char {
        // SAFETY: no preconditions.
        unsafe { (lib().last_error)() }
    }
}
