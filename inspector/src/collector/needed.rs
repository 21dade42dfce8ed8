//! The shared objects a program loads when it starts, found without running
//! it: its `DT_NEEDED` entries and theirs, looked up the way `ld.so` looks
//! them up, so `--exe PROGRAM` can attach to the probes of a library such as
//! `libslabscope.so` before any process of PROGRAM exists.
//!
//! For each needed name (a name with a `/` is a path, relative to the
//! working directory as for `ld.so`), in order: the `DT_RUNPATH` of the
//! object that needs it, or its `DT_RPATH` when it has no `DT_RUNPATH`
//! (`$ORIGIN` is the object's directory); then the directories of
//! `/etc/ld.so.conf` and the files it includes; then the default
//! directories. The first regular file that is a 64-bit ELF object of the
//! program's architecture wins. `LD_LIBRARY_PATH` is not used: it belongs
//! to the environment the program will run in, not to the inspector's (and
//! `sudo` clears it anyway), nor is `ld.so.cache`, whose directories
//! `ld.so.conf` already lists. Libraries a program opens later with
//! `dlopen` are not found here; a process that already runs the program
//! contributes every file it maps ([`super::target::probe_files_of_exe`]).
//!
//! The program's dynamic section is the target's to write; this only reads
//! files and never runs anything.

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use object::{Endianness, Object as _, read::elf::ElfFile64};

/// Where `ld.so` looks after the paths an object names, on 64-bit Linux.
const DEFAULT_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// What the dynamic section of one object says about its libraries.
#[derive(Debug, Default, PartialEq, Eq)]
struct Needs {
    needed: Vec<String>,
    /// `DT_RUNPATH`, else `DT_RPATH`, split at `:`.
    search: Vec<String>,
}

fn needs_of(data: &[u8]) -> Option<(Needs, object::Architecture)> {
    let elf = ElfFile64::<Endianness>::parse(data).ok()?;
    let endian = elf.endian();
    let table = elf.elf_section_table().dynamic_table(endian, data).ok()?;
    let (mut needed, mut runpath, mut rpath) = (Vec::new(), None, None);
    for d in &table {
        let text = || {
            table
                .string(d)
                .ok()
                .map(|s| String::from_utf8_lossy(s).into_owned())
        };
        match d.tag {
            object::elf::DT_NEEDED => needed.extend(text()),
            object::elf::DT_RUNPATH => runpath = text(),
            object::elf::DT_RPATH => rpath = text(),
            _ => {}
        }
    }
    let search = runpath
        .or(rpath)
        .map(|p| {
            p.split(':')
                .filter(|d| !d.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Some((Needs { needed, search }, elf.architecture()))
}

/// The directories of `/etc/ld.so.conf` (at `conf`) and what it includes.
fn conf_dirs(conf: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    let Ok(text) = fs::read_to_string(conf) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include") {
            if depth > 4 {
                continue;
            }
            for pattern in pattern.split_whitespace() {
                let pattern = if pattern.starts_with('/') {
                    PathBuf::from(pattern)
                } else {
                    conf.parent().unwrap_or(Path::new("/")).join(pattern)
                };
                // `dir/*.conf`, the only form distributions use.
                let (dir, suffix) = match (pattern.parent(), pattern.file_name()) {
                    (Some(d), Some(f)) => (d.to_owned(), f.to_string_lossy().into_owned()),
                    _ => continue,
                };
                let Some(suffix) = suffix.strip_prefix('*') else {
                    conf_dirs(&pattern, depth + 1, out);
                    continue;
                };
                let Ok(entries) = fs::read_dir(&dir) else {
                    continue;
                };
                let mut files: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.to_string_lossy().ends_with(suffix))
                    .collect();
                files.sort();
                for f in files {
                    conf_dirs(&f, depth + 1, out);
                }
            }
        } else if line.starts_with('/') {
            out.push(PathBuf::from(line));
        }
    }
}

/// The system's library directories: `ld.so.conf`'s, then the defaults.
fn system_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    conf_dirs(Path::new("/etc/ld.so.conf"), 0, &mut dirs);
    dirs.extend(DEFAULT_DIRS.iter().map(PathBuf::from));
    dirs
}

