//! Project chores. Only `bench` is wired here on this branch; the xtask
//! branch owns this file and the rest of the CLI.

mod bench;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "slabscope project chores")]
enum Cmd {
    /// Benchmarks against the peer allocators; writes BENCHMARKS.md.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cmd::parse() {
        Cmd::Bench(args) => bench::run(args),
    }
}
