//! Finding the processes to export: every process on the host whose
//! executable or a mapped shared object carries slabscope probes.
//!
//! Discovery polls `/proc` (every `--scan-interval`, one second by default):
//! it is portable to every kernel the collector supports and needs no extra
//! capability, where the proc connector (netlink) would need CAP_NET_ADMIN
//! and still miss events when its socket overflows. A process is identified
//! by its pid *and* its start time (field 22 of `/proc/N/stat`), so a pid
//! reused by a new process is a new target with fresh series.
//!
//! Whether a mapped file carries probes is decided once per file identity
//! (device, inode) and scan: reading a `.note.stapsdt` is the costly step, and
//! hundreds of processes map the same libc. A file with a slabscope site
//! that is not the start of a `nop` instruction counts as carrying probes
//! here, so that attaching refuses it by name.

use std::{collections::HashMap, fs, path::PathBuf};

use crate::collector::{
    CollectError,
    stapsdt::StapsdtError,
    target::{self, FileId, Mapping, ProbeFile},
};

/// A process, as identified across pid reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcKey {
    /// The process id, which the kernel may reuse after the process exits.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/N/stat` field 22).
    pub start_ticks: u64,
}

/// What the exporter knows of a process before attaching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    /// The process, across pid reuse.
    pub key: ProcKey,
    /// `/proc/N/comm`'s bytes, as the process set them (untrusted).
    pub comm: Vec<u8>,
    /// Real user id.
    pub uid: u32,
}

/// Parses `/proc/N/stat`: the command name (between the first `(` and the
/// last `)`: it may hold parentheses and spaces itself) and the start time.
pub fn parse_stat(stat: &[u8]) -> Option<(Vec<u8>, u64)> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let comm = stat[open + 1..close].to_vec();
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // After the name: field 3 (state) is index 0, so field 22 is index 19.
    let start = rest.split_whitespace().nth(19)?.parse().ok()?;
    Some((comm, start))
}

/// The real uid from a `/proc/N/status` text.
pub fn parse_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The identity, name and owner of `pid`, or `None` when it is gone.
pub fn proc_info(pid: u32) -> Option<ProcInfo> {
    let stat = fs::read(format!("/proc/{pid}/stat")).ok()?;
    let (comm, start_ticks) = parse_stat(&stat)?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcInfo {
        key: ProcKey { pid, start_ticks },
        comm,
        uid: parse_uid(&status)?,
    })
}

/// Whether the process `key` names still runs (not a zombie, pid not reused).
pub fn is_alive(key: ProcKey) -> bool {
    current_start(key.pid) == Some(key.start_ticks)
}

/// The start time (ticks) of the process running as `pid` now, or `None`
/// when there is none or it is a zombie.
pub fn current_start(pid: u32) -> Option<u64> {
    let stat = fs::read(format!("/proc/{pid}/stat")).ok()?;
    let (_, start) = parse_stat(&stat)?;
    (!target::has_exited(pid)).then_some(start)
}

/// Seconds since the epoch at which the process started, from its start
/// ticks and the boot time in `/proc/stat`.
pub fn start_time_seconds(start_ticks: u64) -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some(btime as f64 + start_ticks as f64 / hz)
}

/// Which processes to export (`--pid`, `--exe`, `--uid`, `--comm`). Each
/// given kind must match (AND); within a kind any value may (OR).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Process ids (`--pid`).
    pub pids: Vec<u32>,
    /// Files (executables or shared objects) a process must map.
    pub files: Vec<FileId>,
    /// Real user ids (`--uid`).
    pub uids: Vec<u32>,
    /// Command names (`--comm`), compared with `/proc/N/comm`'s bytes.
    pub comms: Vec<Vec<u8>>,
}

impl Filter {
    /// Whether `info` passes the filters that need no memory map.
    pub fn admits(&self, info: &ProcInfo) -> bool {
        (self.pids.is_empty() || self.pids.contains(&info.key.pid))
            && (self.uids.is_empty() || self.uids.contains(&info.uid))
            && (self.comms.is_empty() || self.comms.contains(&info.comm))
    }

    /// Whether the mapped files pass `--exe`.
    pub fn admits_files(&self, mapped: &[Mapping]) -> bool {
        self.files.is_empty() || mapped.iter().any(|m| self.files.contains(&m.id))
    }
}

/// Remembers, per scan, which file identities carry slabscope probes.
#[derive(Debug, Default)]
pub struct ProbeCache {
    known: HashMap<FileId, bool>,
    seen: HashMap<FileId, bool>,
}

impl ProbeCache {
    /// Starts a scan: files not seen during it are forgotten at [`end`].
    ///
    /// [`end`]: ProbeCache::end
    pub fn begin(&mut self) {
        self.seen.clear();
    }

    /// Forgets the files no process mapped during this scan, so the cache
    /// does not grow with every file ever mapped on the host.
    pub fn end(&mut self) {
        self.known = std::mem::take(&mut self.seen);
    }

    /// Whether the mapping `m` of `pid` carries slabscope probes.
    pub fn carries_probes(&mut self, pid: u32, m: &Mapping) -> bool {
        let carries = match self.known.get(&m.id).or_else(|| self.seen.get(&m.id)) {
            Some(&c) => c,
            None => match target::slabscope_sites(&reachable(pid, m)) {
                Ok(sites) => !sites.is_empty(),
                // A slabscope site where a breakpoint would change the
                // program: the file goes on to be refused by name
                // (`ensure_watched` logs why and counts it), not skipped as
                // if it had no probes. Other unreadable files (not ELF,
                // damaged notes of any provider) stay quietly skipped.
                Err(CollectError::Stapsdt {
                    source: StapsdtError::UnsafeSite { .. },
                    ..
                }) => true,
                Err(_) => false,
            },
        };
        self.seen.insert(m.id, carries);
        carries
    }
}