/// The file `name` needed by an object in `origin` resolves to.
fn resolve(
    name: &str,
    origin: &Path,
    search: &[String],
    system: &[PathBuf],
    arch: object::Architecture,
) -> Option<PathBuf> {
    let fits = |p: &Path| {
        p.is_file()
            && fs::read(p)
                .ok()
                .and_then(|d| needs_of(&d))
                .is_some_and(|(_, a)| a == arch)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return fits(&p).then_some(p);
    }
    let origin = origin.to_string_lossy();
    search
        .iter()
        .map(|d| PathBuf::from(d.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin)))
        .chain(system.iter().cloned())
        .map(|d| d.join(name))
        .find(|p| fits(p))
}

/// Every shared object `exe` loads at start, breadth first, each once, as
/// canonical paths; names that resolve nowhere are left out.
pub fn shared_objects(exe: &Path) -> Vec<PathBuf> {
    let Ok(data) = fs::read(exe) else {
        return Vec::new();
    };
    let Some((_, arch)) = needs_of(&data) else {
        return Vec::new();
    };
    let system = system_dirs();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut queue = VecDeque::from([exe.to_owned()]);
    while let Some(object) = queue.pop_front() {
        let Some((needs, _)) = fs::read(&object).ok().and_then(|d| needs_of(&d)) else {
            continue;
        };
        let origin = object.parent().unwrap_or(Path::new("/")).to_owned();
        for name in &needs.needed {
            let Some(found) = resolve(name, &origin, &needs.search, &system, arch) else {
                continue;
            };
            let real = fs::canonicalize(&found).unwrap_or(found);
            if seen.insert(real.clone()) {
                out.push(real.clone());
                queue.push_back(real);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_needs_the_c_library() {
        let exe = std::env::current_exe().unwrap();
        let libs = shared_objects(&exe);
        assert!(
            libs.iter().any(|l| l
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libc.so"))),
            "{libs:?}"
        );
        // Each once, and every one a file.
        let unique: BTreeSet<_> = libs.iter().collect();
        assert_eq!(unique.len(), libs.len());
        assert!(libs.iter().all(|l| l.is_file()));
    }

    #[test]
    fn runpath_with_origin_comes_before_the_system() {
        let dir = std::env::temp_dir().join(format!("slabscope-needed-{}", std::process::id()));
        let lib = dir.join("lib");
        fs::create_dir_all(&lib).unwrap();
        // Any 64-bit ELF object of this architecture will do as the library.
        let exe = std::env::current_exe().unwrap();
        fs::copy(&exe, lib.join("libfake.so")).unwrap();
        let arch = needs_of(&fs::read(&exe).unwrap()).unwrap().1;
        let search = vec!["$ORIGIN/lib".to_string()];
        assert_eq!(
            resolve("libfake.so", &dir, &search, &[], arch),
            Some(lib.join("libfake.so"))
        );
        assert_eq!(resolve("libfake.so", &dir, &[], &[], arch), None);
        // Not an ELF object: skipped.
        fs::write(lib.join("libtext.so"), "not ELF").unwrap();
        assert_eq!(resolve("libtext.so", &dir, &search, &[], arch), None);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn ld_so_conf_includes_are_followed() {
        let dir = std::env::temp_dir().join(format!("slabscope-ldconf-{}", std::process::id()));
        let d = dir.join("ld.so.conf.d");
        fs::create_dir_all(&d).unwrap();
        fs::write(
            dir.join("ld.so.conf"),
            "# comment\ninclude ld.so.conf.d/*.conf\n/opt/a\n",
        )
        .unwrap();
        fs::write(d.join("x.conf"), "/opt/x # trailing\n").unwrap();
        fs::write(d.join("ignored.txt"), "/opt/no\n").unwrap();
        let mut out = Vec::new();
        conf_dirs(&dir.join("ld.so.conf"), 0, &mut out);
        assert_eq!(out, [PathBuf::from("/opt/x"), PathBuf::from("/opt/a")]);
        let _ = fs::remove_dir_all(&dir);
    }
}
