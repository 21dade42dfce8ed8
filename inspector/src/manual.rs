//! The man page and the shell completions of `slabscope` (bash, zsh, fish),
//! generated from the clap definition ([`Cli`]), so they say what `--help`
//! says. `cargo xtask install` writes them under the prefix through the
//! `manual` example (`cargo run -p slabscope-inspector --example manual --
//! DIR`), at the paths of [`files`].

use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// Where the man page goes, relative to the prefix.
pub const MAN_PAGE: &str = "share/man/man1/slabscope.1";

/// Each shell and where its completion goes, relative to the prefix (the
/// directories bash-completion, zsh and fish search under `/usr/local` and
/// `/usr`).
pub const COMPLETIONS: [(Shell, &str); 3] = [
    (Shell::Bash, "share/bash-completion/completions/slabscope"),
    (Shell::Zsh, "share/zsh/site-functions/_slabscope"),
    (
        Shell::Fish,
        "share/fish/vendor_completions.d/slabscope.fish",
    ),
];

/// `slabscope(1)` in roff.
pub fn man_page() -> Vec<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .expect("rendering to a Vec cannot fail");
    out
}

/// The completion script for `shell`.
pub fn completion(shell: Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "slabscope", &mut out);
    out
}

/// Every generated file: (path relative to the prefix, contents).
pub fn files() -> Vec<(&'static str, Vec<u8>)> {
    let mut files = vec![(MAN_PAGE, man_page())];
    for (shell, path) in COMPLETIONS {
        files.push((path, completion(shell)));
    }
    files
}

/// Writes [`files`] under `prefix` (creating the directories); returns the
/// paths written.
pub fn write_under(prefix: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (rel, contents) in files() {
        let path = prefix.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, contents)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Every long option of the command line.
    fn long_options() -> Vec<String> {
        let cmd = Cli::command();
        let longs: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect();
        assert!(longs.len() >= 8, "{longs:?}");
        longs
    }

    #[test]
    fn man_page_has_every_option_the_examples_and_the_exit_status() {
        let man = String::from_utf8(man_page()).expect("roff is UTF-8");
        assert!(man.contains(".TH slabscope 1"), "{man}");
        for long in long_options() {
            // roff escapes the dashes: \-\-pid
            let escaped = format!("\\-\\-{}", long.replace('-', "\\-"));
            assert!(man.contains(&escaped), "man page lacks --{long}");
        }
        assert!(man.contains("77 when not permitted"), "exit status missing");
        assert!(man.contains("examples/demo"), "examples missing");
    }

    #[test]
    fn completions_offer_every_option() {
        for (shell, _) in COMPLETIONS {
            let script = String::from_utf8(completion(shell)).expect("UTF-8");
            for long in long_options() {
                assert!(script.contains(&long), "{shell} completion lacks --{long}");
            }
        }
    }

    /// Each completion script parses in its shell; a shell that is not
    /// installed is said, not passed silently (bash is always there).
    #[test]
    fn completions_parse_in_their_shells() {
        let dir = std::env::temp_dir().join(format!("slabscope-manual-{}", std::process::id()));
        let written = write_under(&dir).expect("write the files");
        assert_eq!(written.len(), 1 + COMPLETIONS.len());
        for ((shell, rel), check) in COMPLETIONS.iter().zip(["bash", "zsh", "fish"]) {
            let path = dir.join(rel);
            match Command::new(check).arg("-n").arg(&path).output() {
                Ok(out) => assert!(
                    out.status.success(),
                    "{shell} completion does not parse:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) if shell == &Shell::Bash => panic!("bash must be installed: {e}"),
                Err(e) => eprintln!("*** SKIPPED: {check} -n on the {shell} completion: {e}"),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
