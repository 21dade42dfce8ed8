//! Fault injection that may change while caches run, so a test or the demo
//! can make one phase's grows slow or failing. Both start from the tunables
//! of the same names when the tunables take effect (the first cache), unless
//! they were set here before that: an explicit call always wins. Every grow
//! reads them when it starts.
//!
//! Public only with the `testing` feature (the allocator's own tests and
//! examples enable it).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(any(test, feature = "testing"))]
use super::bad;
#[cfg(any(test, feature = "testing"))]
use crate::error::Error;

/// "Not set yet": the tunables will seed it.
const UNSET_MS: u64 = u64::MAX;
const UNSET_PERMILLE: u32 = u32::MAX;

static GROW_DELAY_MS: AtomicU64 = AtomicU64::new(UNSET_MS);
static SLAB_FAIL_PERMILLE: AtomicU32 = AtomicU32::new(UNSET_PERMILLE);

/// Seeds both from the tunables unless already set explicitly.
pub(super) fn seed(grow_delay_ms: u64, slab_fail_permille: u32) {
    let _ = GROW_DELAY_MS.compare_exchange(
        UNSET_MS,
        grow_delay_ms,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let _ = SLAB_FAIL_PERMILLE.compare_exchange(
        UNSET_PERMILLE,
        slab_fail_permille,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
}

/// Every grow from now on sleeps `ms` before mapping its slab; with more
/// than `grow_timeout_ms` the allocation waiting for it deadlocks.
/// `u64::MAX` is taken as `u64::MAX - 1` ms (for ever, in practice).
#[cfg(any(test, feature = "testing"))]
pub fn set_grow_delay_ms(ms: u64) {
    GROW_DELAY_MS.store(ms.min(UNSET_MS - 1), Ordering::Relaxed);
}

/// The injected grow delay in effect.
pub fn grow_delay_ms() -> u64 {
    match GROW_DELAY_MS.load(Ordering::Relaxed) {
        UNSET_MS => 0,
        ms => ms,
    }
}

/// From now on `permille` of 1000 slab mappings fail (0..=1000).
#[cfg(any(test, feature = "testing"))]
pub fn set_slab_fail_permille(permille: u32) -> Result<(), Error> {
    if permille > 1000 {
        return Err(bad(
            "fault_slab_fail_permille",
            permille,
            "must be 0..=1000 (failures per 1000 slab mappings)",
        ));
    }
    SLAB_FAIL_PERMILLE.store(permille, Ordering::Relaxed);
    Ok(())
}

/// The injected slab mapping failure rate in effect, per 1000.
pub fn slab_fail_permille() -> u32 {
    match SLAB_FAIL_PERMILLE.load(Ordering::Relaxed) {
        UNSET_PERMILLE => 0,
        p => p,
    }
}
