//! `cargo xtask install` end to end, as the README's "From C" section has
//! it: the install command, exactly as printed (plus a scratch target
//! directory and the dev profile, to reuse the test build), with `HOME` a
//! scratch directory; then the README's C program and its build line,
//! exactly as printed, which must make a `./zio` that runs with no
//! `LD_LIBRARY_PATH`. A second test installs with `--destdir` and checks
//! the layout and what `slabscope.pc` names.

use std::path::{Path, PathBuf};
use std::process::Command;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The fenced blocks of `lang` in `text` after the line `heading`, up to
/// the next heading of the same or a higher level.
fn blocks_after(text: &str, heading: &str, lang: &str) -> Vec<String> {
    let start = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no `{heading}` section"));
    let level = heading.split(' ').next().expect("heading has #s");
    let section = &text[start + heading.len() + 2..];
    let end = section
        .lines()
        .scan(0usize, |pos, l| {
            let at = *pos;
            *pos += l.len() + 1;
            Some((at, l))
        })
        .find(|(_, l)| {
            l.starts_with('#') && l.split(' ').next().is_some_and(|h| h.len() <= level.len())
        })
        .map_or(section.len(), |(at, _)| at);
    let mut out = Vec::new();
    let mut rest = &section[..end];
    let fence = format!("```{lang}\n");
    while let Some(i) = rest.find(&fence) {
        let body = &rest[i + fence.len()..];
        let close = body.find("\n```").expect("closed fence");
        out.push(body[..=close].to_string());
        rest = &body[close + 4..];
    }
    out
}

/// The target directory this test's build lives in.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target directory")
        .to_path_buf()
}

/// A fresh scratch directory.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch directory");
    dir
}

/// `cargo xtask install` with the test's extra options: the dev profile in
/// the target directory the inspector's collector tests build
/// `libslabscope.so` in, so the suite builds the library once; and the C
/// libraries only (the inspector's man page and completions are tested in
/// its `manual` module; building it again here would cost minutes).
fn xtask_install() -> String {
    format!(
        "'{}' install --no-inspector --profile dev --target-dir '{}'",
        env!("CARGO_BIN_EXE_xtask"),
        target_dir().join("collector-workload").display()
    )
}

fn sh(script: &str, cwd: &Path, home: &Path) -> String {
    let out = Command::new("sh")
        .args(["-e", "-c", script])
        .current_dir(cwd)
        .env("HOME", home)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("PKG_CONFIG_PATH")
        .output()
        .expect("run sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`{script}` failed ({}):\n{text}",
        out.status
    );
    text
}

#[test]
fn readme_install_then_build_and_run_a_c_program_with_pkg_config() {
    let text = readme();
    let shells = blocks_after(&text, "### From C", "sh");
    let install = shells
        .iter()
        .find(|b| b.starts_with("cargo xtask install"))
        .expect("the From C section shows `cargo xtask install`");
    let build = shells
        .iter()
        .find(|b| b.contains("pkg-config --cflags --libs slabscope"))
        .expect("the From C section builds with pkg-config");
    let programs = blocks_after(&text, "### From C", "c");
    assert_eq!(programs.len(), 1, "one C program in From C: {programs:?}");
    let out_of = |f: &str| {
        assert!(
            build.contains(&format!(" {f}")),
            "the build line names {f}: {build}"
        );
    };
    out_of("zio.c");

    let home = scratch("install-home");
    sh(
        &install.replacen("cargo xtask install", &xtask_install(), 1),
        &home,
        &home,
    );
    let lib = home.join(".local/lib");
    let so = lib.join(format!("libslabscope.so.{VERSION}"));
    assert!(so.is_file(), "{} not installed", so.display());
    for (link, to) in [
        ("libslabscope.so.0", format!("libslabscope.so.{VERSION}")),
        ("libslabscope.so", "libslabscope.so.0".to_string()),
    ] {
        let target = std::fs::read_link(lib.join(link))
            .unwrap_or_else(|e| panic!("{link} is not a symlink: {e}"));
        assert_eq!(target, PathBuf::from(&to), "{link}");
    }
    let soname = Command::new("readelf")
        .arg("-d")
        .arg(&so)
        .output()
        .expect("run readelf");
    let dynamic = String::from_utf8_lossy(&soname.stdout);
    assert!(
        dynamic.contains("Library soname: [libslabscope.so.0]"),
        "installed library's SONAME:\n{dynamic}"
    );

    std::fs::write(home.join("zio.c"), &programs[0]).expect("write zio.c");
    sh(build, &home, &home);
    let zio = home.join("zio");
    let needed = Command::new("readelf")
        .arg("-d")
        .arg(&zio)
        .output()
        .expect("run readelf");
    let needed = String::from_utf8_lossy(&needed.stdout);
    assert!(
        needed.contains("Shared library: [libslabscope.so.0]"),
        "zio should need libslabscope.so.0:\n{needed}"
    );
    // And it runs from elsewhere, with nothing in the environment.
    let status = Command::new(&zio)
        .env_remove("LD_LIBRARY_PATH")
        .env("SLABSCOPE_STATS_INTERVAL_MS", "0")
        .current_dir("/")
        .status()
        .expect("run zio");
    assert!(status.success(), "zio exited with {status}");
}

#[test]
fn destdir_stages_under_destdir_and_the_pc_names_the_prefix() {
    let stage = scratch("install-stage");
    sh(
        &format!(
            "{} --prefix /opt/slabscope-test --destdir '{}'",
            xtask_install(),
            stage.display()
        ),
        &stage,
        &stage,
    );
    let root = stage.join("opt/slabscope-test");
    for f in [
        format!("lib/libslabscope.so.{VERSION}"),
        "lib/libslabscope.so.0".into(),
        "lib/libslabscope.so".into(),
        "lib/libslabscope.a".into(),
        "lib/pkgconfig/slabscope.pc".into(),
        "include/slabscope.h".into(),
    ] {
        assert!(
            std::fs::symlink_metadata(root.join(&f)).is_ok(),
            "{f} not staged under {}",
            root.display()
        );
    }
    assert!(
        !Path::new("/opt/slabscope-test").exists(),
        "--destdir wrote outside the staging directory"
    );
    let pc = std::fs::read_to_string(root.join("lib/pkgconfig/slabscope.pc")).expect("read .pc");
    assert!(pc.starts_with("prefix=/opt/slabscope-test\n"), "{pc}");
    // pkg-config reads it and resolves the prefix's paths.
    let out = Command::new("pkg-config")
        .args(["--cflags", "--libs", "slabscope"])
        .env("PKG_CONFIG_PATH", root.join("lib/pkgconfig"))
        .output()
        .expect("run pkg-config");
    let flags = String::from_utf8_lossy(&out.stdout);
    assert!(
        flags.contains("-I/opt/slabscope-test/include")
            && flags.contains("-L/opt/slabscope-test/lib")
            && flags.contains("-lslabscope"),
        "pkg-config --cflags --libs: {flags}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
