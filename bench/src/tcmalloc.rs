//! tcmalloc (gperftools' `libtcmalloc_minimal`) loaded at run time.
//!
//! Linking it would replace `malloc` for the whole process, and then glibc
//! could not be measured beside it. `dlopen` with `RTLD_LOCAL` keeps its
//! `malloc` out of the global symbol scope; the bench calls its own
//! entry points `tc_malloc`/`tc_free` instead. When the library is missing
//! (Debian package `libtcmalloc-minimal4`), tcmalloc is left out of the run
//! and the report says so.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

use anyhow::{Result, anyhow};

/// Sonames tried in order.
const SONAMES: [&CStr; 2] = [c"libtcmalloc_minimal.so.4", c"libtcmalloc_minimal.so"];

/// The tcmalloc entry points the bench uses.
#[derive(Debug)]
pub struct Tcmalloc {
    pub malloc: unsafe extern "C" fn(usize) -> *mut c_void,
    pub free: unsafe extern "C" fn(*mut c_void),
    pub release_free_memory: unsafe extern "C" fn(),
    /// `major.minor` and patch string from `tc_version`.
    pub version: String,
    /// The soname that loaded.
    pub soname: &'static str,
}

static TCMALLOC: OnceLock<Result<Tcmalloc, String>> = OnceLock::new();

impl Tcmalloc {
    /// The loaded library, loading it on first use.
    pub fn get() -> Result<&'static Tcmalloc> {
        TCMALLOC
            .get_or_init(load)
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }
}

fn dlerror() -> String {
    // SAFETY: dlerror has no preconditions.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        return "unknown dlopen error".into();
    }
    // SAFETY: dlerror returned a NUL-terminated string valid until the next dl call.
    let s = unsafe { CStr::from_ptr(e) };
    s.to_string_lossy().into_owned()
}

/// Look `name` up in `handle`.
fn sym(handle: *mut c_void, name: &CStr) -> Result<*mut c_void, String> {
    // SAFETY: handle is a live dlopen handle, name is NUL terminated.
    let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
    if p.is_null() {
        Err(format!("tcmalloc has no symbol {name:?}: {}", dlerror()))
    } else {
        Ok(p)
    }
}

fn load() -> Result<Tcmalloc, String> {
    let mut errors = Vec::new();
    for soname in SONAMES {
        // SAFETY: soname is NUL terminated; loading runs tcmalloc's
        // initialisers, which only set up its own state.
        let handle = unsafe { libc::dlopen(soname.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            errors.push(dlerror());
            continue;
        }
        let malloc = sym(handle, c"tc_malloc")?;
        let free = sym(handle, c"tc_free")?;
        let release = sym(handle, c"MallocExtension_ReleaseFreeMemory")?;
        let version = sym(handle, c"tc_version")?;
        // SAFETY: the symbols are gperftools' C API with exactly these
        // signatures (gperftools/tcmalloc.h, malloc_extension_c.h); the same
        // holds for the three transmutes below.
        let malloc: unsafe extern "C" fn(usize) -> *mut c_void =
            unsafe { std::mem::transmute(malloc) };
        // SAFETY: see above.
        let free: unsafe extern "C" fn(*mut c_void) = unsafe { std::mem::transmute(free) };
        // SAFETY: see above.
        let release_free_memory: unsafe extern "C" fn() = unsafe { std::mem::transmute(release) };
        // SAFETY: see above.
        let tc_version: unsafe extern "C" fn(
            *mut c_int,
            *mut c_int,
            *mut *const c_char,
        ) -> *const c_char = unsafe { std::mem::transmute(version) };
        let (mut major, mut minor) = (0, 0);
        let mut patch: *const c_char = std::ptr::null();
        // SAFETY: tc_version writes the three out-parameters and returns a static string.
        let full = unsafe { tc_version(&raw mut major, &raw mut minor, &raw mut patch) };
        let version = if full.is_null() {
            format!("{major}.{minor}")
        } else {
            // SAFETY: tc_version returns a static NUL-terminated string.
            let s = unsafe { CStr::from_ptr(full) };
            s.to_string_lossy().into_owned()
        };
        return Ok(Tcmalloc {
            malloc,
            free,
            release_free_memory,
            version,
            soname: soname.to_str().unwrap_or("libtcmalloc_minimal"),
        });
    }
    Err(format!(
        "tcmalloc left out: could not dlopen libtcmalloc_minimal ({}); install the Debian package libtcmalloc-minimal4 (cargo xtask setup does)",
        errors.join("; ")
    ))
}
