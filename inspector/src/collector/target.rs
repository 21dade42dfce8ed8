//! Finding what to trace: the files that carry slabscope probes, and the
//! processes running them.
//!
//! `--pid N` traces one process: its executable and every shared object it
//! maps executable (a C program may link `libslabscope.so`) are read from
//! `/proc/N/maps`, and each file whose `.note.stapsdt` has `slabscope` sites
//! is attached with the process as the uprobe scope.
//!
//! `--exe PATH` traces every process running that file: the uprobes are
//! attached for all processes, in the file and in the shared objects it
//! loads (see [`probe_files_of_exe`]), and `/proc/*/maps` is scanned each
//! interval to report which processes map the file. Probes in a library
//! fire in every process using it: the collector keeps only the processes
//! running PATH.
//!
//! Files are identified by (device, inode) as `/proc/N/maps` reports them, so
//! a file replaced on disk after the process started (a rebuilt binary) is
//! still traced through `/proc/N/map_files`, the kernel's link to the mapped
//! inode.

use std::{
    collections::{BTreeSet, HashMap},
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use slabscope_probes::PROVIDER;

use super::{
    error::CollectError,
    stapsdt::{self, Site},
};

/// A file with slabscope probe sites.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeFile {
    /// The file's path as the traced process (or the user) names it.
    pub path: PathBuf,
    /// A path that resolves to the same inode from this process; the uprobes
    /// are attached through it.
    pub attach_path: PathBuf,
    /// Every `slabscope` site in the file.
    pub sites: Vec<Site>,
}

/// (device major, device minor, inode) of a mapped file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// The device's major number.
    pub major: u32,
    /// The device's minor number.
    pub minor: u32,
    /// The inode number.
    pub inode: u64,
}

impl FileId {
    /// The identity of the file at `path` (following symlinks).
    pub fn of(path: &Path) -> io::Result<FileId> {
        let m = fs::metadata(path)?;
        Ok(FileId {
            major: libc::major(m.dev()),
            minor: libc::minor(m.dev()),
            inode: m.ino(),
        })
    }
}

/// One executable file mapping of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// `start-end` as in the maps line (the name of its `map_files` link).
    pub range: String,
    /// The mapped file's identity, to find the same file in other processes.
    pub id: FileId,
    /// The mapped file's path as the maps line shows it.
    pub path: String,
}

/// Parses the file-backed executable mappings out of a `/proc/N/maps` text,
/// one per file.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(_off), Some(dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let path = fields.next().unwrap_or("").trim_start();
        if !perms.contains('x') || !path.starts_with('/') {
            continue;
        }
        let Some((major, minor)) = dev.split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor), Ok(inode)) = (
            u32::from_str_radix(major, 16),
            u32::from_str_radix(minor, 16),
            inode.parse::<u64>(),
        ) else {
            continue;
        };
        let id = FileId {
            major,
            minor,
            inode,
        };
        if inode == 0 || !seen.insert(id) {
            continue;
        }
        out.push(Mapping {
            range: range.to_owned(),
            id,
            path: path.to_owned(),
        });
    }
    out
}

fn proc_path(pid: u32, rest: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{rest}"))
}

fn io_error(path: PathBuf, source: io::Error) -> CollectError {
    CollectError::Io { path, source }
}