/// A path that reaches the mapped inode from here: the mapped path when it
/// still names the same file, else the kernel's `map_files` link.
fn reachable(pid: u32, m: &Mapping) -> PathBuf {
    let direct = PathBuf::from(&m.path);
    if FileId::of(&direct).is_ok_and(|id| id == m.id) {
        return direct;
    }
    PathBuf::from(format!("/proc/{pid}/map_files/{}", m.range))
}

/// A mapped file that carries probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedProbeFile {
    /// The file's identity (device and inode).
    pub id: FileId,
    /// The path as the process names it.
    pub path: PathBuf,
    /// A path that reaches the same inode from here.
    pub attach_path: PathBuf,
}

impl MappedProbeFile {
    /// The file with its probe sites, ready for the collector's planner.
    pub fn probe_file(&self) -> Result<ProbeFile, crate::collector::CollectError> {
        Ok(ProbeFile {
            path: self.path.clone(),
            attach_path: self.attach_path.clone(),
            sites: target::slabscope_sites(&self.attach_path)?,
        })
    }
}

/// A process to export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The process and what `/proc` says of it.
    pub info: ProcInfo,
    /// The mapped files that carry probes.
    pub files: Vec<MappedProbeFile>,
}

/// Every numeric entry of `/proc`.
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

/// Scans `/proc` for processes that carry probes, pass `filter`, and are not
/// `skip`ped (already traced, or refused before). `own` is the exporter's pid.
pub fn scan(
    filter: &Filter,
    cache: &mut ProbeCache,
    own: u32,
    skip: impl Fn(ProcKey) -> bool,
) -> Vec<Candidate> {
    cache.begin();
    let mut out = Vec::new();
    for pid in all_pids() {
        if pid == own {
            continue;
        }
        let Some(info) = proc_info(pid) else {
            continue;
        };
        if skip(info.key) || !filter.admits(&info) {
            continue;
        }
        // Kernel threads and processes we may not read map nothing.
        let Ok(mapped) = target::exec_mappings(pid) else {
            continue;
        };
        if !filter.admits_files(&mapped) {
            continue;
        }
        let files: Vec<MappedProbeFile> = mapped
            .iter()
            .filter(|m| cache.carries_probes(pid, m))
            .map(|m| MappedProbeFile {
                id: m.id,
                path: PathBuf::from(&m.path),
                attach_path: reachable(pid, m),
            })
            .collect();
        if !files.is_empty() {
            out.push(Candidate { info, files });
        }
    }
    cache.end();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_names_with_parentheses_and_spaces_parse() {
        let stat = b"4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                     987654 1000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let (comm, start) = parse_stat(stat).unwrap();
        assert_eq!(comm, b"a) b (c");
        assert_eq!(start, 987654);
        assert_eq!(parse_stat(b"1 (x"), None);
        assert_eq!(parse_stat(b"1 )x( S"), None);
    }

    #[test]
    fn status_uid_is_the_real_uid() {
        let status = "Name:\tx\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t100\t100\t100\t100\n";
        assert_eq!(parse_uid(status), Some(1000));
        assert_eq!(parse_uid("Name:\tx\n"), None);
    }

    #[test]
    fn our_own_process_is_read_and_alive() {
        let me = std::process::id();
        let info = proc_info(me).expect("reading our own /proc entry");
        assert_eq!(info.key.pid, me);
        // SAFETY: getuid has no preconditions.
        assert_eq!(info.uid, unsafe { libc::getuid() });
        assert!(is_alive(info.key));
        let reused = ProcKey {
            start_ticks: info.key.start_ticks + 1,
            ..info.key
        };
        assert!(!is_alive(reused), "another start time is another process");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = start_time_seconds(info.key.start_ticks).unwrap();
        assert!(started <= now + 1.0 && started > now - 86400.0 * 365.0);
    }

    #[test]
    fn filters_combine_kinds_with_and_values_with_or() {
        let info = ProcInfo {
            key: ProcKey {
                pid: 7,
                start_ticks: 1,
            },
            comm: b"demo".to_vec(),
            uid: 1000,
        };
        assert!(Filter::default().admits(&info));
        let f = Filter {
            pids: vec![3, 7],
            uids: vec![1000],
            ..Filter::default()
        };
        assert!(f.admits(&info));
        let f = Filter {
            pids: vec![7],
            comms: vec![b"other".to_vec()],
            ..Filter::default()
        };
        assert!(!f.admits(&info));
        let f = Filter {
            uids: vec![0],
            ..Filter::default()
        };
        assert!(!f.admits(&info));
    }

    #[test]
    fn a_scan_of_this_host_skips_ourselves_and_processes_without_probes() {
        let mut cache = ProbeCache::default();
        let found = scan(&Filter::default(), &mut cache, std::process::id(), |_| {
            false
        });
        // The test binary does not list itself, and every candidate maps a
        // file with probes.
        assert!(found.iter().all(|c| c.info.key.pid != std::process::id()));
        assert!(found.iter().all(|c| !c.files.is_empty()));
        // Nobody runs as this uid.
        let none = Filter {
            uids: vec![u32::MAX - 1],
            ..Filter::default()
        };
        assert!(scan(&none, &mut cache, 0, |_| false).is_empty());
    }
}
