//! Every C program in the READMEs (each ```` ```c ```` block of `README.md`,
//! `allocator/README.md` and `capi/README.md`), exactly as printed, compiles
//! with `-Wall -Werror` against `include/slabscope.h` and the freshly built
//! `libslabscope.so`, and runs to exit status 0: the snippets a C user
//! copies stay right.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

const READMES: [&str; 3] = ["../README.md", "../allocator/README.md", "README.md"];

/// The bodies of the ```` ```c ```` blocks of `text`.
fn c_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("\n```c\n") {
        let body = &rest[i + 6..];
        let close = body.find("\n```").expect("every ```c block is closed");
        out.push(body[..=close].to_string());
        rest = &body[close + 4..];
    }
    out
}

#[test]
fn finds_blocks() {
    let md = "intro\n```c\nint a;\n```\ntext\n```sh\nls\n```\n```c\nint b;\n```\n";
    assert_eq!(c_blocks(md), ["int a;\n", "int b;\n"]);
}

#[test]
fn every_readme_c_program_compiles_and_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let include = root.join("../include");
    let lib = support::lib_dir();
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut built = 0;
    for readme in READMES {
        let path = root.join(readme);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        for (i, program) in c_blocks(&text).iter().enumerate() {
            let what = format!("{readme} C block {}", i + 1);
            let stem = format!(
                "readme_c_{}_{i}",
                readme.replace(['.', '/'], "_").trim_matches('_')
            );
            let src = tmp.join(format!("{stem}.c"));
            let exe = tmp.join(stem);
            std::fs::write(&src, program).expect("write the C program");
            let out = Command::new(&cc)
                .args(["-Wall", "-Werror", "-o"])
                .arg(&exe)
                .arg(&src)
                .arg("-I")
                .arg(&include)
                .arg("-L")
                .arg(&lib)
                .arg("-lslabscope")
                .arg(format!("-Wl,-rpath,{}", lib.display()))
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run {cc:?} ({e}): install a C compiler or set CC")
                });
            assert!(
                out.status.success(),
                "{what} does not compile:\n{program}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let run = Command::new(&exe)
                .env_remove("LD_LIBRARY_PATH")
                .env("SLABSCOPE_STATS_INTERVAL_MS", "0")
                .output()
                .expect("run the README program");
            assert!(
                run.status.success(),
                "{what} exited with {}:\n{}",
                run.status,
                String::from_utf8_lossy(&run.stderr)
            );
            built += 1;
        }
    }
    assert!(
        built >= 2,
        "the READMEs should show at least two C programs, found {built}"
    );
}