/// The executable file mappings of `pid`.
pub fn exec_mappings(pid: u32) -> Result<Vec<Mapping>, CollectError> {
    let maps = proc_path(pid, "maps");
    match fs::read_to_string(&maps) {
        Ok(text) => Ok(parse_maps(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(CollectError::NoSuchProcess { pid }),
        Err(e) if super::error::is_permission(e.raw_os_error()) => Err(super::error::denied(
            format!("reading the memory map of pid {pid}"),
            e,
        )),
        Err(e) => Err(io_error(maps, e)),
    }
}

/// The `slabscope` sites of the file at `path`.
pub fn slabscope_sites(path: &Path) -> Result<Vec<Site>, CollectError> {
    let file = fs::File::open(path).map_err(|e| io_error(path.to_owned(), e))?;
    let cache = object::ReadCache::new(file);
    stapsdt::parse_provider(&cache, Some(PROVIDER)).map_err(|source| CollectError::Stapsdt {
        path: path.to_owned(),
        source,
    })
}

/// A path to the mapping's file that resolves to the mapped inode.
fn reachable_path(pid: u32, m: &Mapping) -> PathBuf {
    let candidates = [
        PathBuf::from(&m.path),
        PathBuf::from(format!("/proc/{pid}/root{}", m.path)),
        proc_path(pid, &format!("map_files/{}", m.range)),
    ];
    candidates
        .iter()
        .find(|p| FileId::of(p).is_ok_and(|id| id == m.id))
        .cloned()
        .unwrap_or_else(|| candidates[2].clone())
}

/// Every file mapped by `pid` that carries slabscope probes.
pub fn probe_files_of_pid(pid: u32) -> Result<Vec<ProbeFile>, CollectError> {
    if pid == 0 || !proc_path(pid, "").exists() {
        return Err(CollectError::NoSuchProcess { pid });
    }
    // A process caught in the middle of exec has an empty address space for a
    // moment (the kernel installs the new mm before mapping the executable):
    // wait for it rather than report a process that maps nothing.
    let mut mappings = exec_mappings(pid)?;
    for _ in 0..50 {
        if !mappings.is_empty() || has_exited(pid) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        mappings = exec_mappings(pid)?;
    }
    let mut files = Vec::new();
    let mut searched = Vec::new();
    for m in mappings {
        let attach_path = reachable_path(pid, &m);
        searched.push(PathBuf::from(&m.path));
        let sites = match slabscope_sites(&attach_path) {
            Ok(sites) => sites,
            // Files that vanished or that we may not read cannot be traced
            // anyway; they stay in `searched`.
            Err(CollectError::Io { .. }) => continue,
            Err(e) => return Err(e),
        };
        if !sites.is_empty() {
            files.push(ProbeFile {
                path: PathBuf::from(&m.path),
                attach_path,
                sites,
            });
        }
    }
    if files.is_empty() {
        return Err(CollectError::NoProbes { searched });
    }
    Ok(files)
}

/// The files to trace for `--exe PATH`, the executable first: every one
/// with slabscope sites among the executable, the shared objects it loads
/// at start (its `DT_NEEDED` entries, resolved), and the files mapped by
/// processes already running it (libraries they opened with `dlopen`). Also returns the
/// executable's identity.
pub fn probe_files_of_exe(path: &Path) -> Result<(FileId, Vec<ProbeFile>), CollectError> {
    let canonical = fs::canonicalize(path).map_err(|source| CollectError::NoSuchFile {
        path: path.to_owned(),
        source,
    })?;
    let exe_id = FileId::of(&canonical).map_err(|e| io_error(canonical.clone(), e))?;
    // (path shown, path to attach through)
    let mut candidates: Vec<(PathBuf, PathBuf)> = vec![(canonical.clone(), canonical.clone())];
    candidates.extend(
        super::needed::shared_objects(&canonical)
            .into_iter()
            .map(|p| (p.clone(), p)),
    );
    for pid in pids_mapping(exe_id).unwrap_or_default() {
        for m in exec_mappings(pid).unwrap_or_default() {
            candidates.push((PathBuf::from(&m.path), reachable_path(pid, &m)));
        }
    }
    let mut ids = BTreeSet::new();
    let mut files = Vec::new();
    let mut searched = Vec::new();
    for (shown, attach_path) in candidates {
        let Ok(id) = FileId::of(&attach_path) else {
            continue;
        };
        if !ids.insert(id) {
            continue;
        }
        searched.push(shown.clone());
        let sites = match slabscope_sites(&attach_path) {
            Ok(sites) => sites,
            // The executable must be readable; a library we cannot read is
            // left out as --pid leaves it out.
            Err(CollectError::Io { .. }) if id != exe_id => continue,
            Err(e) => return Err(e),
        };
        if !sites.is_empty() {
            files.push(ProbeFile {
                path: shown,
                attach_path,
                sites,
            });
        }
    }
    if files.is_empty() {
        return Err(CollectError::NoProbes { searched });
    }
    Ok((exe_id, files))
}

/// Whether `pid` maps the file `id`; `None` when its map cannot be read
/// (it exited, or is not ours to read).
pub fn maps_file(pid: u32, id: FileId) -> Option<bool> {
    let text = fs::read_to_string(proc_path(pid, "maps")).ok()?;
    Some(parse_maps(&text).iter().any(|m| m.id == id))
}

/// Numeric entries of `/proc`.
fn all_pids() -> Result<Vec<u32>, CollectError> {
    let dir = fs::read_dir("/proc").map_err(|e| io_error("/proc".into(), e))?;
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// Every live process that maps the file `id` executable.
pub fn pids_mapping(id: FileId) -> Result<BTreeSet<u32>, CollectError> {
    let mut out = BTreeSet::new();
    for pid in all_pids()? {
        let Ok(text) = fs::read_to_string(proc_path(pid, "maps")) else {
            continue;
        };
        if parse_maps(&text).iter().any(|m| m.id == id) && !has_exited(pid) {
            out.insert(pid);
        }
    }
    Ok(out)
}

/// The identity of the program `pid` runs (its `/proc/N/exe`), if readable.
pub fn exe_id(pid: u32) -> Option<FileId> {
    FileId::of(&proc_path(pid, "exe")).ok()
}

/// The path of the program `pid` runs, as `/proc/N/exe` names it.
pub fn exe_path(pid: u32) -> String {
    fs::read_link(proc_path(pid, "exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("(unknown program: {e})"))
}

/// Whether `pid` is gone or a zombie.
pub fn has_exited(pid: u32) -> bool {
    match fs::read_to_string(proc_path(pid, "stat")) {
        // The state follows the parenthesised command name, which may itself
        // contain parentheses.
        Ok(stat) => match stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
        {
            Some(state) => state == "Z" || state == "X",
            None => false,
        },
        Err(_) => true,
    }
}

/// Every process carrying slabscope probes, with each file that carries them.
/// Processes whose maps this user may not read are left out.
pub fn list_traceable() -> Result<Vec<(u32, PathBuf)>, CollectError> {
    let mut has_probes: HashMap<FileId, bool> = HashMap::new();
    let mut out = Vec::new();
    for pid in all_pids()? {
        let Ok(text) = fs::read_to_string(proc_path(pid, "maps")) else {
            continue;
        };
        for m in parse_maps(&text) {
            let carries = *has_probes.entry(m.id).or_insert_with(|| {
                slabscope_sites(&reachable_path(pid, &m)).is_ok_and(|s| !s.is_empty())
            });
            if carries {
                out.push((pid, PathBuf::from(&m.path)));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_keep_executable_files_once() {
        let text = "\
5581d0a00000-5581d0a05000 r--p 00000000 fd:01 1234 /usr/bin/demo
5581d0a05000-5581d0a20000 r-xp 00005000 fd:01 1234 /usr/bin/demo
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 [vdso]
7f0000100000-7f0000200000 r-xp 00002000 103:02 99 /opt/lib dir/libslabscope.so (deleted)
7f0000300000-7f0000400000 rw-p 00000000 00:00 0
7f0000500000-7f0000600000 r-xp 00000000 fd:01 1234 /usr/bin/demo
";
        let maps = parse_maps(text);
        assert_eq!(
            maps,
            vec![
                Mapping {
                    range: "5581d0a05000-5581d0a20000".into(),
                    id: FileId {
                        major: 0xfd,
                        minor: 1,
                        inode: 1234
                    },
                    path: "/usr/bin/demo".into(),
                },
                Mapping {
                    range: "7f0000100000-7f0000200000".into(),
                    id: FileId {
                        major: 0x103,
                        minor: 2,
                        inode: 99
                    },
                    path: "/opt/lib dir/libslabscope.so (deleted)".into(),
                },
            ]
        );
    }

    #[test]
    fn own_process_is_found_and_alive() {
        let pid = std::process::id();
        assert!(!has_exited(pid));
        let maps = exec_mappings(pid).expect("reading our own maps");
        let exe = fs::canonicalize("/proc/self/exe").unwrap();
        let id = FileId::of(&exe).unwrap();
        assert!(maps.iter().any(|m| m.id == id), "{maps:?}");
        assert!(pids_mapping(id).unwrap().contains(&pid));
    }

    #[test]
    fn missing_processes_are_reported() {
        // pid_max is at most 2^22, so this pid cannot exist.
        let pid = 4_194_305;
        assert!(has_exited(pid));
        assert!(matches!(
            probe_files_of_pid(pid),
            Err(CollectError::NoSuchProcess { pid: 4_194_305 })
        ));
        assert!(matches!(
            probe_files_of_pid(0),
            Err(CollectError::NoSuchProcess { pid: 0 })
        ));
    }

    #[test]
    fn a_missing_exe_is_reported() {
        let err = probe_files_of_exe(Path::new("/nonexistent/slabscope-demo")).unwrap_err();
        assert!(matches!(err, CollectError::NoSuchFile { .. }), "{err}");
    }
}
