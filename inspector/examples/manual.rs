//! Writes the `slabscope` man page and shell completions under a prefix:
//! `cargo run -p slabscope-inspector --example manual -- DIR` writes
//! `DIR/share/man/man1/slabscope.1` and the bash, zsh and fish completions
//! (see `slabscope_inspector::manual`). `cargo xtask install` runs it.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: manual DIR (the prefix to write share/man and the completions under)");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    match slabscope_inspector::manual::write_under(&dir) {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("manual: writing under {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
