//! `cargo xtask install`: installs the C libraries as a C user expects them,
//! in the layout cargo-c's `cargo cinstall` makes:
//!
//! ```text
//! DESTDIR/PREFIX/lib/libslabscope.so.0.1.0          the library, SONAME libslabscope.so.0
//! DESTDIR/PREFIX/lib/libslabscope.so.0 -> libslabscope.so.0.1.0
//! DESTDIR/PREFIX/lib/libslabscope.so   -> libslabscope.so.0
//! DESTDIR/PREFIX/lib/libslabscope.a
//! DESTDIR/PREFIX/lib/pkgconfig/slabscope.pc
//! DESTDIR/PREFIX/include/slabscope.h
//! ```
//!
//! and the inspector with its manual (unless `--no-inspector`, for a
//! machine that cannot build the eBPF program):
//!
//! ```text
//! DESTDIR/PREFIX/bin/slabscope
//! DESTDIR/PREFIX/share/man/man1/slabscope.1
//! DESTDIR/PREFIX/share/bash-completion/completions/slabscope
//! DESTDIR/PREFIX/share/zsh/site-functions/_slabscope
//! DESTDIR/PREFIX/share/fish/vendor_completions.d/slabscope.fish
//! DESTDIR/PREFIX/share/doc/slabscope/JSON.md              `--json`'s fields
//! DESTDIR/PREFIX/share/doc/slabscope/slabscope.schema.json  and its JSON Schema
//! ```
//!
//! Why not cargo-c itself: `cargo install cargo-c` (0.10.24, the last that
//! builds with this rustc) compiles the whole of cargo, 27 minutes measured
//! on this project's 2-core machine (shared with other builds), which a fresh
//! CI machine would pay on every run to install a few files. This module does the same with `cargo build --release`
//! and file copies; the SONAME comes from `capi/build.rs`, so a plain
//! `cargo build` makes the same library `install` copies.
//!
//! Every C library is one entry of [`LIBRARIES`]: a new one (the malloc
//! library) is one more entry.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, Result, bail, ensure};

use crate::run::{self, header, note};

/// One C library of the workspace.
#[derive(Debug)]
pub struct CLibrary {
    /// The cargo package that builds it.
    pub package: &'static str,
    /// Its name: `lib<name>.so`, `lib<name>.a`, `-l<name>`, `<name>.pc`.
    pub name: &'static str,
    /// Its headers, relative to the workspace root; installed flat into
    /// `PREFIX/include`.
    pub headers: &'static [&'static str],
    /// The pkg-config `Description:`.
    pub description: &'static str,
}

/// The C libraries `install` installs.
pub const LIBRARIES: &[CLibrary] = &[CLibrary {
    package: "slabscope-capi",
    name: "slabscope",
    headers: &["include/slabscope.h"],
    description: "Userspace port of the OpenZFS SPL slab allocator (kmem_cache_*), with USDT probes",
}];

/// The native libraries Rust's std needs when a C program links a Rust
/// static library on Linux (`rustc --print native-static-libs`): the
/// `Libs.private` of every `.pc`, which `pkg-config --static` adds.
const NATIVE_STATIC_LIBS: &str = "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc";

/// The workspace version, which is every library's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Its major number: the SONAME's (`capi/build.rs` derives it the same way).
pub const VERSION_MAJOR: &str = env!("CARGO_PKG_VERSION_MAJOR");

/// Where and what to install.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// Installation prefix, an absolute path: what the installed files and
    /// `slabscope.pc` say they live in.
    #[arg(long, value_name = "DIR", default_value = "/usr/local")]
    pub prefix: PathBuf,
    /// Staging directory the files are written under (DESTDIR/PREFIX/...),
    /// as packagers use; `slabscope.pc` still names PREFIX.
    #[arg(long, value_name = "DIR")]
    pub destdir: Option<PathBuf>,
    /// Library directory, relative to the prefix (e.g. lib/x86_64-linux-gnu).
    #[arg(long, value_name = "DIR", default_value = "lib")]
    pub libdir: PathBuf,
    /// Cargo profile to build the libraries with.
    #[arg(long, value_name = "NAME", default_value = "release")]
    pub profile: String,
    /// Cargo target directory to build in (default: the workspace's).
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
    /// Install only the C libraries, not the inspector (`bin/slabscope`),
    /// its man page and completions (building the inspector needs the eBPF
    /// toolchain of `cargo xtask setup`).
    #[arg(long)]
    pub no_inspector: bool,
}

/// The installed layout, under DESTDIR.
#[derive(Debug)]
struct Dirs {
    /// PREFIX/lib as the `.pc` names it.
    libdir: PathBuf,
    /// PREFIX/include as the `.pc` names it.
    includedir: PathBuf,
    /// Where files are written: DESTDIR/PREFIX, DESTDIR/PREFIX/lib, ...
    stage_prefix: PathBuf,
    stage_lib: PathBuf,
    stage_include: PathBuf,
    stage_pkgconfig: PathBuf,
}

