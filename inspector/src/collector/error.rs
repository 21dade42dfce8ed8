//! The collector's failures, each saying what happened and what to do next.

use std::{io, path::PathBuf};

use super::{argspec::ArgSpecError, stapsdt::StapsdtError};

/// Why the collector could not start (or had to stop).
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The kernel refused to load or attach the eBPF programs.
    #[error("{what} needs CAP_BPF and CAP_PERFMON: run with sudo")]
    NotPermitted {
        /// What was attempted, e.g. "attaching to pid 4242".
        what: String,
        /// The kernel's refusal (EPERM or EACCES).
        #[source]
        source: io::Error,
    },
    /// As root, the kernel still refused: the capabilities are withheld
    /// (a container without CAP_BPF/CAP_PERFMON or CAP_SYS_PTRACE, kernel
    /// lockdown, Yama ptrace restrictions).
    #[error(
        "{what} was refused although slabscope runs as root: this root lacks CAP_BPF, \
         CAP_PERFMON or CAP_SYS_PTRACE (a restricted container, kernel lockdown or Yama); \
         run it on the host or in the target's container with those capabilities"
    )]
    RootDenied {
        /// What was attempted, e.g. "attaching to pid 4242".
        what: String,
        /// The kernel's refusal (EPERM or EACCES).
        #[source]
        source: io::Error,
    },
    /// The pid names no running process.
    #[error("no process with pid {pid} is running: check the pid with `ps` or `pgrep`")]
    NoSuchProcess {
        /// The pid given.
        pid: u32,
    },
    /// The executable given to `--exe` does not exist or cannot be read.
    #[error("cannot read {}: {source}; check the path", path.display())]
    NoSuchFile {
        /// The path given to `--exe`.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: io::Error,
    },
    /// None of the searched files carries slabscope USDT probes.
    #[error(
        "no slabscope probes found in {}: is the program built with slabscope's `probes` \
         feature (on by default) and does it use slabscope?",
        list(searched)
    )]
    NoProbes {
        /// Every file whose `.note.stapsdt` was read.
        searched: Vec<PathBuf>,
    },
    /// The kernel was built without uprobe events.
    #[error(
        "this kernel has no uprobe support (no uprobe PMU in \
         /sys/bus/event_source/devices): use a kernel built with CONFIG_UPROBE_EVENTS=y"
    )]
    NoUprobeSupport,
    /// A file's `.note.stapsdt` is malformed; nothing was attached in it.
    #[error("{}: {source}; the file may be corrupt, rebuild it", path.display())]
    Stapsdt {
        /// The file whose notes are malformed.
        path: PathBuf,
        /// What is wrong with them.
        #[source]
        source: StapsdtError,
    },
    /// A probe site's argument spec cannot be decoded.
    #[error(
        "{}: probe slabscope:{probe} at offset {offset:#x}: {source}; \
         report this with the compiler version used",
        path.display()
    )]
    ArgSpec {
        /// The file holding the site.
        path: PathBuf,
        /// The probe's name, one the contract knows.
        probe: String,
        /// The site's file offset.
        offset: u64,
        /// What in the spec could not be decoded.
        #[source]
        source: ArgSpecError,
    },
    /// A site has a different argument count than `slabscope-probes` documents.
    #[error(
        "{}: probe slabscope:{probe} has {found} arguments, this slabscope expects {expected}: \
         the program was built against another version of slabscope-probes; use a matching \
         slabscope inspector",
        path.display()
    )]
    ArgCount {
        /// The file holding the site.
        path: PathBuf,
        /// The probe's name.
        probe: String,
        /// Arguments the site's note lists.
        found: usize,
        /// Arguments the contract (`slabscope_probes::PROBES`) gives the probe.
        expected: usize,
    },
    /// Reading `/proc` or a traced file failed.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file or `/proc` entry read.
        path: PathBuf,
        /// The error of the read.
        #[source]
        source: io::Error,
    },
    /// An option is out of range.
    #[error("invalid collector option: {0}")]
    BadOption(String),
    /// The kernel rejected the eBPF object.
    #[error("loading the eBPF programs into the kernel failed: {source}")]
    Load {
        /// aya's error, with the verifier's log when the verifier refused.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// An eBPF program could not be loaded or attached.
    #[error("{what} failed: {source}")]
    Attach {
        /// What was attempted, e.g. "attaching slabscope:grow_start at
        /// /usr/bin/demo+0x1234".
        what: String,
        /// aya's error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// An eBPF map could not be opened, filled or read.
    #[error("eBPF map {map}: {source}")]
    Map {
        /// The map's name in the eBPF object.
        map: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// This binary was built with `AYA_BUILD_SKIP=1`.
    #[error(
        "this slabscope was built without its eBPF programs (AYA_BUILD_SKIP was set): \
         rebuild without it after `cargo xtask setup`"
    )]
    NotBuilt,
}

fn list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "any file (none was searched)".to_owned();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The OS error number somewhere in `err`'s source chain.
pub(crate) fn errno_in(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(code) = io.raw_os_error()
        {
            return Some(code);
        }
        cur = e.source();
    }
    None
}

/// Whether `errno` means "not allowed".
pub(crate) fn is_permission(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::EPERM | libc::EACCES))
}

/// The error for a refused `what`: "run with sudo" unless already root.
pub(crate) fn denied(what: String, source: io::Error) -> CollectError {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        CollectError::RootDenied { what, source }
    } else {
        CollectError::NotPermitted { what, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_next_step() {
        let e = CollectError::NotPermitted {
            what: "attaching to pid 4242".into(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(
            e.to_string(),
            "attaching to pid 4242 needs CAP_BPF and CAP_PERFMON: run with sudo"
        );
        let e = CollectError::NoProbes {
            searched: vec!["/usr/bin/a".into(), "/usr/lib/libb.so".into()],
        };
        assert!(
            e.to_string().contains("/usr/bin/a, /usr/lib/libb.so"),
            "{e}"
        );
        assert!(
            CollectError::NoSuchProcess { pid: 7 }
                .to_string()
                .contains("pid 7")
        );
    }

    #[test]
    fn errno_is_found_through_the_source_chain() {
        let inner = io::Error::from_raw_os_error(libc::EACCES);
        let e = CollectError::Io {
            path: "/proc/1/maps".into(),
            source: inner,
        };
        assert_eq!(errno_in(&e), Some(libc::EACCES));
        assert!(is_permission(errno_in(&e)));
        assert_eq!(errno_in(&CollectError::NoUprobeSupport), None);
    }
}
