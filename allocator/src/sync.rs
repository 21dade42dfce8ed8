//! The magazine's synchronisation primitives, from `std` normally and from
//! `loom` under `--cfg loom` (the facade sharded-slab uses), so the
//! magazine's lock protocol can be model-checked:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p slabscope --lib --release loom
//! ```
//!
//! Through this facade go the magazine (lock, count, slots) and each
//! cache's lock, condition variables, flag word and emergency mirror, so
//! loom explores magazine access, grow dispatch and wait, emergency objects
//! and reaping (the models are in `loom_tests`). Under loom a grow runs on a
//! loom thread of its own instead of the worker pool (see `grow`), and
//! [`wait_timeout_while`] either waits for a notification or, per cache, is
//! modelled as expiring (loom 0.7 has no model of time), which is how the
//! DEADLOCKED transition is explored. Process-wide state (the registry, the
//! pool, tunables) stays on std.

use std::time::Duration;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

/// Waits on `cv` while `cond` holds, at most `dur`. Returns the guard and
/// whether the wait timed out (with `cond` still holding). Poisoning is
/// ignored (the state is plain counters kept consistent under the lock).
///
/// Under loom time does not exist, so `expires` picks the model: `false`
/// waits for a notification however long that takes (a lost wake-up is a
/// loom deadlock); `true` models a wait that expires — the lock is released,
/// every other thread may run (loom explores which), then the lock is
/// retaken with `relock` and the wait has timed out if `cond` still holds.
/// Outside loom `expires` and `relock` are unused.
pub(crate) fn wait_timeout_while<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    dur: Duration,
    expires: bool,
    relock: impl FnOnce() -> MutexGuard<'a, T>,
    cond: impl FnMut(&mut T) -> bool,
) -> (MutexGuard<'a, T>, bool) {
    #[cfg(not(loom))]
    {
        let _ = (expires, relock);
        let (g, r) = cv
            .wait_timeout_while(guard, dur, cond)
            .unwrap_or_else(|e| e.into_inner());
        (g, r.timed_out())
    }
    #[cfg(loom)]
    {
        let _ = dur;
        let mut cond = cond;
        let mut g = guard;
        if expires {
            if !cond(&mut *g) {
                return (g, false);
            }
            drop(g);
            loom::thread::yield_now();
            let mut g = relock();
            let still = cond(&mut *g);
            return (g, still);
        }
        while cond(&mut *g) {
            g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        (g, false)
    }
}

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `std::cell::UnsafeCell` with loom's closure-based access API.
/// `repr(transparent)`, so a slice of them is a slice of `T` (the rseq
/// sequences address magazine slots directly).
#[cfg(not(loom))]
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    #[allow(
        dead_code,
        reason = "loom's API; without loom the magazine slots are zero-filled, not built"
    )]
    pub(crate) const fn new(v: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(v))
    }

    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// One step of a spin-wait: a CPU hint, or a yield once `spins` is large.
#[inline]
pub(crate) fn spin_wait(spins: u32) {
    #[cfg(loom)]
    {
        let _ = spins;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    {
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// The guard of a `try_lock` that got the lock, poisoned or not (as the
/// blocking locks here ignore poisoning); `None` when another holder, or
/// this thread, has it. Serves std's and loom's mutexes alike.
pub(crate) fn try_locked<G>(r: std::sync::TryLockResult<G>) -> Option<G> {
    match r {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}