/// `dest` joined with the absolute path `path` (`/a` + `/usr/lib` =
/// `/a/usr/lib`), as `make DESTDIR=` does.
fn under(dest: Option<&Path>, path: &Path) -> PathBuf {
    match dest {
        None => path.to_path_buf(),
        Some(d) => d.join(
            path.components()
                .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
                .collect::<PathBuf>(),
        ),
    }
}

impl Dirs {
    fn new(args: &InstallArgs) -> Result<Self> {
        ensure!(
            args.prefix.is_absolute(),
            "--prefix {} is relative: give an absolute path (the installed slabscope.pc names it), \
             e.g. --prefix \"$HOME/.local\"",
            args.prefix.display()
        );
        ensure!(
            args.libdir.is_relative(),
            "--libdir {} is absolute: give it relative to --prefix (e.g. lib/x86_64-linux-gnu)",
            args.libdir.display()
        );
        let libdir = args.prefix.join(&args.libdir);
        let includedir = args.prefix.join("include");
        let dest = args.destdir.as_deref();
        Ok(Dirs {
            stage_prefix: under(dest, &args.prefix),
            stage_lib: under(dest, &libdir),
            stage_include: under(dest, &includedir),
            stage_pkgconfig: under(dest, &libdir.join("pkgconfig")),
            libdir,
            includedir,
        })
    }
}

/// The `.pc` file of `lib`.
pub fn pkg_config(lib: &CLibrary, prefix: &Path, libdir: &Path, includedir: &Path) -> String {
    // Paths under the prefix are written relative to ${prefix}, so a
    // relocated tree (pkg-config --define-prefix) still works.
    let rel = |p: &Path, var: &str| match p.strip_prefix(prefix) {
        Ok(r) if r.as_os_str().is_empty() => format!("${{{var}}}"),
        Ok(r) => format!("${{{var}}}/{}", r.display()),
        Err(_) => p.display().to_string(),
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "prefix={prefix}\n\
         exec_prefix=${{prefix}}\n\
         libdir={libdir}\n\
         includedir={includedir}\n\
         \n\
         Name: {name}\n\
         Description: {description}\n\
         Version: {VERSION}\n\
         Libs: -L${{libdir}} -l{name}\n\
         Libs.private: {NATIVE_STATIC_LIBS}\n\
         Cflags: -I${{includedir}}\n",
        prefix = prefix.display(),
        libdir = rel(libdir, "exec_prefix"),
        includedir = rel(includedir, "prefix"),
        name = lib.name,
        description = lib.description,
    );
    s
}

/// Copies `from` to `to` with `mode`, replacing what is there.
fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    // A symlink or a running library at `to` is replaced, not written through.
    if std::fs::symlink_metadata(to).is_ok() {
        std::fs::remove_file(to).with_context(|| format!("removing the old {}", to.display()))?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", to.display()))?;
    note(format!("installed {}", to.display()));
    Ok(())
}

/// Makes `link` a symlink to `target`, replacing what is there.
fn symlink(target: &str, link: &Path) -> Result<()> {
    if std::fs::symlink_metadata(link).is_ok() {
        std::fs::remove_file(link)
            .with_context(|| format!("removing the old {}", link.display()))?;
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("linking {} to {target}", link.display()))?;
    note(format!("installed {} -> {target}", link.display()));
    Ok(())
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "creating {}: choose a --prefix (or --destdir) you can write to, or run as root",
            dir.display()
        )
    })
}

/// The directory cargo writes `profile`'s artifacts to.
fn profile_dir(target_dir: &Path, profile: &str) -> PathBuf {
    target_dir.join(match profile {
        "dev" | "test" => "debug",
        "bench" => "release",
        other => other,
    })
}

