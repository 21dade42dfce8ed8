//! Running commands the way every xtask step does: a header per step, each
//! command echoed before it runs, its output streamed (long steps such as the
//! LLVM install or the bpf-linker build show their own progress), and a
//! failure that names the command.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// Prints a step header.
pub fn header(title: &str) {
    println!("\n==> {title}");
    flush();
}

/// Prints one indented line under the current header.
pub fn note(msg: impl AsRef<str>) {
    for line in msg.as_ref().lines() {
        println!("    {line}");
    }
    flush();
}

fn flush() {
    // Output order matters when our lines interleave with a child's: flush
    // before every child runs. A failed flush (closed pipe) is not worth
    // stopping for; the child's own writes will fail loudly.
    let _ = std::io::stdout().flush();
}

/// A `cargo` command of the toolchain running xtask (`$CARGO`, set by
/// `cargo run`), so nested builds use the same cargo.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The cargo target directory (`$CARGO_TARGET_DIR` or `<root>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Quotes one word for display the way a shell would need it.
fn quote(word: &OsStr) -> String {
    let s = word.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command as a user would type it: explicitly set variables first.
pub fn display(cmd: &Command) -> String {
    let mut words = Vec::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            words.push(format!("{}={}", k.to_string_lossy(), quote(v)));
        }
    }
    let program = cmd.get_program();
    // `$CARGO` is an absolute path into the toolchain; show it as `cargo`.
    let shown = if Some(program) == std::env::var_os("CARGO").as_deref() {
        "cargo".to_string()
    } else {
        quote(program)
    };
    words.push(shown);
    words.extend(cmd.get_args().map(quote));
    words.join(" ")
}

/// Runs `cmd` with inherited output after echoing it; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    println!("$ {shown}");
    flush();
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` quietly; its stdout when it exits 0, `None` when it cannot be
/// started or fails.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `program` is an executable on `PATH`.
pub fn on_path(program: &str) -> bool {
    find_on_path(program).is_some()
}

/// The first executable named `program` on `PATH`.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_what_needs_it() {
        let mut cmd = Command::new("cargo");
        cmd.env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .args(["install", "bpf-linker", "--features", "llvm-22"])
            .arg("it's here")
            .arg("");
        assert_eq!(
            display(&cmd),
            "LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --features llvm-22 \
             'it'\\''s here' ''"
        );
    }

    #[test]
    fn finds_sh_on_path_but_not_a_made_up_program() {
        assert!(on_path("sh"), "every Unix has sh on PATH");
        assert!(!on_path("slabscope-no-such-program-xyz"));
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml"))
            .expect("read the root Cargo.toml");
        assert!(manifest.contains("[workspace]"), "{manifest}");
    }
}
