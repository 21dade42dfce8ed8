//! Measuring tools shared by the workloads: CPU pinning, a seeded generator
//! for free orders, sample summaries and resident memory.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Pin the calling thread to `cpu` (`sched_setaffinity`).
pub fn pin_to(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit inside `set`; cpu is below CPU_SETSIZE
    // (checked next).
    if cpu >= libc::CPU_SETSIZE as usize {
        bail!("cpu {cpu} is beyond CPU_SETSIZE");
    }
    // SAFETY: see above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; set is a valid cpu_set_t of the given size.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("pinning the bench thread to CPU {cpu}"));
    }
    Ok(())
}

/// CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; set is writable and of the given size.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return vec![0];
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: i is below CPU_SETSIZE.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect()
}

/// xorshift64*: a fixed-seed generator so every contender frees in the same order.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}

/// The order in which a round frees its `live` objects: reversed allocation
/// order (LIFO) or a seeded random permutation.
pub fn free_order(live: usize, random: bool) -> Vec<u32> {
    let mut order: Vec<u32> = (0..live as u32).rev().collect();
    if random {
        let mut rng = Rng::new(0x5eed_0f5a_b5c0_9e00 ^ live as u64);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
    }
    order
}

/// Minimum and median of a set of measurements.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub min: f64,
    pub median: f64,
    pub n: usize,
}

impl Summary {
    /// Summarise `xs`; `None` when empty.
    pub fn of(xs: &[f64]) -> Option<Summary> {
        if xs.is_empty() {
            return None;
        }
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            f64::midpoint(v[n / 2 - 1], v[n / 2])
        };
        Some(Summary {
            min: v[0],
            median,
            n,
        })
    }
}

/// Nanoseconds per operation.
pub fn ns_per(d: Duration, ops: u64) -> f64 {
    d.as_nanos() as f64 / ops.max(1) as f64
}

/// Resident memory of this process in bytes (`/proc/self/statm`, second field).
pub fn rss_bytes() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").context("reading /proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .context("/proc/self/statm has no resident field")?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * page.max(4096) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_order_is_a_permutation() {
        for random in [false, true] {
            let mut o = free_order(1000, random);
            o.sort_unstable();
            assert_eq!(o, (0..1000).collect::<Vec<u32>>(), "random={random}");
        }
        assert_eq!(
            free_order(3, false),
            vec![2, 1, 0],
            "LIFO frees the newest first"
        );
        assert_ne!(
            free_order(1000, true),
            free_order(1000, false),
            "random order is shuffled"
        );
    }

    #[test]
    fn summary_min_and_median() {
        let s = Summary::of(&[5.0, 1.0, 3.0]).expect("non-empty");
        assert_eq!((s.min, s.median, s.n), (1.0, 3.0, 3));
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).expect("non-empty");
        assert_eq!(s.median, 2.5, "even count averages the middle two");
        assert!(Summary::of(&[]).is_none(), "no samples, no summary");
    }

    /// RSS is the whole process's, and other tests of this binary run
    /// beside this one and free memory of their own (tens of MiB at times):
    /// a single reading can see their free instead of our touch. Five tries
    /// in a row all losing that race would be a broken `rss_bytes`.
    #[test]
    fn rss_grows_when_memory_is_touched() {
        let mut seen = Vec::new();
        for _ in 0..5 {
            let before = rss_bytes().expect("statm readable");
            let v = vec![1u8; 64 << 20];
            let after = rss_bytes().expect("statm readable");
            assert!(v.iter().step_by(4096).all(|&b| b == 1));
            if after >= before + (60 << 20) {
                return;
            }
            seen.push((before, after));
        }
        panic!(
            "touching 64 MiB should raise RSS by 60 MiB; (before, after) of five tries: {seen:?}"
        );
    }
}
