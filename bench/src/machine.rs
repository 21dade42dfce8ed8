//! A description of the machine the numbers were measured on.

use std::process::Command;

/// What BENCHMARKS.md says about the machine.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cpu_model: String,
    pub nproc: usize,
    pub kernel: String,
    pub memory: String,
    pub glibc: String,
    pub rustc: String,
    pub virtualization: Option<String>,
}

fn first_line_with(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn command_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

impl Machine {
    pub fn describe() -> Machine {
        // SAFETY: gnu_get_libc_version has no preconditions.
        let v = unsafe { libc::gnu_get_libc_version() };
        // SAFETY: it returns a static NUL-terminated string.
        let glibc = unsafe { std::ffi::CStr::from_ptr(v) }
            .to_string_lossy()
            .into_owned();
        let mem_kb = first_line_with("/proc/meminfo", "MemTotal").and_then(|v| {
            v.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        });
        Machine {
            cpu_model: first_line_with("/proc/cpuinfo", "model name")
                .unwrap_or_else(|| "unknown".into()),
            // Online CPUs, not the affinity mask: the bench pins itself.
            // SAFETY: sysconf has no preconditions.
            nproc: usize::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) })
                .unwrap_or(1),
            kernel: command_line("uname", &["-srm"]).unwrap_or_else(|| "unknown".into()),
            memory: mem_kb.map_or("unknown".into(), |kb| {
                format!("{:.1} GiB", kb as f64 / (1 << 20) as f64)
            }),
            glibc,
            rustc: command_line("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
            virtualization: command_line("systemd-detect-virt", &[]).filter(|v| v != "none"),
        }
    }
}
