//! Every slab mapping fails: the seed's `KM_SLEEP` allocation retries
//! forever (see the `grow` module). With `grow_fail_emergency` set it takes
//! an emergency object once that many grows in a row have failed.

use std::sync::mpsc;
use std::time::Duration;

use slabscope::CacheBuilder;
use slabscope::flags::KM_SLEEP;
use slabscope::tunables::{self, Tunables};

/// Far beyond what the bounded retries need; only a hang reaches it.
const HANG: Duration = Duration::from_mins(1);

#[test]
fn km_sleep_takes_an_emergency_object_after_the_bound() {
    tunables::set(Tunables {
        // Long enough that the failing grows end well within the wait, so
        // the cache never goes DEADLOCKED: only the bound can hand out an
        // emergency object (as in the seed, a failed grow wakes nobody, so
        // each round waits this long).
        grow_timeout_ms: 3000,
        grow_fail_emergency: 3,
        fault_slab_fail_permille: 1000,
        stats_interval_ms: 0,
        ..Tunables::default()
    })
    .unwrap();
    let c = CacheBuilder::new("grow_fail_emergency", 256)
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let worker = c.clone();
    std::thread::spawn(move || {
        let p = worker.alloc(KM_SLEEP).map(|p| p.as_ptr() as usize);
        let _ = tx.send(p);
    });
    let obj = rx
        .recv_timeout(HANG)
        .expect("KM_SLEEP never returned: the failing grows were retried forever")
        .expect("KM_SLEEP never fails");
    let s = c.stats();
    assert_eq!(s.obj_emergency, 1, "{s:?}");
    assert_eq!(s.obj_deadlock, 0, "the bound, not a deadlock: {s:?}");
    assert_eq!(s.slab_total, 0, "{s:?}");
    assert!(s.slab_fail >= 3, "at least the bound failed first: {s:?}");
    c.validate().unwrap();
    let obj = std::ptr::NonNull::new(obj as *mut u8).unwrap();
    // SAFETY: the object came from c and is freed once.
    unsafe { c.free(obj) };
    assert_eq!(c.stats().obj_emergency, 0);
    c.destroy().unwrap();
}
