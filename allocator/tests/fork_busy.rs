//! fork() while other threads are inside slabscope: the child gets only the
//! forking thread, so a lock another thread held at that instant would stay
//! held in the child for good. The atfork handlers take every lock first.
//!
//! Threads keep validating (every magazine lock, the depot and the cache
//! lock, held for a whole walk), reaping and churning two caches while the
//! main thread forks again and again; each child must allocate, free, reap,
//! validate and destroy within a deadline. Without the handlers most
//! children hang on a lock within the first few forks.

mod support;

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use slabscope::flags::KM_SLEEP;
use slabscope::{Cache, CacheBuilder};
use support::free_all;

/// Forks to try; each child has `CHILD_DEADLINE_S` to finish.
const FORKS: usize = 40;
const CHILD_DEADLINE_S: u32 = 5;

fn churn(c: &Cache, n: usize) {
    let objs: Vec<NonNull<u8>> = (0..n).map(|_| c.alloc(KM_SLEEP).unwrap()).collect();
    free_all(c, objs);
}

/// What a child does with the parent's caches; true when all of it worked.
fn child_work(caches: &[Cache]) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for c in caches {
            churn(c, 1000);
            c.reap_now();
            c.validate().unwrap();
        }
        let fresh = CacheBuilder::new("fork_busy_child", 96).build().unwrap();
        churn(&fresh, 500);
        fresh.destroy().unwrap();
    }))
    .is_ok()
}

#[test]
fn a_child_forked_while_other_threads_hold_locks_is_not_stuck() {
    let caches: Arc<Vec<Cache>> = Arc::new(
        [64, 4096]
            .into_iter()
            .map(|size| {
                CacheBuilder::new(format!("fork_busy_{size}"), size)
                    .build()
                    .unwrap()
            })
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let (caches, stop) = (caches.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for c in caches.iter() {
                        match i {
                            0 => c.validate().unwrap(),
                            1 => c.reap_now(),
                            _ => churn(c, 600),
                        }
                    }
                }
            })
        })
        .collect();
    // A hang in the parent's prepare handler would otherwise hang the test
    // run: give up loudly instead.
    let done = Arc::new(AtomicBool::new(false));
    {
        let done = done.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while !done.load(Ordering::Relaxed) {
                if t0.elapsed() > Duration::from_mins(2) {
                    eprintln!("fork_busy: the parent is stuck (a fork handler deadlocked?)");
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }

    let mut hung = 0;
    let mut failed = 0;
    for _ in 0..FORKS {
        std::thread::sleep(Duration::from_millis(2));
        // SAFETY: fork has no preconditions; the child only runs
        // child_work and leaves with _exit, never returning into the test
        // harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: alarm has no preconditions; its default action ends a
            // child that is stuck.
            unsafe { libc::alarm(CHILD_DEADLINE_S) };
            let ok = child_work(&caches);
            // SAFETY: _exit ends the child without running the parent's
            // atexit handlers or the test harness.
            unsafe { libc::_exit(i32::from(!ok)) };
        }
        let mut status = 0;
        // SAFETY: pid is our child; status is a valid out pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM {
            hung += 1;
        } else if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed += 1;
        }
        if hung + failed == 3 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    assert_eq!(
        (hung, failed),
        (0, 0),
        "of the children forked while other threads worked in slabscope, \
         {hung} were stuck past {CHILD_DEADLINE_S} s and {failed} failed"
    );
    let caches = Arc::into_inner(caches).unwrap();
    for c in caches {
        c.validate().unwrap();
        c.destroy().unwrap();
    }
}

/// Constructors run with no slabscope lock held, so one may fork; the
/// child, still inside the parent's allocation, uses the cache freely
/// (constructing its own objects with the same constructor).
#[test]
fn a_constructor_may_fork() {
    use std::sync::atomic::AtomicI32;
    const NOT_YET: i32 = -1;
    let child_status = Arc::new(AtomicI32::new(NOT_YET));
    let forked = Arc::new(AtomicBool::new(false));
    let cache = Arc::new(std::sync::OnceLock::<Cache>::new());
    let (status, inner) = (child_status.clone(), cache.clone());
    let built = CacheBuilder::new("fork_in_ctor", 128)
        .ctor(move |_, _| {
            if forked.swap(true, Ordering::Relaxed) {
                return true;
            }
            // SAFETY: as in the test above; the child leaves with _exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: alarm has no preconditions.
                unsafe { libc::alarm(CHILD_DEADLINE_S) };
                let c = inner
                    .get()
                    .expect("the cache is set before the first alloc");
                let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    churn(c, 300);
                    c.reap_now();
                    c.validate().unwrap();
                }))
                .is_ok();
                // SAFETY: as above.
                unsafe { libc::_exit(i32::from(!ok)) };
            }
            let mut raw = 0;
            // SAFETY: pid is our child; raw is a valid out pointer.
            assert_eq!(unsafe { libc::waitpid(pid, &mut raw, 0) }, pid);
            status.store(raw, Ordering::Relaxed);
            true
        })
        .build()
        .unwrap();
    assert!(cache.set(built).is_ok());
    let c = cache.get().unwrap();
    churn(c, 10);
    let raw = child_status.load(Ordering::Relaxed);
    assert_ne!(raw, NOT_YET, "the constructor did not fork");
    assert!(
        libc::WIFEXITED(raw) && libc::WEXITSTATUS(raw) == 0,
        "the child forked inside a constructor failed or hung (status {raw:#x})"
    );
    c.validate().unwrap();
}
