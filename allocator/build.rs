//! Names the long cfg predicates once (`cfg_aliases`).

fn main() {
    cfg_aliases::cfg_aliases! {
        // The restartable sequences' inline assembly: x86-64 Linux, and
        // neither Miri (no inline assembly) nor loom (its own scheduler).
        rseq_native: { all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom)) },
    }
}