/// Builds and installs every library of [`LIBRARIES`].
pub fn run(args: &InstallArgs) -> Result<()> {
    header("install: the C libraries, their headers and pkg-config files, the inspector");
    let dirs = Dirs::new(args)?;
    let target_dir = args.target_dir.clone().unwrap_or_else(run::target_dir);
    let mut build = run::cargo();
    build.args(["build", "--profile", &args.profile]);
    for lib in LIBRARIES {
        build.args(["-p", lib.package, "--lib"]);
    }
    if !args.no_inspector {
        build.args([
            "-p",
            "slabscope-inspector",
            "--bin",
            "slabscope",
            "--example",
            "manual",
        ]);
    }
    build.arg("--target-dir").arg(&target_dir);
    run::run(&mut build).context(if args.no_inspector {
        "building the C libraries"
    } else {
        "building the C libraries and the inspector (--no-inspector installs the libraries only)"
    })?;
    let built = profile_dir(&target_dir, &args.profile);

    for dir in [&dirs.stage_lib, &dirs.stage_include, &dirs.stage_pkgconfig] {
        create_dir(dir)?;
    }
    for lib in LIBRARIES {
        let so = format!("lib{}.so", lib.name);
        let so_major = format!("{so}.{VERSION_MAJOR}");
        let so_full = format!("{so}.{VERSION}");
        let from = built.join(&so);
        if !from.is_file() {
            bail!(
                "cargo built no {} for {}: is its crate-type cdylib?",
                from.display(),
                lib.package
            );
        }
        copy(&from, &dirs.stage_lib.join(&so_full), 0o755)?;
        symlink(&so_full, &dirs.stage_lib.join(&so_major))?;
        symlink(&so_major, &dirs.stage_lib.join(&so))?;
        let a = format!("lib{}.a", lib.name);
        copy(&built.join(&a), &dirs.stage_lib.join(&a), 0o644)?;
        let root = run::workspace_root();
        for h in lib.headers {
            let from = root.join(h);
            let name = from
                .file_name()
                .with_context(|| format!("header {h} has no file name"))?;
            copy(&from, &dirs.stage_include.join(name), 0o644)?;
        }
        let pc = dirs.stage_pkgconfig.join(format!("{}.pc", lib.name));
        std::fs::write(
            &pc,
            pkg_config(lib, &args.prefix, &dirs.libdir, &dirs.includedir),
        )
        .with_context(|| format!("writing {}", pc.display()))?;
        note(format!("installed {}", pc.display()));
    }
    if !args.no_inspector {
        let bin = dirs.stage_prefix.join("bin");
        create_dir(&bin)?;
        copy(&built.join("slabscope"), &bin.join("slabscope"), 0o755)?;
        // The man page and completions, from the clap definition.
        let manual = built.join("examples/manual");
        let out = std::process::Command::new(&manual)
            .arg(&dirs.stage_prefix)
            .output()
            .with_context(|| format!("running {}", manual.display()))?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}",
                manual.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let written = String::from_utf8_lossy(&out.stdout);
        for path in written.lines() {
            note(format!("installed {path}"));
        }
        install_docs(&run::workspace_root(), &dirs.stage_prefix)?;
    }
    Ok(())
}

/// The inspector's documents a user of the installed binary needs, installed
/// under `share/doc/slabscope/`.
pub const INSPECTOR_DOCS: [&str; 2] = ["docs/JSON.md", "docs/slabscope.schema.json"];

/// Copies [`INSPECTOR_DOCS`] from the workspace `root` to
/// `stage_prefix/share/doc/slabscope/`.
fn install_docs(root: &Path, stage_prefix: &Path) -> Result<()> {
    let dir = stage_prefix.join("share/doc/slabscope");
    create_dir(&dir)?;
    for doc in INSPECTOR_DOCS {
        let from = root.join(doc);
        let name = from
            .file_name()
            .with_context(|| format!("document {doc} has no file name"))?;
        copy(&from, &dir.join(name), 0o644)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_docs_are_installed_under_share_doc() {
        let stage =
            std::env::temp_dir().join(format!("slabscope-install-docs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&stage);
        let root = run::workspace_root();
        install_docs(&root, &stage).expect("installing the docs");
        for doc in INSPECTOR_DOCS {
            let name = Path::new(doc).file_name().unwrap();
            let installed = std::fs::read(stage.join("share/doc/slabscope").join(name))
                .unwrap_or_else(|e| panic!("{doc} was not installed: {e}"));
            assert_eq!(installed, std::fs::read(root.join(doc)).unwrap(), "{doc}");
        }
        std::fs::remove_dir_all(&stage).unwrap();
    }

    #[test]
    fn destdir_is_prepended_to_the_absolute_prefix() {
        assert_eq!(
            under(Some(Path::new("/stage")), Path::new("/usr/local/lib")),
            PathBuf::from("/stage/usr/local/lib")
        );
        assert_eq!(
            under(None, Path::new("/usr/local/lib")),
            PathBuf::from("/usr/local/lib")
        );
    }

    #[test]
    fn pc_file_names_paths_relative_to_the_prefix() {
        let lib = &LIBRARIES[0];
        let pc = pkg_config(
            lib,
            Path::new("/opt/s"),
            Path::new("/opt/s/lib/x86_64-linux-gnu"),
            Path::new("/opt/s/include"),
        );
        assert!(pc.starts_with("prefix=/opt/s\n"), "{pc}");
        assert!(
            pc.contains("\nlibdir=${exec_prefix}/lib/x86_64-linux-gnu\n"),
            "{pc}"
        );
        assert!(pc.contains("\nincludedir=${prefix}/include\n"), "{pc}");
        assert!(pc.contains("\nLibs: -L${libdir} -lslabscope\n"), "{pc}");
        assert!(pc.contains(&format!("\nVersion: {VERSION}\n")), "{pc}");
    }

    #[test]
    fn relative_prefix_and_absolute_libdir_are_refused_with_the_fix() {
        let args = |prefix: &str, libdir: &str| InstallArgs {
            prefix: prefix.into(),
            destdir: None,
            libdir: libdir.into(),
            profile: "release".into(),
            target_dir: None,
            no_inspector: true,
        };
        let e = Dirs::new(&args("local", "lib")).unwrap_err().to_string();
        assert!(e.contains("absolute path"), "{e}");
        let e = Dirs::new(&args("/usr", "/usr/lib"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("relative to --prefix"), "{e}");
    }
}
